"""Receivers of Celery signals; connected in ``AppConfig.ready()``."""

from __future__ import annotations

from typing import Any

from celery import signals

from django_taskqueue import lifecycle


def on_task_revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **kwargs: Any,
) -> None:
    """Record a revoke the worker carried out, for tracked tasks only."""
    from django_taskqueue.tracked import TrackedTask, record_safely

    if not isinstance(sender, TrackedTask) or not sender._tracking() or request is None:
        return
    task_id = getattr(request, "id", None) or getattr(request, "task_id", None)
    if not task_id:
        return
    record_safely(
        "revoke",
        task_id,
        lifecycle.record_revoked,
        task_id,
        terminated=bool(terminated),
        expired=bool(expired),
        signum=signum,
        hold=True,
    )


def on_task_postrun(
    sender: Any = None,
    task_id: str | None = None,
    retval: Any = None,
    state: str | None = None,
    **kwargs: Any,
) -> None:
    """Remember a tracked run whose outcome hooks did not run (see ``on_task_internal_error``)."""
    from django_taskqueue.tracked import note_postrun

    if task_id:
        note_postrun(sender, task_id, retval, state)


def on_task_internal_error(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    request: Any = None,
    **kwargs: Any,
) -> None:
    """Record a tracked task that Celery failed outside its body (e.g. its result not stored)."""
    from django_taskqueue.tracked import record_internal_error

    eager = (
        request.get("is_eager")
        if isinstance(request, dict)
        else getattr(request, "is_eager", False)
    )
    if eager:
        # An eager apply() sends this for the body's own error when it propagates
        # it (throw=True, task_eager_propagates); TrackedTask.apply records that.
        return
    if task_id:
        record_internal_error(sender, task_id, exception)


def on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Log the package's system checks as a ``celery worker`` starts.

    A worker runs Django's checks without showing them (and not at all with
    ``CELERY_SKIP_CHECKS``), so a wrong setting would go unnoticed where it
    matters most. Sent once the worker's logging is set up, before it connects.
    """
    from django_taskqueue.checks import log_checks

    log_checks()


def on_process_shutdown(**kwargs: Any) -> None:
    """Store the ends this process queued, and what an outage held, before it exits.

    Sent in a pool child that exits (``worker_process_shutdown``) and in the
    worker's main process (``worker_shutdown``); waits up to ``HELD_RECORDS_WAIT``
    seconds, and says what it could not store.
    """
    from django_taskqueue import holding

    holding.drain()


def connect() -> None:
    """Connect the receivers (idempotent: Celery signals dedupe by ``dispatch_uid``)."""
    signals.task_revoked.connect(
        on_task_revoked, dispatch_uid="django_taskqueue.task_revoked", weak=False
    )
    signals.task_postrun.connect(
        on_task_postrun, dispatch_uid="django_taskqueue.task_postrun", weak=False
    )
    signals.task_internal_error.connect(
        on_task_internal_error, dispatch_uid="django_taskqueue.task_internal_error", weak=False
    )
    signals.celeryd_after_setup.connect(
        on_worker_start, dispatch_uid="django_taskqueue.worker_start", weak=False
    )
    signals.worker_process_shutdown.connect(
        on_process_shutdown, dispatch_uid="django_taskqueue.process_shutdown", weak=False
    )
    signals.worker_shutdown.connect(
        on_process_shutdown, dispatch_uid="django_taskqueue.worker_shutdown", weak=False
    )
