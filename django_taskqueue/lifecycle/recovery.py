"""The housekeeping's writes: tasks stuck, lost or re-queued, and the heartbeats.

Each detector's condition is re-checked inside the ``UPDATE``, so a heartbeat or
an end that lands between the detector's query and its write wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db.models import F, Q

from django_taskqueue.lifecycle.records import Outcome, record_time
from django_taskqueue.lifecycle.transitions import mark_failed, transition
from django_taskqueue.models import TaskLog
from django_taskqueue.status import ALLOWED_FROM, EventType, TaskStatus


def _stale_guard(cutoff: datetime) -> Q:
    """Still ``processing`` with no sign of life since ``cutoff`` (re-checked in the UPDATE)."""
    return Q(status=TaskStatus.PROCESSING) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


def mark_stale(
    pk: uuid.UUID,
    *,
    cutoff: datetime,
    error_message: str,
    metadata: Mapping[str, Any] | None = None,
) -> Outcome:
    """Fail a task stuck in ``processing`` (``error_code="worker_lost"``, a ``stale`` event).

    The staleness is part of the ``UPDATE``'s condition, so a heartbeat or a
    completion landing between the detector's query and this write wins: the
    task is left alone (with an ``ignored`` event).
    """
    return _presume_failed(pk, "worker_lost", _stale_guard(cutoff), error_message, metadata)


def requeue_stale(
    pk: uuid.UUID,
    *,
    cutoff: datetime,
    attempt: int,
    reason: str,
    metadata: Mapping[str, Any] | None = None,
) -> Outcome:
    """Move a stuck task from ``processing`` to ``retrying`` as attempt ``attempt + 1``.

    The caller then publishes the message again with the same Celery id and
    ``retries=attempt + 1``: the worker's start of that attempt moves the row
    back to ``processing``, and a late start of the lost attempt is ignored.
    Guarded like :func:`mark_stale`, and also on ``attempt`` so two detectors
    cannot both re-queue one task.
    """
    next_attempt = attempt + 1
    updates = {
        "attempt": next_attempt,
        "retry_count": F("retry_count") + 1,
        "error_message": reason,
        "error_code": "worker_lost",
        "next_retry_at": None,
        "heartbeat_at": record_time(),
    }
    meta = {"error_code": "worker_lost", "attempt": next_attempt, **(metadata or {})}
    return transition(
        TaskStatus.RETRYING,
        pk=pk,
        updates=updates,
        event=(EventType.REQUEUED, reason, meta),
        guard=_stale_guard(cutoff) & Q(attempt=attempt),
    )


def mark_lost(
    pk: uuid.UUID,
    *,
    created_before: datetime,
    error_message: str,
    metadata: Mapping[str, Any] | None = None,
) -> Outcome:
    """Fail a ``pending`` task whose message no worker or backend knows (``error_code="lost"``).

    Guarded on the status still being ``pending`` and on the creation time, so
    a task that a worker starts meanwhile is not touched.
    """
    guard = Q(status=TaskStatus.PENDING, created_at__lt=created_before)
    return _presume_failed(pk, "lost", guard, error_message, metadata)


def _presume_failed(
    pk: uuid.UUID,
    error_code: str,
    guard: Q,
    error_message: str,
    metadata: Mapping[str, Any] | None,
) -> Outcome:
    """Fail a task no worker reported on, with a ``stale`` event, if ``guard`` still holds.

    A presumption (:data:`~django_taskqueue.status.PRESUMED_FAILURES`): a worker's
    later evidence replaces it.
    """
    return mark_failed(
        pk=pk,
        error_message=error_message,
        error_code=error_code,
        event_type=EventType.STALE,
        metadata=metadata,
        guard=guard,
    )


def touch_many(pks: Sequence[uuid.UUID] = (), celery_task_ids: Sequence[str] = ()) -> int:
    """Refresh the heartbeat of several running tasks in one ``UPDATE``; returns how many.

    Tasks are named by primary key or by Celery id (a task whose start is still
    queued in its worker has no known primary key yet).
    """
    if not pks and not celery_task_ids:
        return 0
    which = Q(pk__in=list(pks)) | Q(celery_task_id__in=list(celery_task_ids))
    return (
        TaskLog.objects.filter(which)
        .filter(status__in=ALLOWED_FROM[TaskStatus.COMPLETED])
        .update(heartbeat_at=record_time())
    )
