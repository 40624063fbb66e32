"""Exceptions raised by django_taskqueue."""

from __future__ import annotations

from celery.exceptions import Ignore
from django.core.exceptions import ValidationError


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
    """
