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
    )


def connect() -> None:
    """Connect the receivers (idempotent: Celery signals dedupe by ``dispatch_uid``)."""
    signals.task_revoked.connect(
        on_task_revoked, dispatch_uid="django_taskqueue.task_revoked", weak=False
    )
