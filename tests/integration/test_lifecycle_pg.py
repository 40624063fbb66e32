"""What only PostgreSQL has: asynchronous commits of the lifecycle's own transactions.

The lifecycle contract itself (tests/lifecycle/, tests/test_querysets.py,
tests/test_status.py and the re-run tests of tests/test_actions.py) is marked ``backends``
and runs here on PostgreSQL as well as on SQLite.
"""

from __future__ import annotations

import pytest

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def test_a_callers_transaction_keeps_its_commit_setting() -> None:
    from django_taskqueue.lifecycle.records import recording

    # Inside the test's transaction the caller owns the commit: nothing is changed.
    with recording():
        assert _synchronous_commit() == "on"
    lifecycle.create_task_log("caller-1", task_name="t")
    assert _synchronous_commit() == "on"


@pytest.mark.django_db(transaction=True)
def test_owned_transactions_commit_asynchronously_unless_asked() -> None:
    from django.test import override_settings

    from django_taskqueue.lifecycle.records import recording

    with recording():
        assert _synchronous_commit() == "off"
    # SET LOCAL: gone with the transaction, the session (and the host's next
    # transaction) is untouched, as a pooler in transaction mode needs.
    assert _synchronous_commit() == "on"
    with override_settings(DJANGO_TASKQUEUE={"SYNCHRONOUS_COMMIT": True}), recording():
        assert _synchronous_commit() == "on"


@pytest.mark.django_db(transaction=True)
def test_the_setting_is_sent_on_djangos_cursor_with_the_writes() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        log = lifecycle.create_task_log("seen-1", task_name="t")
        lifecycle.mark_started(log.celery_task_id, attempt=0, worker="w")
    statements = [q["sql"].split()[0].upper() for q in queries]
    # Two transactions of the package's own, each: the setting, the write, its
    # event (the start, keyed by the Celery id, reads the row's pk for its event).
    assert statements == [
        *("BEGIN", "SET", "INSERT", "INSERT", "COMMIT"),
        *("BEGIN", "SET", "UPDATE", "SELECT", "INSERT", "COMMIT"),
    ]


@pytest.mark.django_db(transaction=True)
def test_nothing_is_prepared_behind_djangos_back() -> None:
    from django.db import connection

    connection.close()
    log = lifecycle.create_task_log("prep-1", task_name="t", args=(1,))
    lifecycle.mark_started(log.celery_task_id, attempt=0, worker="w")
    lifecycle.mark_completed(log.celery_task_id, pk=log.pk, result=1)
    with connection.cursor() as cursor:
        # Django's psycopg connection prepares nothing (prepare_threshold=None):
        # neither does the package, so PgBouncer in transaction mode is safe.
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0
    assert TaskLog.objects.get(pk=log.pk).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_callers_transaction_stays_atomic() -> None:
    from django.db import transaction

    class Abort(Exception):
        pass

    # Recording first in the block, then after a query of the caller's: both
    # roll back with the caller's transaction.
    def record_first() -> None:
        with transaction.atomic():
            lifecycle.create_task_log("atomic-1", task_name="t")
            raise Abort

    def record_after_a_query() -> None:
        with transaction.atomic():
            TaskLog.objects.exists()
            lifecycle.create_task_log("atomic-2", task_name="t")
            lifecycle.mark_started("atomic-2", attempt=0, worker="w")
            raise Abort

    with pytest.raises(Abort):
        record_first()
    with pytest.raises(Abort):
        record_after_a_query()
    assert not TaskLog.objects.filter(celery_task_id__startswith="atomic-").exists()


@pytest.mark.django_db(transaction=True)
def test_database_errors_are_djangos_and_leave_the_connection_usable() -> None:
    from django.db import DataError, IntegrityError

    lifecycle.create_task_log("dup-1", task_name="t")
    with pytest.raises(IntegrityError):
        lifecycle.create_task_log("dup-1", task_name="t")
    with pytest.raises(DataError, match="NUL"):
        lifecycle.create_task_log("nul-1", task_name="bad\x00name")
    # Nothing half-written was left.
    lifecycle.create_task_log("dup-2", task_name="t")
    assert sorted(TaskLog.objects.values_list("celery_task_id", flat=True)) == ["dup-1", "dup-2"]
