"""The lifecycle tests again on PostgreSQL, where transitions take the one-statement path."""

from __future__ import annotations

import pytest

from tests.test_lifecycle import (  # noqa: F401 (collected here a second time)
    TestCancel,
    TestCreate,
    TestEnd,
    TestProgress,
    TestQuerysets,
    TestRerun,
    TestRetrying,
    TestSignals,
    TestStarted,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_recording_commits_asynchronously_unless_asked() -> None:
    from django.db import connection
    from django.test import override_settings

    from django_taskqueue.lifecycle import _recording

    # Inside the test's transaction the caller owns the commit: nothing is changed.
    with _recording(inline=True) as prefix:
        assert prefix == ""
    with (
        override_settings(DJANGO_TASKQUEUE={"SYNCHRONOUS_COMMIT": True}),
        _recording(inline=True) as prefix,
    ):
        assert prefix == ""
    assert connection.vendor == "postgresql"


@pytest.mark.django_db(transaction=True)
def test_owned_transaction_commits_asynchronously() -> None:
    from django.db import connection

    from django_taskqueue.lifecycle import _recording

    with _recording() as prefix, connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
        assert prefix == ""
    with _recording(inline=True) as prefix:
        assert prefix.startswith("SET LOCAL synchronous_commit")
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
