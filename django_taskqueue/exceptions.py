"""Exceptions raised by django_taskqueue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore
from django.core.exceptions import ValidationError
from kombu.exceptions import EncodeError, OperationalError

# Defined beside the transition rules, so that the lifecycle (which imports no Celery)
# raises it too; importable from here as ever.
from django_taskqueue.status import TransitionRefused

if TYPE_CHECKING:
    from django_taskqueue.models import TaskLog

__all__ = [
    "ArgumentsRefused",
    "CleanupIncomplete",
    "MessageRefused",
    "PublishError",
    "TaskCancelled",
    "TransitionRefused",
    "UnserializableMessage",
]


class TaskCancelled(Ignore):
    """Raised inside a running task whose TaskLog was cancelled.

    :meth:`TrackedTask.update_progress <django_taskqueue.TrackedTask.update_progress>`
    and :meth:`TrackedTask.check_cancelled <django_taskqueue.TrackedTask.check_cancelled>`
    raise it. It subclasses Celery's :class:`~celery.exceptions.Ignore`, so when
    it propagates the worker stops the task cleanly: it is neither failed nor
    retried, and the TaskLog stays ``cancelled``. Catch it only to clean up,
    then re-raise.
    """


class PublishError(OperationalError):
    """A task's message could not be published within ``PUBLISH_TIMEOUT``.

    Raised by :meth:`TrackedTask.submit() <django_taskqueue.TrackedTask.submit>`,
    a tracked ``apply_async()``/``delay()`` and the bulk publishers when the broker
    (or Celery's result backend, which is asked first) could not be reached or
    did not answer in time. It is a kombu ``OperationalError``, which Celery
    raises for an unreachable broker, so ``except OperationalError`` still
    catches it; the original error is its ``__cause__``.

    Attributes:
        sent: ``False`` when the message cannot have gone out (the TaskLog is
            then ``failed`` with ``error_code="publish_failed"``); ``None`` when
            it is unknown (the broker took the bytes but did not answer in
            time: the TaskLog stays ``pending`` with
            ``error_code="publish_unknown"``, and the task runs if the message
            did arrive).
        timeout: the deadline in seconds (``None``: Celery's own retry policy).
        task_log: the TaskLog as recorded, when there is one.
    """

    def __init__(self, message: str, *, sent: bool | None, timeout: float | None = None) -> None:
        super().__init__(message)
        self.sent = sent
        self.timeout = timeout
        self.task_log: TaskLog | None = None


class MessageRefused(ValidationError):
    """A tracked task refused to record and publish a call.

    Raised by :meth:`TrackedTask.apply_async <django_taskqueue.TrackedTask.apply_async>`,
    :meth:`~django_taskqueue.TrackedTask.submit` and
    :meth:`~django_taskqueue.TrackedTask.check_message` **before** anything is
    written or sent: no row is left behind and no worker ever sees the message.
    It is Django's :class:`~django.core.exceptions.ValidationError`, so a form
    or an API can show its message; the REST API answers 400 with it.

    ``code`` says why:

    - ``"arguments"``: the task's signature cannot take these arguments;
    - ``"too_deep"``: an argument nests lists and dicts deeper than ``MESSAGE_MAX_DEPTH``
      (the worker's main process would die pickling it for its pool);
    - ``"too_large"``: the serialised arguments are larger than ``MESSAGE_MAX_BYTES``;
    - ``"unserializable"``: the task's serializer cannot encode the arguments;
    - ``"text"``: a string of the stored ``metadata`` or ``tags`` holds a NUL
      character or a lone surrogate, which no database stores as text.

    Where Celery itself refuses the same call, the error is also the exception
    Celery raises, so code written against Celery keeps working: a refusal
    with code ``"arguments"`` is a :exc:`TypeError` (:exc:`ArgumentsRefused`),
    one with code ``"unserializable"`` a kombu ``EncodeError``
    (:exc:`UnserializableMessage`).
    """


class ArgumentsRefused(MessageRefused, TypeError):
    """The task cannot take these arguments (``code="arguments"``).

    Also a :exc:`TypeError`, which is what Celery raises for such a call.
    """


class UnserializableMessage(MessageRefused, EncodeError):
    """The task's serializer cannot encode the arguments (``code="unserializable"``).

    Also kombu's :exc:`~kombu.exceptions.EncodeError`, which is what Celery
    raises when it cannot serialise a message.
    """


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
