"""schemathesis over the OpenAPI schema: no 5xx, and every answer as the schema says.

It goes through the Django WSGI app in-process (no server), authenticated with
HTTP Basic, with a bounded number of examples per operation. It needs the
``schema`` dependency group (``tox -e schema``); elsewhere it is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")
schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
checks = pytest.importorskip("schemathesis.checks")

from tests.api.conftest import basic, finish, make_task, make_user  # noqa: E402
from tests.api.test_schema import OPERATIONS  # noqa: E402

#: Examples per operation: bounded so the run takes well under a minute.
EXAMPLES = 25


@pytest.fixture
def api_schema(transactional_db: Any, file_root: Path, celery_app: Any) -> Any:
    from django.core.wsgi import get_wsgi_application

    owner = make_user("schemathesis")
    # Some tasks of every status, so generated ids sometimes hit real rows.
    for status in ("completed", "failed", "cancelled"):
        finish(make_task(owner), status)
    make_task(owner)
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    # The stream answers while a task runs: not a request-response operation to fuzz.
    return schema.exclude(path_regex=r"/stream/$")


# schemathesis's lazy pytest integration does not run under pytest 9, so each
# operation gets its own Hypothesis test, built from the operation's strategy.
def test_the_api_answers_as_its_schema_says(api_schema: Any) -> None:
    from django.contrib.auth import get_user_model

    auth = {"Authorization": basic(get_user_model().objects.get(username="schemathesis"))}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS) - 1  # all but the stream
    for operation in operations:
        # A well-formed path to a file that does not exist is valid for the
        # schema and still a 400; every other check applies everywhere.
        excluded = [] if operation.method == "get" else [checks.positive_data_acceptance]
        fuzz(operation, auth, excluded)


def fuzz(operation: Any, headers: dict[str, str], excluded: list[Any]) -> None:
    """Run EXAMPLES generated requests against one operation and check every answer."""

    @hypothesis.given(case=operation.as_strategy())  # type: ignore[untyped-decorator]
    @hypothesis.settings(  # type: ignore[untyped-decorator]
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()
