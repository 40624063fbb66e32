"""The tests' rows: tasks in any state, users, and timestamps in the past (no factory library).

A task is made the way a producer and a worker would make it: recorded by
:func:`~django_taskqueue.lifecycle.create_task_log`, then moved on by the
lifecycle's ``mark_*`` and ``record_progress`` functions. Only its timestamps are
set afterwards, with an UPDATE of those columns alone (a test cannot wait ninety
days), never its status. The one exception is :func:`many_finished`, which writes
thousands of finished rows at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import EventType, TaskStatus

#: The API tests' task: a file task, under the name their ``TASK_TYPES`` give it.
FILE_TASK: dict[str, Any] = {"task_name": "tests.process_file", "task_type": "file"}

#: A file task part-way through (with ``status="processing"``), as the stream tests follow it.
RESIZING: dict[str, Any] = {**FILE_TASK, "progress": 40, "progress_message": "resized"}

#: The admin tests' task: a type to filter on, and arguments ``tests.add`` can run again.
SAMPLE_TASK: dict[str, Any] = {"task_type": "sample", "args": [1, 2]}

#: A failure with a traceback, as the admin shows it (the ``<boom>`` must come out escaped).
BOOM: dict[str, Any] = {
    "error_message": "ValueError: boom",
    "traceback": 'Traceback (most recent call last):\n  File "x.py"\nValueError: <boom>',
}

_RAN = (TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED)


def task(
    status: str = TaskStatus.PENDING,
    *,
    celery_task_id: str | None = None,
    task_name: str = "tests.add",
    owner: Any = None,
    ran: bool | None = None,
    worker: str = "worker@test",
    progress: int | None = None,
    progress_message: str = "",
    progress_rows: int = 0,
    result: Any = None,
    error_message: str | None = None,
    error_code: str = "ValueError",
    traceback: str = "",
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    completed_at: datetime | None = None,
    heartbeat_at: datetime | None = None,
    runtime: timedelta = timedelta(seconds=2),
    **fields: Any,
) -> TaskLog:
    """A task in ``status``, reached through the lifecycle functions.

    Args:
        status: any status; ``retrying`` is a run recorded as started again.
        celery_task_id: the message id (a new UUID when not given).
        task_name: the Celery task name.
        owner: the user the task belongs to.
        ran: whether a worker started it before it reached ``status``. By default
            a ``processing``, ``completed`` or ``failed`` task ran; a ``cancelled``
            one was cancelled while it waited unless ``ran=True``.
        worker: the worker that started it.
        progress: a progress value the worker wrote after starting (with a
            history row), and ``progress_message`` its message.
        progress_message: see ``progress``.
        progress_rows: progress values (10, 11, ...) written after starting, each
            with a history row, before ``progress``.
        result: the result of a ``completed`` task (``{"ok": True}`` when not given).
        error_message: why a ``failed`` task failed (``"it broke"``) or a
            ``cancelled`` one was cancelled (``"not needed"``).
        error_code: the error code of a ``failed`` task.
        traceback: the traceback of a ``failed`` task.
        created_at: moves the row's creation time.
        started_at: moves its start time.
        completed_at: moves its end time. Without ``started_at``, the start moves
            too, to ``runtime`` before it.
        heartbeat_at: moves its last heartbeat. Without ``started_at`` or
            ``completed_at``, the start moves to it too (a task silent since then).
        runtime: how long a task given ``completed_at`` alone ran.
        **fields: other fields of :func:`~django_taskqueue.lifecycle.create_task_log`
            (``task_type``, ``args``, ``kwargs``, ``queue``, ``parent``, ...).

    Returns:
        The row, read back from the database.
    """
    log = lifecycle.create_task_log(
        celery_task_id or str(uuid.uuid4()),
        task_name=task_name,
        owner=owner,
        status=TaskStatus.RETRYING if status == TaskStatus.RETRYING else TaskStatus.PENDING,
        **fields,
    )
    if ran is None:
        ran = status in _RAN
    if ran:
        lifecycle.mark_started(log.celery_task_id, worker=worker)
        for i in range(progress_rows):
            set_progress(log, 10 + i, f"step {i}")
        if progress is not None:
            set_progress(log, progress, progress_message)
    if status == TaskStatus.COMPLETED:
        done = {"ok": True} if result is None else result
        lifecycle.mark_completed(log.celery_task_id, result=done)
    elif status == TaskStatus.FAILED:
        lifecycle.mark_failed(
            log.celery_task_id,
            error_message="it broke" if error_message is None else error_message,
            error_code=error_code,
            traceback=traceback,
        )
    elif status == TaskStatus.CANCELLED:
        lifecycle.mark_cancelled(pk=log.pk, reason=error_message or "not needed")
    # A row placed in time stays consistent: it started before it ended, and before
    # its last heartbeat.
    if started_at is None and completed_at is not None:
        started_at = completed_at - runtime
    elif started_at is None and heartbeat_at is not None and ran:
        started_at = heartbeat_at
    stamps = {
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "heartbeat_at": heartbeat_at,
    }
    moved = {column: value for column, value in stamps.items() if value is not None}
    if moved:
        TaskLog.objects.filter(pk=log.pk).update(**moved)
    log.refresh_from_db()
    assert log.status == status, f"the lifecycle left the task {log.status}, not {status}"
    return log


def set_progress(log: TaskLog, progress: int, message: str = "") -> None:
    """Write a progress value of a running task (with a history row), as its worker would."""
    lifecycle.record_progress(lifecycle.ProgressWrite(progress, message, None, True), pk=log.pk)


def many_finished(count: int, *, age: timedelta = timedelta(days=100)) -> None:
    """``count`` completed tasks that ended ``age`` ago, each with one event.

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


def events(log: TaskLog) -> list[str]:
    """The task's event types, oldest first."""
    return list(log.events.order_by("created_at", "id").values_list("event_type", flat=True))


def ago(**delta: float) -> datetime:
    """``timezone.now()`` minus ``timedelta(**delta)``."""
    return timezone.now() - timedelta(**delta)


def user(username: str, *, staff: bool = False, perms: Iterable[str] = (), **fields: Any) -> Any:
    """A user whose password is ``pw-<username>``.

    Args:
        username: the user name.
        staff: whether the user is staff (not superuser: pass ``is_superuser=True``).
        perms: ``django_taskqueue`` permission codenames to grant.
        **fields: other fields of the user model.

    Returns:
        The user, read back (so that no permission is cached from before the grant).
    """
    model = get_user_model()
    made = model.objects.create_user(
        username=username, password=f"pw-{username}", is_staff=staff, **fields
    )
    codenames = list(perms)
    if codenames:
        made.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="django_taskqueue", codename__in=codenames
            )
        )
    return model.objects.get(pk=made.pk)
