"""The worker-side request class used by :class:`~django_taskqueue.TrackedTask`.

Hard time limits and lost worker processes are handled in the worker's main
process: the child running the task is gone, so the task's own hooks never run.
"""

from __future__ import annotations

from typing import Any

from billiard.exceptions import WorkerLostError
from celery.exceptions import Reject
from celery.worker.request import Request
from django.db import close_old_connections

from django_taskqueue import lifecycle
from django_taskqueue.conf import conf
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import EventType


class TrackedRequest(Request):
    """Records hard time limits and lost workers for tracked tasks."""

    def _tracking(self) -> bool:
        return bool(getattr(self.task, "track", True)) and conf.ENABLED

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self._tracking():
            return  # a soft limit raises inside the task and fails it there
        from django_taskqueue.tracked import record_safely

        close_old_connections()
        record_safely(
            "hard time limit",
            self.id,
            lifecycle.mark_failed,
            self.id,
            error_message=f"hard time limit ({timeout}s) exceeded",
            error_code="TimeLimitExceeded",
            evidence=True,
            hold=True,
        )

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # unwrap ExceptionWithTraceback
        if not self._tracking():
            return
        if isinstance(exc, Reject):
            self._record_reject(exc)
            return
        if not isinstance(exc, WorkerLostError):
            return
        from django_taskqueue.tracked import record_safely

        close_old_connections()
        task = self.task
        redelivered = bool(task.acks_late and task.reject_on_worker_lost) or bool(
            getattr(task, "retry_on_worker_lost", False)
        )
        if redelivered:
            record_safely(
                "lost worker",
                self.id,
                lifecycle.record_event,
                EventType.REQUEUED,
                "the worker process was lost; the message goes back to the queue: "
                + error_message_for(exc),
                {"error_code": "worker_lost"},
                celery_task_id=self.id,
                hold=True,
            )
            return
        record_safely(
            "lost worker",
            self.id,
            lifecycle.mark_failed,
            self.id,
            error_message=error_message_for(exc),
            error_code="worker_lost",
            hold=True,
        )

    def _record_reject(self, exc: Reject) -> None:
        """Record a task that rejected its message (Celery's :exc:`~celery.exceptions.Reject`).

        Without requeue the message is gone and Celery stores ``FAILURE``: the
        task is ``failed`` with ``error_code="rejected"``. With requeue the
        message goes back to the queue: a ``requeued`` event, and its next
        delivery starts the task again.
        """
        from django_taskqueue.tracked import REJECTED, record_safely, rejection_message

        close_old_connections()
        message = rejection_message(exc)
        if getattr(exc, "requeue", False):  # not in Celery's type stubs
            record_safely(
                "reject",
                self.id,
                lifecycle.record_event,
                EventType.REQUEUED,
                f"{message}; it goes back to the queue",
                {"error_code": REJECTED},
                celery_task_id=self.id,
                hold=True,
            )
            return
        record_safely(
            "reject",
            self.id,
            lifecycle.mark_failed,
            self.id,
            error_message=message,
            error_code=REJECTED,
            evidence=True,
            hold=True,
        )
