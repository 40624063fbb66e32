"""Exceptions raised by django_taskqueue."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Ignore


class TaskCancelled(Ignore):
    """Raised inside a running task whose TaskLog was cancelled.

    :meth:`TrackedTask.update_progress <django_taskqueue.TrackedTask.update_progress>`
    and :meth:`TrackedTask.check_cancelled <django_taskqueue.TrackedTask.check_cancelled>`
    raise it. It subclasses Celery's :class:`~celery.exceptions.Ignore`, so when
    it propagates the worker stops the task cleanly: it is neither failed nor
    retried, and the TaskLog stays ``cancelled``. Catch it only to clean up,
    then re-raise.
    """


class TransitionRefused(Exception):
    """An operation someone asked for is not allowed in the task's current state.

    Raised by the explicit operations in :mod:`django_taskqueue.lifecycle`
    (:func:`~django_taskqueue.lifecycle.cancel`, :func:`~django_taskqueue.lifecycle.rerun`),
    never by the recording that workers do.

    Attributes:
        status: the status the task was in when the call was refused.
    """

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


class CleanupIncomplete(Exception):
    """A retention run could not delete every task that was due.

    Raised by :func:`~django_taskqueue.housekeeping.purge_finished` (and so by
    the ``django_taskqueue.cleanup`` task, which then fails) when a batch
    failed (a lock wait timed out, the database went away) or due tasks were
    left behind; ``taskqueue_cleanup`` turns it into a non-zero exit. What was
    deleted before stays deleted: the next run continues.

    Attributes:
        result: what the run did before it stopped
            (a :class:`~django_taskqueue.housekeeping.PurgeResult`), when known.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
