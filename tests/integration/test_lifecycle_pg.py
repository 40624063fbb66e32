"""The lifecycle tests again on PostgreSQL, where transitions take the one-statement path."""

from __future__ import annotations

import pytest

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
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
    with _recording(inline=True) as async_commit:
        assert async_commit is False
    with (
        override_settings(DJANGO_TASKQUEUE={"SYNCHRONOUS_COMMIT": True}),
        _recording(inline=True) as async_commit,
    ):
        assert async_commit is False
    assert connection.vendor == "postgresql"


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_owned_transaction_commits_asynchronously() -> None:
    from django_taskqueue.lifecycle import _recording

    with _recording() as async_commit:
        assert _synchronous_commit() == "off"
        assert async_commit is False
    with _recording(inline=True) as async_commit:
        assert async_commit is True
    assert _synchronous_commit() == "on"


@pytest.mark.django_db(transaction=True)
def test_the_statement_turns_off_the_wait_for_its_own_transaction_only() -> None:
    from django.db import connection, transaction

    from django_taskqueue import _fastsql
    from django_taskqueue.models import TaskLog

    log = TaskLog(celery_task_id="sc-1", task_name="t")
    with transaction.atomic():
        sql, params = _fastsql.insert_with_event(connection, log, ("created", "", None))
        _fastsql.execute(connection, sql, params, async_commit=True)
        assert _synchronous_commit() == "off"
    # set_config(..., is_local => true): gone with the transaction, the
    # session (and the host's next transaction) is untouched.
    assert _synchronous_commit() == "on"
    lifecycle.create_task_log("sc-2", task_name="t")
    assert _synchronous_commit() == "on"
    assert TaskLog.objects.filter(celery_task_id__in=["sc-1", "sc-2"]).count() == 2


def _prepared_recording_statements() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            ["WITH _ AS (%django_taskqueue_tasklog%"],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_recording_statements_are_prepared_once_per_connection() -> None:
    from django.db import connection
    from django.test import override_settings

    connection.close()
    for n in range(4):
        log = lifecycle.create_task_log(f"prep-{n}", task_name="t", args=(n,))
        lifecycle.mark_started(log.celery_task_id, attempt=0, worker="w")
        lifecycle.mark_completed(log.celery_task_id, pk=log.pk, result=n)
    statements = _prepared_recording_statements()
    # One each for the insert, the start and the end, reused by every task.
    assert len(statements) == 3, statements
    assert all("$1" in sql for sql in statements)
    assert (
        TaskLog.objects.filter(status="completed", celery_task_id__startswith="prep-").count() == 4
    )

    connection.close()
    with override_settings(DJANGO_TASKQUEUE={"PREPARED_STATEMENTS": False}):
        log = lifecycle.create_task_log("prep-off", task_name="t")
        lifecycle.mark_started(log.celery_task_id, attempt=0, worker="w")
        assert _prepared_recording_statements() == []
    assert TaskLog.objects.get(celery_task_id="prep-off").status == "processing"


@pytest.mark.django_db(transaction=True)
def test_logged_queries_go_through_djangos_cursor() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    connection.close()
    with CaptureQueriesContext(connection) as queries:
        log = lifecycle.create_task_log("logged-1", task_name="t")
        lifecycle.mark_started(log.celery_task_id, attempt=0, worker="w")
    # Seen by DEBUG logging, assertNumQueries and instrumentation: one
    # statement per transition, nothing prepared behind their back.
    assert len(queries) == 2
    assert queries[0]["sql"].startswith("WITH t AS (INSERT")
    assert queries[1]["sql"].startswith("WITH u AS (UPDATE")
    assert _prepared_recording_statements() == []
