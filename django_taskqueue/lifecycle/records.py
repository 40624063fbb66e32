"""What every lifecycle write shares: the outcome, stored values, events, the transaction.

The building blocks of :mod:`~django_taskqueue.lifecycle.transitions`,
:mod:`~django_taskqueue.lifecycle.creation` and the rest of the package: a
:class:`Outcome` for every call, the redaction of what is stored, the event rows,
the ``task_status_changed`` signal after commit, and :func:`recording`, the
transaction a lifecycle write runs in.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.core.signals import setting_changed
from django.db import models, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_taskqueue.conf import conf
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.serialization import SecretKeys, redact, redact_text, secret_keys, to_json
from django_taskqueue.signals import task_status_changed

#: ``error_code`` of a task whose message could not be sent.
PUBLISH_FAILED = "publish_failed"
#: ``error_code`` of a task whose publish timed out after the broker may have taken it.
PUBLISH_UNKNOWN = "publish_unknown"
#: The TaskLog fields of a task's place in a Celery canvas (see :mod:`django_taskqueue.canvas`).
LINEAGE_FIELDS = ("celery_parent_id", "celery_root_id", "celery_group_id")


# The moment a write being stored late happened (see recorded_at); None: now.
_recorded_at: ContextVar[datetime | None] = ContextVar("taskqueue_recorded_at", default=None)


def record_time() -> datetime:
    """The time a lifecycle write records: now, or when the write being stored happened.

    Every timestamp the lifecycle writes (``started_at``, ``completed_at``,
    heartbeats, events, progress rows) comes from here, so a write held through
    a database outage and stored later (see :mod:`django_taskqueue.holding`)
    keeps the time it happened, not the time the database came back.
    """
    return _recorded_at.get() or timezone.now()


@contextmanager
def recorded_at(moment: datetime) -> Iterator[None]:
    """Store the lifecycle writes made inside as having happened at ``moment``."""
    token = _recorded_at.set(moment)
    try:
        yield
    finally:
        _recorded_at.reset(token)


#: What a new run of an id that had finished clears: the earlier outcome
#: (kept in the ``reopened`` event), so the row shows the run in progress.
FRESH_RUN: dict[str, Any] = {
    "completed_at": None,
    "result": None,
    "error_message": "",
    "error_code": "",
    "traceback": "",
    "progress": 0,
    "progress_message": "",
    "next_retry_at": None,
}


@dataclass(frozen=True)
class Outcome:
    """What a lifecycle call did.

    Attributes:
        applied: the change was written.
        status: the task's status afterwards; ``None`` when there is no row.
        pk: the TaskLog's primary key, when there is a row.
    """

    applied: bool
    status: str | None
    pk: uuid.UUID | None = None
    #: The row's parent, when ``parent_known`` (read along with the pk).
    parent_id: uuid.UUID | None = None
    parent_known: bool = False


# --- values as stored (the settings' secret keys, read live) ---------------------------


@functools.cache
def _secrets() -> tuple[SecretKeys, str]:
    """The secret keys (``REDACT_KEYS`` + ``REDACT_EXTRA_KEYS``) and ``REDACTED_VALUE``.

    Every recorded transition redacts its values, so this is kept between calls
    (reading and lower-casing the settings cost more than the redaction) and
    forgotten whenever ``DJANGO_TASKQUEUE`` changes (``override_settings``).
    """
    terms = conf.REDACT_KEYS + conf.REDACT_EXTRA_KEYS
    return secret_keys(terms), conf.REDACTED_VALUE


def _forget_secrets(*, setting: str, **kwargs: Any) -> None:
    if setting == "DJANGO_TASKQUEUE":
        _secrets.cache_clear()


setting_changed.connect(_forget_secrets)


def stored_json(value: Any) -> Any:
    """``value`` as any JSON column stores it: JSON-safe, secrets redacted.

    Every JSON the lifecycle writes goes through here or :func:`stored_arguments`
    (metadata, results, progress data, event metadata), so what the admin and
    the API show never holds a secret; what the task receives is unchanged.
    """
    value = to_json(value)
    if not value or not isinstance(value, (dict, list, str)):
        return value
    keys, replacement = _secrets()
    return redact(value, keys, replacement)[0]


def stored_text(text: str) -> str:
    """A message, error or traceback as stored: credentials in URLs masked."""
    if "://" not in text:
        return text
    keys, replacement = _secrets()
    return redact_text(text, keys, replacement)[0]


def stored_arguments(
    args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> tuple[list[Any], dict[str, Any], bool]:
    """Args and kwargs as stored: JSON-safe, secrets redacted (per settings).

    Returns:
        ``(args, kwargs, redacted)``; empty when ``STORE_ARGS`` is off.
    """
    if not conf.STORE_ARGS:
        return [], {}, False
    keys, replacement = _secrets()
    safe_args, args_changed = redact(to_json(list(args or ())), keys, replacement)
    safe_kwargs, kwargs_changed = redact(to_json(dict(kwargs or {})), keys, replacement)
    return safe_args, safe_kwargs, args_changed or kwargs_changed


def stored_event(
    event: tuple[str, str, Mapping[str, Any] | None],
) -> tuple[str, str, Mapping[str, Any] | None]:
    """An event ``(type, message, metadata)`` as stored: message and metadata redacted."""
    kind, message, meta = event
    return kind, stored_text(message), stored_json(dict(meta or {}))


#: TaskLog columns of text that may quote a secret (an exception's message).
TEXT_COLUMNS = ("error_message", "traceback", "progress_message")


def stored_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """A transition's column updates as stored: the result and the texts redacted."""
    stored = dict(updates)
    if "result" in stored:
        stored["result"] = stored_json(stored["result"])
    for name in TEXT_COLUMNS:
        if isinstance(stored.get(name), str):
            stored[name] = stored_text(stored[name])
    return stored


@dataclass(frozen=True)
class KeepFirst:
    """An update that sets the column only while it is NULL (``COALESCE(col, value)``)."""

    value: Any


@dataclass(frozen=True)
class FillEmpty:
    """An update that sets a text column only while it is empty."""

    value: str


def orm_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """``updates`` for ``QuerySet.update()``: the markers above become ORM expressions."""
    out: dict[str, Any] = {}
    for name, value in updates.items():
        if isinstance(value, KeepFirst):
            column = cast("models.Field[Any, Any]", TaskLog._meta.get_field(name))
            out[name] = Coalesce(F(name), Value(value.value), output_field=column)
        elif isinstance(value, FillEmpty):
            out[name] = Case(When(**{name: ""}, then=Value(value.value)), default=F(name))
        else:
            out[name] = value
    return out


def event_row(
    pk: uuid.UUID, event: tuple[str, str, Mapping[str, Any] | None], at: datetime
) -> TaskEventLog:
    """An unsaved event row ``(type, message, metadata)`` of the task, redacted, as of ``at``."""
    kind, message, meta = event
    return TaskEventLog(
        task_id=pk,
        created_at=at,
        event_type=kind,
        message=stored_text(message)[:10_000],
        metadata=stored_json(dict(meta or {})),
    )


def write_events(pk: uuid.UUID, *events: tuple[str, str, Mapping[str, Any] | None]) -> None:
    """Insert the task's events ``(type, message, metadata)``, redacted, in one statement."""
    at = record_time()
    rows = [event_row(pk, event, at) for event in events]
    if len(rows) == 1:
        rows[0].save(force_insert=True)
    else:
        TaskEventLog.objects.bulk_create(rows)


def announce(outcome: Outcome, event_type: str, previous_status: str | None = None) -> None:
    """Send :data:`task_status_changed` once the transaction commits, if anyone listens."""
    if not outcome.applied or outcome.pk is None or not task_status_changed.has_listeners(TaskLog):
        return
    pk, status = outcome.pk, outcome.status

    def send() -> None:
        task_log = TaskLog.objects.filter(pk=pk).first()
        if task_log is not None:
            task_status_changed.send(
                sender=TaskLog,
                task_log=task_log,
                status=status,
                previous_status=previous_status,
                event_type=event_type,
            )

    transaction.on_commit(send)


_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"


@contextmanager
def recording() -> Iterator[None]:
    """A transaction for recording, committed without waiting for the disk when allowed.

    On PostgreSQL, unless ``SYNCHRONOUS_COMMIT`` is on, a transaction this
    module owns (not one of the caller's) commits with ``synchronous_commit``
    off: the commit returns before the WAL is flushed, which takes the fsync
    (milliseconds on most disks) out of every task's path. A database *server*
    crash can lose the last fraction of a second of records, never corrupt or
    reorder them; the stale-task detection then finds tasks left ``processing``.
    ``SET LOCAL`` lasts until the transaction ends: the session, and the
    host's next transaction, are untouched (which a pooler in transaction mode
    also requires).
    """
    connection = transaction.get_connection()
    owned = not connection.in_atomic_block
    with transaction.atomic():
        if owned and connection.vendor == "postgresql" and not conf.SYNCHRONOUS_COMMIT:
            with connection.cursor() as cursor:
                cursor.execute(_ASYNC_COMMIT)
        yield


def rows_of(celery_task_id: str | None, pk: uuid.UUID | None) -> models.QuerySet[TaskLog]:
    """The task's row as a queryset, by primary key when given, else by Celery id."""
    if pk is not None:
        return TaskLog.objects.filter(pk=pk)
    if celery_task_id is None:
        raise ValueError("need a celery_task_id or a pk")
    return TaskLog.objects.filter(celery_task_id=celery_task_id)


def earlier_outcome(
    status: str, error_code: str, error_message: str, completed_at: datetime | None
) -> dict[str, Any]:
    """The ``reopened`` event's record of the outcome a new run clears from the row."""
    return {
        "previous_status": status,
        "previous_error_code": error_code,
        "previous_error_message": error_message,
        "previous_completed_at": completed_at,
    }


#: Rows per statement in the bulk writes.
BATCH = 500
