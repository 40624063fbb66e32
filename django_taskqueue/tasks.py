"""The housekeeping Celery tasks, under stable names.

Registered with ``shared_task`` (the package never creates a Celery app), so a
worker that autodiscovers the tasks of ``INSTALLED_APPS`` knows them. The beat
presets in :mod:`django_taskqueue.beat` schedule them; each returns a
JSON-friendly summary of what it did.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from celery import shared_task

from django_taskqueue import bulk, housekeeping


@shared_task(name="django_taskqueue.cleanup")
def cleanup(
    older_than_days: float | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    lock_timeout: float | None = 60.0,
) -> dict[str, Any]:
    """Delete finished tasks past their retention age (``RETENTION``), in batches.

    The result says ``complete`` (and ``remaining``, ``stopped``). A run that
    could not finish raises :class:`~django_taskqueue.exceptions.CleanupIncomplete`,
    so the task fails visibly; stopping at ``max_batches`` is not a failure.

    Args:
        older_than_days: one age for every terminal status instead of ``RETENTION``.
        batch_size: tasks per transaction (default ``RETENTION_BATCH_SIZE``).
        max_batches: stop after this many batches; the rest waits for the next run.
        lock_timeout: seconds a batch waits for its turn and for row locks (``None``: for ever).
    """
    older_than = None if older_than_days is None else timedelta(days=older_than_days)
    return housekeeping.purge_finished(
        older_than=older_than,
        batch_size=batch_size,
        max_batches=max_batches,
        lock_timeout=lock_timeout,
    ).as_dict()


@shared_task(name="django_taskqueue.mark_stale")
def mark_stale(limit: int = 1000) -> dict[str, Any]:
    """Fail (``worker_lost``) or re-queue the tasks stuck in ``processing``."""
    return housekeeping.mark_stale_tasks(limit=limit).as_dict()


@shared_task(name="django_taskqueue.reconcile_lost")
def reconcile_lost(inspect_timeout: float = 2.0, limit: int = 500) -> dict[str, Any]:
    """Fail (``lost``) the ``pending`` tasks whose message no worker, backend or queue holds."""
    return housekeeping.reconcile_lost(inspect_timeout=inspect_timeout, limit=limit).as_dict()


@shared_task(name="django_taskqueue.report")
def report(window_hours: float = 24.0) -> dict[str, Any]:
    """Log the summary of the last ``window_hours`` and mail it to ``REPORT_RECIPIENTS``."""
    return housekeeping.send_report(timedelta(hours=window_hours))


@shared_task(name="django_taskqueue.publish_bulk", ignore_result=True)
def publish_bulk(parent_id: str, task_kwargs: dict[str, Any] | None = None) -> int:
    """Publish a parallel bulk run's children as a Celery group (see :mod:`django_taskqueue.bulk`).

    The REST API sends this one message instead of a thousand, so that
    ``bulk_create`` answers at once; the worker publishes the group.
    """
    return bulk.publish_group(uuid.UUID(parent_id), task_kwargs or {})


@shared_task(name=bulk.CONTINUE_BULK, ignore_result=True)
def continue_bulk(
    parent_id: str, after: str, task_kwargs: dict[str, Any] | None = None
) -> str | None:
    """Publish the next child of a sequential bulk run (see :mod:`django_taskqueue.bulk`).

    Each child of the run carries this as its success callback, so the run
    goes on one file at a time without a message that holds them all.
    """
    return bulk.publish_next(uuid.UUID(parent_id), after, task_kwargs or {})
