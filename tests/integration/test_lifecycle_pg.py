"""The lifecycle tests again on PostgreSQL, where transitions take the one-statement path."""

from __future__ import annotations

import sys

import pytest

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from tests.test_lifecycle import (  # noqa: F401 (collected here a second time)
    TestCancel,
    TestCreate,
    TestEnd,
    TestPresumedFailures,
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


def _prepared_recording(column: str = "statement") -> list[str]:
    """A column (``statement`` or ``name``) of the session's prepared recording statements."""
    from django.db import connection

    assert column in {"statement", "name"}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM pg_prepared_statements WHERE statement LIKE %s ORDER BY name",
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
    statements = _prepared_recording()
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
        assert _prepared_recording() == []
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
    assert _prepared_recording() == []


@pytest.mark.django_db(transaction=True)
def test_recording_statements_run_through_libpq_under_names_of_their_own() -> None:
    from django.db import connection

    connection.close()
    log = lifecycle.create_task_log("pq-1", task_name="t", args=(1,), kwargs={"k": "v"})
    started = lifecycle.mark_started("pq-1", attempt=0, worker="w@host")
    ended = lifecycle.mark_completed("pq-1", pk=log.pk, result={"n": 1.5, "ok": True})
    # Prepared by this package, not by psycopg's cursor (whose names are _pg3_*).
    names = _prepared_recording("name")
    assert len(names) == 3, names
    assert all(name.startswith("_taskqueue_") for name in names), names
    assert (started.applied, started.pk, started.parent_known) == (True, log.pk, True)
    assert (ended.applied, ended.status) == (True, "completed")
    row = TaskLog.objects.get(pk=log.pk)
    assert (row.worker, row.result, row.progress, row.kwargs) == (
        "w@host",
        {"n": 1.5, "ok": True},
        100,
        {"k": "v"},
    )
    assert row.started_at is not None
    assert row.completed_at is not None
    assert row.started_at <= row.completed_at
    assert list(row.events.order_by("id").values_list("event_type", flat=True)) == [
        "created",
        "started",
        "completed",
    ]


@pytest.mark.django_db(transaction=True)
def test_statements_dropped_from_the_session_are_prepared_again() -> None:
    from django.db import connection

    connection.close()
    lifecycle.create_task_log("drop-1", task_name="t")
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler or DISCARD ALL does
    # The next write finds its statement gone, runs through psycopg's cursor
    # instead and succeeds; the one after prepares it again.
    lifecycle.create_task_log("drop-2", task_name="t")
    lifecycle.create_task_log("drop-3", task_name="t")
    assert TaskLog.objects.filter(celery_task_id__startswith="drop-").count() == 3
    assert any(name.startswith("_taskqueue_") for name in _prepared_recording("name"))


@pytest.mark.django_db(transaction=True)
def test_a_callers_transaction_stays_atomic() -> None:
    from django.db import connection, transaction

    from django_taskqueue import _fastsql

    class Abort(Exception):
        pass

    # A statement first in the block (psycopg has not sent its BEGIN yet),
    # then recording after a query of the caller's (the transaction is open):
    # both roll back with the caller's transaction.
    def insert_first() -> None:
        with transaction.atomic():
            log = TaskLog(celery_task_id="atomic-1", task_name="t")
            sql, params = _fastsql.insert_with_event(connection, log, ("created", "", None))
            _fastsql.execute(connection, sql, params, async_commit=False)
            raise Abort

    def record_after_a_query() -> None:
        with transaction.atomic():
            TaskLog.objects.exists()
            lifecycle.create_task_log("atomic-2", task_name="t")
            lifecycle.mark_started("atomic-2", attempt=0, worker="w")
            raise Abort

    with pytest.raises(Abort):
        insert_first()
    with pytest.raises(Abort):
        record_after_a_query()
    assert not TaskLog.objects.filter(celery_task_id__startswith="atomic-").exists()


@pytest.mark.django_db(transaction=True)
def test_database_errors_on_the_libpq_path_are_djangos() -> None:
    from django.db import DataError, IntegrityError, connection

    from django_taskqueue import _fastsql

    connection.close()
    lifecycle.create_task_log("dup-1", task_name="t")
    sql, params = _fastsql.insert_with_event(
        connection, TaskLog(celery_task_id="dup-1", task_name="t"), ("created", "", None)
    )
    with pytest.raises(IntegrityError):
        _fastsql.execute(connection, sql, params, async_commit=True)
    # A NUL character is refused with psycopg's own message, before anything is sent.
    with pytest.raises(DataError, match="NUL"):
        lifecycle.create_task_log("nul-1", task_name="bad\x00name")
    # The connection is still usable, and nothing half-written was left.
    lifecycle.create_task_log("dup-2", task_name="t")
    assert sorted(TaskLog.objects.values_list("celery_task_id", flat=True)) == ["dup-1", "dup-2"]


@pytest.mark.django_db(transaction=True)
def test_green_thread_pools_keep_psycopgs_cooperative_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from django.db import connection

    # What gevent.monkey.patch_all() leaves behind, as Celery's gevent pool runs it.
    monkey = types.SimpleNamespace(is_module_patched=lambda name: name == "socket")
    monkeypatch.setitem(sys.modules, "gevent.monkey", monkey)
    connection.close()
    lifecycle.create_task_log("green-1", task_name="t")
    lifecycle.mark_started("green-1", attempt=0, worker="w")
    names = _prepared_recording("name")
    # Prepared by psycopg's cursor (which waits through the patched select), not by libpq's call.
    assert len(names) == 2, names
    assert not any(name.startswith("_taskqueue_") for name in names), names
    assert TaskLog.objects.get(celery_task_id="green-1").status == "processing"
