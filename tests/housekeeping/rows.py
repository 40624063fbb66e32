"""Rows in the states housekeeping looks for, made through the lifecycle functions.

Only the timestamps are moved into the past afterwards (a test cannot wait
ninety days); every status is reached the way a worker would reach it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.status import EventType, TaskStatus


def new_id() -> str:
    return str(uuid.uuid4())


def finished(
    status: str = "completed",
    *,
    age: timedelta = timedelta(days=100),
    runtime: timedelta = timedelta(seconds=2),
    task_name: str = "tests.add",
    progress_rows: int = 1,
    error_code: str = "ValueError",
    **fields: Any,
) -> TaskLog:
    """A task that ran and ended ``age`` ago after ``runtime``."""
    log = lifecycle.create_task_log(new_id(), task_name=task_name, **fields)
    lifecycle.mark_started(log.celery_task_id, worker="w1@host")
    for i in range(progress_rows):
        lifecycle.record_progress(ProgressWrite(10 + i, f"step {i}", None, True), pk=log.pk)
    if status == "completed":
        lifecycle.mark_completed(log.celery_task_id, pk=log.pk, result={"ok": True})
    elif status == "failed":
        lifecycle.mark_failed(pk=log.pk, error_message="it broke", error_code=error_code)
    elif status == "cancelled":
        lifecycle.mark_cancelled(pk=log.pk, reason="not needed")
    else:
        raise ValueError(status)
    ended = timezone.now() - age
    TaskLog.objects.filter(pk=log.pk).update(completed_at=ended, started_at=ended - runtime)
    log.refresh_from_db()
    return log


def running(
    task_name: str = "tests.add", *, silent_for: timedelta = timedelta(hours=1), **fields: Any
) -> TaskLog:
    """A task in ``processing`` whose last heartbeat was ``silent_for`` ago."""
    log = lifecycle.create_task_log(new_id(), task_name=task_name, **fields)
    lifecycle.mark_started(log.celery_task_id, worker="gone@host")
    seen = timezone.now() - silent_for
    TaskLog.objects.filter(pk=log.pk).update(heartbeat_at=seen, started_at=seen)
    log.refresh_from_db()
    return log


def pending(
    task_name: str = "tests.add", *, age: timedelta = timedelta(days=2), **fields: Any
) -> TaskLog:
    """A task recorded as ``pending`` ``age`` ago (its message never ran)."""
    log = lifecycle.create_task_log(new_id(), task_name=task_name, **fields)
    TaskLog.objects.filter(pk=log.pk).update(created_at=timezone.now() - age)
    log.refresh_from_db()
    return log


def event_types(log: TaskLog) -> list[str]:
    return list(log.events.order_by("created_at", "id").values_list("event_type", flat=True))


def many_finished(count: int, *, age: timedelta = timedelta(days=100)) -> None:
    """``count`` completed tasks past their retention age, each with one event.

    Written with ``bulk_create``: thousands of rows through the lifecycle one by
    one would take minutes. The rows are what a finished task leaves.
    """
    ended = timezone.now() - age
    for start in range(0, count, 5000):
        logs = [
            TaskLog(
                celery_task_id=str(uuid.uuid4()),
                task_name="tests.add",
                status=TaskStatus.COMPLETED,
                created_at=ended - timedelta(seconds=2),
                started_at=ended - timedelta(seconds=1),
                # Distinct end times, as real tasks have, in a shuffled order.
                completed_at=ended + timedelta(microseconds=(i * 7919) % count),
                progress=100,
            )
            for i in range(start, min(start + 5000, count))
        ]
        TaskLog.objects.bulk_create(logs)
        TaskEventLog.objects.bulk_create(
            [TaskEventLog(task_id=log.pk, event_type=EventType.COMPLETED) for log in logs]
        )
