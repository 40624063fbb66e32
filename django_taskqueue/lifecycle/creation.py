"""The rows written before a message is published, and rows for steps never published.

A tracked task gets its row before its message goes out (:func:`create_task_log`,
once per idempotency key with :func:`create_idempotent_task_log`); an id published
again is recorded on its row (:func:`record_publish`); a re-run gets its new row
under a lock on its lineage (:func:`create_rerun`); the steps of a canvas that
Celery fails without publishing get theirs after the fact (:func:`record_unpublished`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction

from django_taskqueue.canvas import UPSTREAM_FAILED, Step
from django_taskqueue.lifecycle.records import (
    BATCH,
    FRESH_RUN,
    Outcome,
    announce,
    earlier_outcome,
    record_time,
    recording,
    stored_arguments,
    stored_event,
    stored_json,
    stored_text,
    write_events,
)
from django_taskqueue.lifecycle.transitions import mark_cancelled
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import ACTIVE_STATUSES, EventType, TaskStatus, TransitionRefused


def create_task_log(
    celery_task_id: str,
    *,
    task_name: str = "",
    status: str = TaskStatus.PENDING,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    event_message: str = "",
    event_metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> TaskLog:
    """Record a task about to be published, with its ``created`` event.

    Args:
        celery_task_id: the id the message will carry.
        task_name: the Celery task name.
        status: ``pending``, or ``retrying`` for a run started again.
        args: positional arguments (stored JSON-safe and redacted).
        kwargs: keyword arguments (likewise).
        event_message: the message of the ``created`` event.
        event_metadata: the metadata of the ``created`` event.
        **fields: other :class:`~django_taskqueue.models.TaskLog` fields
            (``owner``, ``task_type``, ``tags``, ``metadata``, ``file_*``,
            ``parent``, ``retry_of``, ``retry_count``, ``max_retries``, ``queue``,
            and the canvas ids ``celery_parent_id``, ``celery_root_id``, ``celery_group_id``).
            ``metadata`` is stored redacted like the arguments (the task does
            not receive it, so it does not set ``args_redacted``).
    """
    stored_args, stored_kwargs, redacted = stored_arguments(args, kwargs)
    if "metadata" in fields:
        fields["metadata"] = stored_json(dict(fields["metadata"] or {}))
    metadata = stored_json(dict(event_metadata or {}))
    if redacted:
        metadata["redacted"] = True
    log = TaskLog(
        celery_task_id=celery_task_id,
        task_name=task_name,
        status=status,
        args=stored_args,
        kwargs=stored_kwargs,
        args_redacted=redacted,
        **fields,
    )
    event = (EventType.CREATED, stored_text(event_message), metadata)
    with recording():
        log.save(force_insert=True)
        write_events(log.pk, event)
    return log


def record_publish(celery_task_id: str, **create: Any) -> TaskLog:
    """Record a message about to be published: a new row, or the same id published again.

    Celery publishes an id again legitimately: a frozen chord re-applied, a
    reused signature, ``Task.replace`` (the replacement takes the replaced
    task's id). The second publish is recorded on the id's row instead of
    failing on its unique constraint: see :func:`mark_republished`.

    Args:
        celery_task_id: the id the message will carry.
        **create: as :func:`create_task_log`.
    """
    try:
        return create_task_log(celery_task_id, **create)
    except IntegrityError:
        log = mark_republished(
            celery_task_id,
            task_name=create.get("task_name", ""),
            args=create.get("args"),
            kwargs=create.get("kwargs"),
        )
        if log is None:
            raise
        return log


def mark_republished(
    celery_task_id: str,
    *,
    task_name: str = "",
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> TaskLog | None:
    """Record that an id that has a row is being published again.

    The row takes the new message's task name and arguments (a replacement
    task's, for ``Task.replace``). A row that had finished (``completed``,
    ``failed``) goes back to ``pending`` with a ``reopened`` event that keeps
    its earlier outcome; its new run is recorded as usual. A cancelled row
    stays cancelled: the worker that gets the message revokes it. An active
    row keeps its status, with a ``republished`` event.

    Returns:
        The row, or ``None`` when there is none.
    """
    stored_args, stored_kwargs, redacted = stored_arguments(args, kwargs)
    with transaction.atomic():
        row = (
            TaskLog.objects.filter(celery_task_id=celery_task_id)
            .select_for_update()
            .values_list("pk", "status", "task_name", "error_code", "error_message", "completed_at")
            .first()
        )
        if row is None:
            return None
        pk, status, old_name, code, message, completed_at = row
        changes: dict[str, Any] = {
            "args": stored_args,
            "kwargs": stored_kwargs,
            "args_redacted": redacted,
        }
        if task_name:
            changes["task_name"] = task_name[:255]
        named = f" as {task_name}" if task_name and task_name != old_name else ""
        meta = {"task_name": task_name, "previous_task_name": old_name, "status": status}
        event: tuple[str, str, Mapping[str, Any] | None]
        if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            changes.update(FRESH_RUN, status=TaskStatus.PENDING, started_at=None)
            event = (
                EventType.REOPENED,
                f"published again{named} after it was {status}",
                {**meta, **earlier_outcome(status, code, message, completed_at)},
            )
        elif named and status == TaskStatus.PROCESSING:
            event = (EventType.REPUBLISHED, f"replaced by {task_name}", meta)
        else:
            event = (EventType.REPUBLISHED, f"published again{named}", meta)
        TaskLog.objects.filter(pk=pk).update(**changes)
        write_events(pk, stored_event(event))
    return TaskLog.objects.get(pk=pk)


def find_by_idempotency_key(owner: Any, key: str) -> TaskLog | None:
    """The task started with ``key`` by ``owner`` (``None``: a system task), if any."""
    rows = TaskLog.objects.filter(idempotency_key=key)
    rows = rows.filter(owner__isnull=True) if owner is None else rows.filter(owner=owner)
    return rows.first()


def create_idempotent_task_log(
    celery_task_id: str, *, idempotency_key: str, owner: Any = None, **kwargs: Any
) -> tuple[TaskLog, bool]:
    """:func:`create_task_log` once per ``(owner, idempotency_key)``.

    Returns:
        ``(row, created)``: the new row, or the one an earlier call with the
        same key and owner created (also when two calls race: the unique
        constraint lets one insert win, the other reads its row).
    """
    existing = find_by_idempotency_key(owner, idempotency_key)
    if existing is not None:
        return existing, False
    try:
        log = create_task_log(
            celery_task_id, owner=owner, idempotency_key=idempotency_key, **kwargs
        )
    except IntegrityError:
        existing = find_by_idempotency_key(owner, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return log, True


def check_rerun_status(status: str, force: bool) -> None:
    """Refuse a re-run of a task in ``status`` (``force`` allows an active one).

    Raises:
        TransitionRefused: the task completed, or is active without ``force``.
    """
    if status == TaskStatus.COMPLETED:
        raise TransitionRefused(
            "the task completed; only failed or cancelled tasks can be retried", status=status
        )
    if status not in (TaskStatus.FAILED, TaskStatus.CANCELLED) and not force:
        raise TransitionRefused(
            f"the task is {status}; pass force to retry a task that is stuck", status=status
        )


def _lineage_root(task_log: TaskLog) -> uuid.UUID:
    """The first run of the task's lineage (``retry_of`` followed back to its start).

    ``retry_of`` is written once, when a run is created, so the walk needs no lock.
    """
    root, up, seen = task_log.pk, task_log.retry_of_id, {task_log.pk}
    while up is not None and up not in seen:
        seen.add(up)
        row = TaskLog.objects.filter(pk=up).values_list("pk", "retry_of_id").first()
        if row is None:
            break
        root, up = row
    return root


def _active_run(root: uuid.UUID, exclude: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """An active run of the lineage that starts at ``root``, other than ``exclude``."""
    level = list(TaskLog.objects.filter(pk=root).values_list("pk", "status"))
    seen = {root}
    while level:
        for pk, status in level:
            if pk != exclude and status in ACTIVE_STATUSES:
                return pk, status
        runs = TaskLog.objects.filter(retry_of__in=[pk for pk, _ in level])
        level = [row for row in runs.values_list("pk", "status") if row[0] not in seen]
        seen.update(pk for pk, _ in level)
    return None


def create_rerun(
    task_log: TaskLog,
    *,
    celery_task_id: str,
    force: bool,
    actor: Mapping[str, Any],
    terminate: bool,
    **create: Any,
) -> tuple[TaskLog, bool]:
    """Record a re-run of ``task_log`` under a lock on its lineage, before it is published.

    The record half of :func:`django_taskqueue.actions.rerun`: in one
    transaction, under a lock on the lineage's first row, the status is checked
    again (:func:`check_rerun_status`), no other run of the lineage may be
    active, a forced active task is cancelled as ``superseded``, and the new
    row (``retrying``, ``retry_of`` the original) and the original's ``rerun``
    event are written.

    Args:
        task_log: the task to run again.
        celery_task_id: the new run's Celery id.
        force: allow a task still ``pending``, ``processing`` or ``retrying``.
        actor: who asked, for the events.
        terminate: recorded with a superseded task's cancel.
        **create: the new row, as :func:`create_task_log`.

    Returns:
        ``(new_log, superseded)``: the new row, and whether the original was
        cancelled as superseded (its Celery id is then to be revoked).

    Raises:
        TransitionRefused: the task no longer exists, its status refuses a
            re-run, another run of the lineage is active, or a forced task
            completed meanwhile.
    """
    superseded = False
    with transaction.atomic():
        root = _lineage_root(task_log)
        # Every re-run of the lineage takes this lock first: they run one at a time.
        list(TaskLog.objects.select_for_update().filter(pk=root).values_list("pk"))
        status = TaskLog.objects.filter(pk=task_log.pk).values_list("status", flat=True).first()
        if status is None:
            raise TransitionRefused("the task no longer exists", status=task_log.status)
        check_rerun_status(status, force)
        active = _active_run(root, exclude=task_log.pk)
        if active is not None:
            raise TransitionRefused(
                f"a run of this task is still {active[1]} ({active[0]}): wait for it to end, "
                "or retry that one with force if it is stuck",
                status=status,
            )
        if status in ACTIVE_STATUSES:
            outcome = mark_cancelled(
                pk=task_log.pk,
                reason=f"superseded: run again as {celery_task_id}",
                error_code="superseded",
                metadata={
                    **actor,
                    "terminate": terminate,
                    "rerun_celery_task_id": celery_task_id,
                },
            )
            if not outcome.applied and outcome.status == TaskStatus.COMPLETED:
                raise TransitionRefused("the task completed meanwhile", status=TaskStatus.COMPLETED)
            superseded = outcome.applied
        new_log = create_task_log(
            celery_task_id,
            status=TaskStatus.RETRYING,
            event_message="run again",
            event_metadata={"rerun_of": task_log.pk, **actor},
            retry_of_id=task_log.pk,
            retry_count=task_log.retry_count + 1,
            **create,
        )
        write_events(
            task_log.pk,
            (
                EventType.RERUN,
                f"run again as {celery_task_id}",
                {"rerun_id": new_log.pk, **actor},
            ),
        )
    return new_log, superseded


def record_unpublished(
    steps: Sequence[Step],
    *,
    upstream_id: str,
    upstream_name: str,
    root_id: str,
    reason: str,
    fields_of: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[TaskLog]:
    """Record canvas steps that will never run because the step ``upstream_id`` failed.

    When a step of a chain (or a member of a chord header) fails, Celery's
    result backend marks the steps after it (or the chord's body) failed
    without ever publishing them, so no worker records them. Each gets a
    ``failed`` row here, with ``error_code="upstream_failed"``, a message
    naming the failed step, and its lineage (the failed step as its parent).
    The rows and their events are written in bulk (an ``INSERT`` per 500); a step
    that already has a row keeps it as it is, whatever its status.

    Args:
        steps: from :func:`django_taskqueue.canvas.unpublished_steps`.
        upstream_id: the Celery id of the step that failed.
        upstream_name: its task name.
        root_id: the canvas's root (for steps whose signature names none).
        reason: what the failed step raised (``"ValueError: bad input"``).
        fields_of: other TaskLog fields for a task name (``task_type``, ...).

    Returns:
        The rows written (none for steps that had one).
    """
    if not steps:
        return []
    existing = set(
        TaskLog.objects.filter(
            celery_task_id__in=[step.celery_task_id for step in steps]
        ).values_list("celery_task_id", flat=True)
    )
    now = record_time()
    message = stored_text(
        f"Not run: the earlier step {upstream_name}[{upstream_id}] failed ({reason})"
    )[:10_000]
    rows: list[TaskLog] = []
    for step in steps:
        if step.celery_task_id in existing:
            continue
        args, kwargs, redacted = stored_arguments(step.args, step.kwargs)
        rows.append(
            TaskLog(
                celery_task_id=step.celery_task_id,
                task_name=step.task_name[:255],
                status=TaskStatus.FAILED,
                error_message=message,
                error_code=UPSTREAM_FAILED,
                completed_at=now,
                # A microsecond apart, in the order the steps would have run.
                created_at=now + timedelta(microseconds=len(rows)),
                args=args,
                kwargs=kwargs,
                args_redacted=redacted,
                celery_parent_id=upstream_id[:255],
                celery_root_id=(step.root_id or root_id)[:255],
                celery_group_id=step.group_id,
                **(fields_of(step.task_name) if fields_of is not None else {}),
            )
        )
    if not rows:
        return []
    meta = {"error_code": UPSTREAM_FAILED, "upstream": upstream_id}
    with recording():
        # A step recorded meanwhile (by a concurrent failure of the same canvas)
        # is skipped by the unique Celery id, and gets no events below.
        TaskLog.objects.bulk_create(rows, ignore_conflicts=True, batch_size=BATCH)
        written = set(
            TaskLog.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", flat=True)
        )
        rows = [row for row in rows if row.pk in written]
        TaskEventLog.objects.bulk_create(
            [
                TaskEventLog(
                    task_id=row.pk,
                    event_type=kind,
                    message=text,
                    metadata=stored_json(event_meta),
                    created_at=now,
                )
                for row in rows
                for kind, text, event_meta in (
                    (
                        EventType.CREATED,
                        "recorded when an earlier step of its canvas failed: never published",
                        {"source": "canvas", "upstream": upstream_id},
                    ),
                    (EventType.FAILED, message, meta),
                )
            ],
            batch_size=BATCH,
        )
        for row in rows:
            announce(Outcome(True, TaskStatus.FAILED, row.pk), EventType.FAILED)
    return rows
