"""The status and event vocabulary, and which status may follow which.

This module imports nothing but Django's ``models.TextChoices`` so the
lifecycle rules can be read (and tested) in one place.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TaskStatus(models.TextChoices):
    """The status of a tracked task, as stored and as the API reports it."""

    PENDING = "pending", _("Pending")
    PROCESSING = "processing", _("Processing")
    RETRYING = "retrying", _("Retrying")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class EventType(models.TextChoices):
    """The kind of a :class:`~django_taskqueue.models.TaskEventLog` row."""

    CREATED = "created", _("Created")
    STARTED = "started", _("Started")
    PROGRESS = "progress", _("Progress")
    RETRIED = "retried", _("Retried")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")
    REVOKED = "revoked", _("Revoked by the worker")
    RERUN = "rerun", _("Run again")
    REQUEUED = "requeued", _("Re-queued")
    STALE = "stale", _("Stale")
    IGNORED = "ignored", _("Ignored (late or duplicate)")
    PUBLISH_UNKNOWN = "publish_unknown", _("Publish not confirmed")
    INTERNAL_ERROR = "internal_error", _("Celery error outside the task body")
    REOPENED = "reopened", _("Reopened (run again, or a presumed failure was wrong)")
    REPUBLISHED = "republished", _("Published again (same id)")


#: The ``task_name`` of a bulk parent row (the REST API's ``bulk_create``). No
#: Celery task has this name: the parent is a record, its children are the tasks.
BULK_TASK_NAME = "django_taskqueue.bulk"

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
ACTIVE_STATUSES: frozenset[str] = frozenset(
    {TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.RETRYING}
)

#: For each target status, the statuses a task may be in to move there. Every
#: write in :mod:`django_taskqueue.lifecycle` is ``UPDATE ... WHERE status IN
#: (ALLOWED_FROM[target])``, so a late or duplicated signal cannot move a task
#: backwards and a terminal status, once written, stays.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    TaskStatus.PROCESSING: frozenset({TaskStatus.PENDING, TaskStatus.RETRYING}),
    TaskStatus.RETRYING: frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING}),
    TaskStatus.COMPLETED: ACTIVE_STATUSES,
    TaskStatus.FAILED: ACTIVE_STATUSES,
    TaskStatus.CANCELLED: ACTIVE_STATUSES,
}


#: Error codes of failures that nobody saw happen, only presumed: ``lost`` (no
#: worker, backend or broker structure held the message any more) and
#: ``worker_lost`` (the worker went silent, or its process died). A worker's
#: own evidence supersedes such a presumption: a delivery of the message starts
#: the task again (``processing``, with a ``reopened`` event before its
#: ``started`` one), and the end a worker reports for it is recorded. This is
#: the one way out of a terminal status, and it leads forward in the task's
#: life: the presumption is kept in the ``reopened`` event, the new attempt
#: gets its own events. A task that was run again (``rerun``) meanwhile is not
#: reopened: the re-run is its new attempt.
PRESUMED_FAILURES: frozenset[str] = frozenset({"lost", "worker_lost"})

#: The statuses a presumed failure may move to on a worker's evidence.
SUPERSEDE_PRESUMED: frozenset[str] = frozenset(
    {TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED}
)


def can_move(current: str, target: str, *, error_code: str = "", evidence: bool = False) -> bool:
    """Return whether a task in ``current`` may move to ``target``.

    Args:
        current: the task's status.
        target: the status asked for.
        error_code: the task's error code (it tells a presumed failure).
        evidence: the move comes from a worker that delivered or ran the task
            (see :data:`PRESUMED_FAILURES`).
    """
    if current in ALLOWED_FROM.get(target, frozenset()):
        return True
    return (
        evidence
        and current == TaskStatus.FAILED
        and error_code in PRESUMED_FAILURES
        and target in SUPERSEDE_PRESUMED
    )


class TransitionRefused(Exception):
    """An operation someone asked for is not allowed in the task's current state.

    Raised by the explicit operations in :mod:`django_taskqueue.actions`
    (:func:`~django_taskqueue.actions.cancel`, :func:`~django_taskqueue.actions.rerun`),
    never by the recording that workers do. Importable from
    :mod:`django_taskqueue.exceptions`.

    Attributes:
        status: the status the task was in when the call was refused.
    """

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status
