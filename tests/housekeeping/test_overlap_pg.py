"""Housekeeping jobs that run at the same time, on PostgreSQL.

Run with TASKQUEUE_TEST_DB=postgres: the overlaps below are decided by
PostgreSQL's row locks, which SQLite does not have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from django_taskqueue import housekeeping, tasks
from django_taskqueue.exceptions import CleanupIncomplete
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import EventType, TaskStatus
from tests import factories

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _at_once(*jobs: Callable[[], Any]) -> list[Any]:
    """Run ``jobs`` in threads released together; return each one's result or exception."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(index: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = job()
        except BaseException as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def _due_count() -> int:
    cutoffs = housekeeping.retention_cutoffs()
    return TaskLog.objects.filter(
        status=TaskStatus.COMPLETED, completed_at__lt=cutoffs["completed"]
    ).count()


def _command(*args: str) -> Callable[[], tuple[str, int]]:
    def run() -> tuple[str, int]:
        out = StringIO()
        call_command("taskqueue_cleanup", "--no-progress", *args, stdout=out)
        return out.getvalue(), _due_count()

    return run


def _beat_task(**kwargs: Any) -> Callable[[], tuple[dict[str, Any], int]]:
    def run() -> tuple[dict[str, Any], int]:
        return tasks.cleanup(**kwargs), _due_count()

    return run


def test_two_cleanups_at_once_both_finish_and_leave_nothing_due() -> None:
    assert connection.vendor == "postgresql"
    factories.many_finished(20_000)
    kept = factories.task("completed", completed_at=factories.ago(days=1), progress_rows=1)

    command, beat_task = _at_once(_command("--batch-size", "500"), _beat_task(batch_size=500))

    assert not isinstance(command, BaseException), command
    assert not isinstance(beat_task, BaseException), beat_task
    (text, due_after_command), (result, due_after_task) = command, beat_task
    # Each run that reports success has left nothing due behind it: it did not
    # stop early because the other run was deleting the same rows.
    assert due_after_command == 0, text
    assert due_after_task == 0, result
    assert result["complete"] is True
    deleted_by_command = int(text.split("Deleted ", 1)[1].split(" ", 1)[0])
    assert deleted_by_command + result["total"] == 20_000
    assert list(TaskLog.objects.values_list("pk", flat=True)) == [kept.pk]
    assert TaskEventLog.objects.exclude(task_id=kept.pk).count() == 0


def test_a_batch_whose_rows_someone_else_deleted_does_not_end_the_run() -> None:
    """Another session deletes the first batch's rows while the batch waits on them."""
    factories.many_finished(3_000)
    first = list(
        TaskLog.objects.filter(status=TaskStatus.COMPLETED)
        .order_by("completed_at")
        .values_list("pk", flat=True)[:100]
    )
    holding = threading.Event()
    release = threading.Event()

    def other_session() -> int:
        from django.db import transaction

        with transaction.atomic():
            TaskEventLog.objects.filter(task_id__in=first).delete()
            deleted, _ = TaskLog.objects.filter(pk__in=first).delete()
            holding.set()
            release.wait(30)
        return deleted

    def cleanup() -> dict[str, Any]:
        holding.wait(30)
        # The batch selects the same rows, then waits for the other session's
        # row locks; when it commits, the rows are gone.
        threading.Timer(1.0, release.set).start()
        return tasks.cleanup(batch_size=100)

    other, result = _at_once(other_session, cleanup)

    assert other == 100
    assert not isinstance(result, BaseException), result
    assert TaskLog.objects.count() == 0, "the run stopped at the batch that found its rows gone"
    assert result["total"] == 2_900
    assert result["complete"] is True


def test_a_cleanup_that_cannot_finish_says_so() -> None:
    factories.many_finished(1_000)
    locked = threading.Event()
    release = threading.Event()

    def locker() -> None:
        from django.db import transaction

        with transaction.atomic():
            # Someone holds a due row (a long admin transaction, a frozen client).
            # Found first, then locked alone: FOR UPDATE would lock the OFFSET's rows too.
            pk = TaskLog.objects.order_by("completed_at").values_list("pk", flat=True)[500]
            list(TaskLog.objects.select_for_update().filter(pk=pk))
            locked.set()
            release.wait(60)

    def runs() -> tuple[BaseException | None, BaseException | None]:
        locked.wait(30)
        try:
            try:
                _command("--batch-size", "100", "--lock-timeout", "1")()
            except CommandError as exc:
                by_command: BaseException | None = exc
            else:
                by_command = None
            try:
                tasks.cleanup(batch_size=100, lock_timeout=0.5)
            except CleanupIncomplete as exc:
                by_task: BaseException | None = exc
            else:
                by_task = None
            return by_command, by_task
        finally:
            release.set()

    _, outcome = _at_once(locker, runs)

    assert not isinstance(outcome, BaseException), outcome
    by_command, by_task = outcome
    # The command exits non-zero and says how far it came.
    assert isinstance(by_command, CommandError)
    assert (
        "cleanup could not finish: a batch failed: LockNotAvailable: "
        "canceling statement due to lock timeout;"
    ) in str(by_command)
    assert "it deleted 500 tasks in 5 batches, and 500 due tasks remain" in str(by_command)
    # The beat task fails (Celery records the exception) instead of returning a summary.
    assert isinstance(by_task, CleanupIncomplete)
    assert by_task.result.complete is False
    assert by_task.result.remaining == 500
    # What was deleted before the locked row stays deleted; the rest waits.
    assert TaskLog.objects.count() == 500


def test_stopping_at_max_batches_is_not_a_failure() -> None:
    factories.many_finished(300)
    out = StringIO()
    call_command(
        "taskqueue_cleanup",
        "--no-progress",
        "--batch-size",
        "100",
        "--max-batches",
        "2",
        stdout=out,
    )
    assert "Stopped after 2 batches (--max-batches): 100 due tasks remain" in out.getvalue()
    result = tasks.cleanup(batch_size=50, max_batches=1)
    assert result["complete"] is False
    assert result["stopped"] == "max_batches"
    assert result["remaining"] == 50


def test_two_stuck_task_sweeps_at_once_fail_each_task_once() -> None:
    stuck = [factories.task("processing", heartbeat_at=factories.ago(hours=2)) for _ in range(60)]

    first, second = _at_once(housekeeping.mark_stale_tasks, housekeeping.mark_stale_tasks)

    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    # Every task was failed by exactly one of the two; the other's write was a no-op.
    assert sorted(first.failed + second.failed) == sorted(log.celery_task_id for log in stuck)
    for log in stuck:
        log.refresh_from_db()
        assert (log.status, log.error_code) == ("failed", "worker_lost")
        assert log.events.filter(event_type=EventType.STALE).count() == 1
