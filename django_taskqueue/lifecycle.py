"""Every write of a tracked task's life, in one place.

Plain functions over the three models: the task base class, the API, the admin,
the management commands and the housekeeping tasks all call these, and they can
be tested without Celery.

Each state change is a single conditional ``UPDATE ... WHERE status IN (...)``
(see :data:`~django_taskqueue.status.ALLOWED_FROM`), written together with its
event in one transaction. A late or repeated call (a ``started`` after
``completed``, a second delivery of the same message, a cancel racing the
completion) therefore changes nothing but an ``ignored`` event: there is one
final state, and a trace of every attempt.

These functions raise on database errors; :class:`~django_taskqueue.TrackedTask`
wraps its calls so that a failure to record never fails the user's task.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.core.signals import setting_changed
from django.db import IntegrityError, models, transaction
from django.db.models import Avg, Case, Count, Exists, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_taskqueue.canvas import UPSTREAM_FAILED, Step
from django_taskqueue.conf import conf
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress

# Kept importable from here for callers written before progress.py existed.
from django_taskqueue.progress import ProgressBuffer, ProgressWrite, percent_from  # noqa: F401
from django_taskqueue.serialization import (
    SecretKeys,
    error_message_for,
    redact,
    redact_text,
    secret_keys,
    to_json,
)
from django_taskqueue.signals import task_progress, task_status_changed
from django_taskqueue.status import (
    ACTIVE_STATUSES,
    ALLOWED_FROM,
    BULK_TASK_NAME,
    PRESUMED_FAILURES,
    TERMINAL_STATUSES,
    EventType,
    TaskStatus,
    can_move,
)

if TYPE_CHECKING:
    from django_taskqueue.tracked import TrackedTask

logger = logging.getLogger(__name__)

#: ``error_code`` of a task whose message could not be sent.
PUBLISH_FAILED = "publish_failed"
#: ``error_code`` of a task whose publish timed out after the broker may have taken it.
PUBLISH_UNKNOWN = "publish_unknown"
#: The TaskLog fields of a task's place in a Celery canvas (see :mod:`django_taskqueue.canvas`).
LINEAGE_FIELDS = ("celery_parent_id", "celery_root_id", "celery_group_id")


#: What a new run of an id that had finished clears: the earlier outcome
#: (kept in the ``reopened`` event), so the row shows the run in progress.
_FRESH_RUN: dict[str, Any] = {
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


# --- helpers ---------------------------------------------------------------------


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


def _stored_event(
    event: tuple[str, str, Mapping[str, Any] | None],
) -> tuple[str, str, Mapping[str, Any] | None]:
    kind, message, meta = event
    return kind, stored_text(message), stored_json(dict(meta or {}))


#: TaskLog columns of text that may quote a secret (an exception's message).
_TEXT_COLUMNS = ("error_message", "traceback", "progress_message")


def _stored_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    stored = dict(updates)
    if "result" in stored:
        stored["result"] = stored_json(stored["result"])
    for name in _TEXT_COLUMNS:
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


def _events(pk: uuid.UUID, *events: tuple[str, str, Mapping[str, Any] | None]) -> None:
    rows = [
        TaskEventLog(
            task_id=pk,
            event_type=kind,
            message=stored_text(message)[:10_000],
            metadata=stored_json(dict(meta or {})),
        )
        for kind, message, meta in events
    ]
    if len(rows) == 1:
        rows[0].save(force_insert=True)
    else:
        TaskEventLog.objects.bulk_create(rows)


def _announce(outcome: Outcome, event_type: str, previous_status: str | None = None) -> None:
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
def _recording() -> Iterator[None]:
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


def _rows(celery_task_id: str | None, pk: uuid.UUID | None) -> models.QuerySet[TaskLog]:
    if pk is not None:
        return TaskLog.objects.filter(pk=pk)
    if celery_task_id is None:
        raise ValueError("need a celery_task_id or a pk")
    return TaskLog.objects.filter(celery_task_id=celery_task_id)


def _transition(
    target: str,
    *,
    celery_task_id: str | None = None,
    pk: uuid.UUID | None = None,
    updates: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
    guard: Q | None = None,
    before: Callable[[uuid.UUID], None] | None = None,
    parent_id: uuid.UUID | None = None,
    parent_known: bool = False,
    evidence: bool = False,
    again: bool = False,
) -> Outcome:
    """Move one task to ``target`` if its status allows it, with its event.

    ``before`` runs in the same transaction when the change applies (it writes
    the last buffered progress, so that lands with the final status). A caller
    that knows the row's ``parent_id`` (``parent_known``) saves the query that
    looks for a bulk parent to update. With ``evidence`` (a worker delivered or
    ran the task) a presumed failure is superseded too (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`); with ``again`` (a
    worker is starting the task) any status but ``cancelled`` gives way: see
    :func:`_run_again`. Those rare cases cost a few more statements, never
    the common one.
    """
    updates, event = _stored_updates(updates), _stored_event(event)
    with _recording():
        qs = _rows(celery_task_id, pk)
        allowed = Q(status__in=ALLOWED_FROM[target])
        if guard is not None:
            allowed &= guard
        changed = bool(qs.filter(allowed).update(status=target, **orm_updates(updates)))
        if changed and pk is None:
            pk, parent_id = qs.values_list("pk", "parent_id").get()
            parent_known = True
        if changed:
            assert pk is not None
            if before is not None:
                before(pk)
            _events(pk, event)
            outcome = Outcome(True, target, pk, parent_id, parent_known)
        else:
            outcome = _refused(
                target,
                _rows(celery_task_id, pk),
                updates=updates,
                event=event,
                guard=guard,
                before=before,
                evidence=evidence,
                again=again,
            )
            if outcome.pk is None:
                return outcome
            pk, parent_id, parent_known = outcome.pk, outcome.parent_id, outcome.parent_known
    _announce(outcome, event[0])
    if (
        outcome.applied
        and target in TERMINAL_STATUSES
        and pk is not None
        and (parent_id is not None or not parent_known)
    ):
        # A bulk child that ended updates its parent once this commits, in a
        # transaction of its own (see _update_parent); one UPDATE when there is none.
        child_pk = pk
        transaction.on_commit(lambda: _update_parent(child_pk, target))
    return outcome


def _refused(
    target: str,
    rows: models.QuerySet[TaskLog],
    *,
    updates: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
    guard: Q | None,
    before: Callable[[uuid.UUID], None] | None,
    evidence: bool,
    again: bool = False,
) -> Outcome:
    """The conditional update matched nothing: supersede a presumed failure, or say why not.

    Returns the superseding change when there was one (see
    :func:`_supersede_presumed`); otherwise leaves an ``ignored`` event and
    returns the status that refused the change (no pk when there is no row).
    """
    row = rows.values_list("pk", "status", "error_code").first()
    if row is None:
        return Outcome(False, None, None)
    pk, status, error_code = row
    if evidence and can_move(status, target, error_code=error_code, evidence=True):
        superseded = _supersede_presumed(pk, target, updates, event, guard, before)
        if superseded is not None:
            return superseded
    if again and status != TaskStatus.CANCELLED:
        started = _run_again(pk, updates, event)
        if started is not None:
            return started
        status = TaskStatus.CANCELLED  # cancelled meanwhile
    kind, message, meta = event
    _events(
        pk,
        (
            EventType.IGNORED,
            f"{kind} ignored: the task is {status}",
            {"attempted": kind, "status": status, "message": message, **(meta or {})},
        ),
    )
    return Outcome(False, status, pk)


def _supersede_presumed(
    pk: uuid.UUID,
    target: str,
    updates: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
    guard: Q | None,
    before: Callable[[uuid.UUID], None] | None,
) -> Outcome | None:
    """Replace a presumed failure with what a worker saw; ``None`` when it no longer applies.

    The row is locked and re-checked (still a presumed failure, not run again
    since, and ``guard``), then moved to ``target`` with a ``reopened`` event
    that keeps the presumption, followed by the transition's own event. A bulk
    parent that its children's presumed failures had failed is reopened with
    its child, and aggregated again when the child ends.
    """
    rerun = TaskLog.objects.filter(retry_of=OuterRef("pk"))
    rows = TaskLog.objects.filter(
        pk=pk, status=TaskStatus.FAILED, error_code__in=PRESUMED_FAILURES
    ).exclude(Exists(rerun))
    if guard is not None:
        rows = rows.filter(guard)
    with transaction.atomic():
        found = (
            rows.select_for_update()
            .values_list("parent_id", "error_code", "error_message", "completed_at")
            .first()
        )
        if found is None:
            return None
        parent_id, code, presumption, presumed_at = found
        changes = dict(updates)
        if target == TaskStatus.PROCESSING:
            changes.update(completed_at=None, error_message="", error_code="", traceback="")
        TaskLog.objects.filter(pk=pk).update(status=target, **orm_updates(changes))
        if before is not None:
            before(pk)
        if target == TaskStatus.PROCESSING:
            why = f"delivered again after it was presumed failed ({code})"
        else:
            why = f"the worker reported its end after it was presumed failed ({code})"
        _events(
            pk,
            (
                EventType.REOPENED,
                why,
                {
                    "presumed_error_code": code,
                    "presumed_error_message": presumption,
                    "presumed_at": presumed_at,
                    "status": target,
                },
            ),
            event,
        )
        if parent_id is not None and target != TaskStatus.FAILED:
            _reopen_parent(parent_id, child_pk=pk)
    return Outcome(True, target, pk, parent_id, parent_known=True)


def _earlier_outcome(
    status: str, error_code: str, error_message: str, completed_at: datetime | None
) -> dict[str, Any]:
    """The ``reopened`` event's record of the outcome a new run clears from the row."""
    return {
        "previous_status": status,
        "previous_error_code": error_code,
        "previous_error_message": error_message,
        "previous_completed_at": completed_at,
    }


def _run_again(
    pk: uuid.UUID,
    updates: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
) -> Outcome | None:
    """Record a start of a task whose row is not waiting for one; ``None`` if it was cancelled.

    Celery runs an id again legitimately (a re-applied frozen chord, a reused
    signature, an eager ``apply()`` of an id that ran, a message delivered
    twice, an older attempt redelivered), and the body runs: the record says
    so instead of ignoring it. A row that had finished is reopened
    (``reopened`` event with the earlier outcome, then ``started``), its
    outcome cleared for the new run; a row already running (or waiting for a
    newer attempt) gets a ``started`` event marked ``again``, and keeps its
    newest attempt number. A cancelled row is never started: the worker
    revokes the message (see :meth:`~django_taskqueue.TrackedTask.before_start`).
    """
    with transaction.atomic():
        found = (
            TaskLog.objects.filter(pk=pk)
            .exclude(status=TaskStatus.CANCELLED)
            .select_for_update()
            .values_list(
                "status",
                "error_code",
                "error_message",
                "completed_at",
                "attempt",
                "worker",
                "parent_id",
            )
            .first()
        )
        if found is None:
            return None
        status, code, message, completed_at, attempt, worker, parent_id = found
        changes = dict(updates)
        kind, text, meta = event
        meta = {**(meta or {}), "again": True, "previous_status": status}
        events: list[tuple[str, str, Mapping[str, Any] | None]] = []
        if status in TERMINAL_STATUSES:
            now = changes.get("heartbeat_at") or timezone.now()
            changes.update(_FRESH_RUN, started_at=now)
            events.append(
                (
                    EventType.REOPENED,
                    f"run again by a worker after it was {status}",
                    _earlier_outcome(status, code, message, completed_at),
                )
            )
        else:
            changes["attempt"] = max(int(attempt or 0), int(changes.get("attempt") or 0))
            meta["previous_worker"] = worker
            text = f"{text} again" if status == TaskStatus.PROCESSING else text
        events.append((kind, text, meta))
        TaskLog.objects.filter(pk=pk).update(status=TaskStatus.PROCESSING, **orm_updates(changes))
        _events(pk, *(_stored_event(e) for e in events))
    return Outcome(True, TaskStatus.PROCESSING, pk, parent_id, parent_known=True)


def _reopen_parent(parent_pk: uuid.UUID, *, child_pk: uuid.UUID) -> None:
    """Reopen a bulk parent failed by its children, one of which turned out not to be lost."""
    reopened = TaskLog.objects.filter(
        pk=parent_pk, status=TaskStatus.FAILED, error_code="children_failed"
    ).update(
        status=TaskStatus.PROCESSING,
        completed_at=None,
        error_message="",
        error_code="",
        heartbeat_at=timezone.now(),
    )
    if reopened:
        _events(
            parent_pk,
            (
                EventType.REOPENED,
                "a child presumed failed was delivered again",
                {"child": child_pk, "presumed_error_code": "children_failed"},
            ),
        )


def _progress_writer(write: ProgressWrite | None) -> Callable[[uuid.UUID], None] | None:
    if write is None:
        return None

    def run(pk: uuid.UUID) -> None:
        _write_progress_rows(pk, write)

    return run


def _write_progress_rows(pk: uuid.UUID, write: ProgressWrite) -> None:
    if not write.history:
        return
    data = stored_json(write.data)
    TaskProgress.objects.create(
        task_id=pk, progress=write.progress, message=stored_text(write.message)[:255], data=data
    )
    _events(pk, (EventType.PROGRESS, write.message, {"progress": write.progress}))


# --- creating ----------------------------------------------------------------------


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


def create_task_log(
    celery_task_id: str,
    *,
    task_name: str = "",
    status: str = TaskStatus.PENDING,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    event_message: str = "",
    event_metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> TaskLog:
    """Record a task about to be published, with its ``created`` event.

    Args:
        celery_task_id: the id the message will carry.
        task_name: the Celery task name.
        status: ``pending``, or ``retrying`` for a run started again.
        args: positional arguments (stored JSON-safe and redacted).
        kwargs: keyword arguments (likewise).
        event_message: the message of the ``created`` event.
        event_metadata: the metadata of the ``created`` event.
        **fields: other :class:`~django_taskqueue.models.TaskLog` fields
            (``owner``, ``task_type``, ``tags``, ``metadata``, ``file_*``,
            ``parent``, ``retry_of``, ``retry_count``, ``max_retries``, ``queue``,
            and the canvas ids ``celery_parent_id``, ``celery_root_id``, ``celery_group_id``).
            ``metadata`` is stored redacted like the arguments (the task does
            not receive it, so it does not set ``args_redacted``).
    """
    stored_args, stored_kwargs, redacted = stored_arguments(args, kwargs)
    if "metadata" in fields:
        fields["metadata"] = stored_json(dict(fields["metadata"] or {}))
    metadata = stored_json(dict(event_metadata or {}))
    if redacted:
        metadata["redacted"] = True
    log = TaskLog(
        celery_task_id=celery_task_id,
        task_name=task_name,
        status=status,
        args=stored_args,
        kwargs=stored_kwargs,
        args_redacted=redacted,
        **fields,
    )
    event = (EventType.CREATED, stored_text(event_message), metadata)
    with _recording():
        log.save(force_insert=True)
        _events(log.pk, event)
    return log


def record_publish(celery_task_id: str, **create: Any) -> TaskLog:
    """Record a message about to be published: a new row, or the same id published again.

    Celery publishes an id again legitimately: a frozen chord re-applied, a
    reused signature, ``Task.replace`` (the replacement takes the replaced
    task's id). The second publish is recorded on the id's row instead of
    failing on its unique constraint: see :func:`mark_republished`.

    Args:
        celery_task_id: the id the message will carry.
        **create: as :func:`create_task_log`.
    """
    try:
        return create_task_log(celery_task_id, **create)
    except IntegrityError:
        log = mark_republished(
            celery_task_id,
            task_name=create.get("task_name", ""),
            args=create.get("args"),
            kwargs=create.get("kwargs"),
        )
        if log is None:
            raise
        return log


def mark_republished(
    celery_task_id: str,
    *,
    task_name: str = "",
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> TaskLog | None:
    """Record that an id that has a row is being published again.

    The row takes the new message's task name and arguments (a replacement
    task's, for ``Task.replace``). A row that had finished (``completed``,
    ``failed``) goes back to ``pending`` with a ``reopened`` event that keeps
    its earlier outcome; its new run is recorded as usual. A cancelled row
    stays cancelled: the worker that gets the message revokes it. An active
    row keeps its status, with a ``republished`` event.

    Returns:
        The row, or ``None`` when there is none.
    """
    stored_args, stored_kwargs, redacted = stored_arguments(args, kwargs)
    with transaction.atomic():
        row = (
            TaskLog.objects.filter(celery_task_id=celery_task_id)
            .select_for_update()
            .values_list("pk", "status", "task_name", "error_code", "error_message", "completed_at")
            .first()
        )
        if row is None:
            return None
        pk, status, old_name, code, message, completed_at = row
        changes: dict[str, Any] = {
            "args": stored_args,
            "kwargs": stored_kwargs,
            "args_redacted": redacted,
        }
        if task_name:
            changes["task_name"] = task_name[:255]
        named = f" as {task_name}" if task_name and task_name != old_name else ""
        meta = {"task_name": task_name, "previous_task_name": old_name, "status": status}
        event: tuple[str, str, Mapping[str, Any] | None]
        if status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            changes.update(_FRESH_RUN, status=TaskStatus.PENDING, started_at=None)
            event = (
                EventType.REOPENED,
                f"published again{named} after it was {status}",
                {**meta, **_earlier_outcome(status, code, message, completed_at)},
            )
        elif named and status == TaskStatus.PROCESSING:
            event = (EventType.REPUBLISHED, f"replaced by {task_name}", meta)
        else:
            event = (EventType.REPUBLISHED, f"published again{named}", meta)
        TaskLog.objects.filter(pk=pk).update(**changes)
        _events(pk, _stored_event(event))
    return TaskLog.objects.get(pk=pk)


def find_by_idempotency_key(owner: Any, key: str) -> TaskLog | None:
    """The task started with ``key`` by ``owner`` (``None``: a system task), if any."""
    rows = TaskLog.objects.filter(idempotency_key=key)
    rows = rows.filter(owner__isnull=True) if owner is None else rows.filter(owner=owner)
    return rows.first()


def create_idempotent_task_log(
    celery_task_id: str, *, idempotency_key: str, owner: Any = None, **kwargs: Any
) -> tuple[TaskLog, bool]:
    """:func:`create_task_log` once per ``(owner, idempotency_key)``.

    Returns:
        ``(row, created)``: the new row, or the one an earlier call with the
        same key and owner created (also when two calls race: the unique
        constraint lets one insert win, the other reads its row).
    """
    existing = find_by_idempotency_key(owner, idempotency_key)
    if existing is not None:
        return existing, False
    try:
        log = create_task_log(
            celery_task_id, owner=owner, idempotency_key=idempotency_key, **kwargs
        )
    except IntegrityError:
        existing = find_by_idempotency_key(owner, idempotency_key)
        if existing is None:
            raise
        return existing, False
    return log, True


# --- the worker side ----------------------------------------------------------------


def mark_started(
    celery_task_id: str,
    *,
    attempt: int = 0,
    worker: str = "",
    defaults: Mapping[str, Any] | None = None,
) -> Outcome:
    """Record that a worker started running the task (attempt ``attempt``).

    When no row exists yet (the task was sent without TrackedTask, or the
    producer's transaction has not committed), the row is created here from
    ``defaults``; on PostgreSQL the insert waits for the producer's
    transaction, and when that commits first the normal transition applies.

    A start for an older attempt than the newest recorded, or for a task
    already running or finished, changes nothing and leaves an ``ignored``
    event. A cancelled task reports ``status == "cancelled"``: the caller
    must not run it. A task whose failure was only presumed (``lost``,
    ``worker_lost``: see :data:`~django_taskqueue.status.PRESUMED_FAILURES`)
    is reopened instead: the delivery proves the presumption wrong, so it
    runs, with a ``reopened`` event before its ``started`` one.

    The ``queue`` and the canvas ids (:data:`LINEAGE_FIELDS`) of ``defaults``
    fill those columns where they are still empty: the message is
    authoritative, but never overwrites what the producer recorded.
    """
    now = timezone.now()
    updates: dict[str, Any] = {
        "started_at": KeepFirst(now),
        "heartbeat_at": now,
        "worker": worker[:255],
        "attempt": attempt,
        "next_retry_at": None,
    }
    queue = str((defaults or {}).get("queue") or "")[:255]
    if queue:
        # The producer knows the queue only when it was named in the call; a
        # queue chosen by task_routes is first known here, from the delivery.
        updates["queue"] = FillEmpty(queue)
    for name in LINEAGE_FIELDS:
        # The message's canvas ids fill what the producer could not know (a
        # task sent untracked, or by a canvas from outside any task).
        value = str((defaults or {}).get(name) or "")[:255]
        if value:
            updates[name] = FillEmpty(value)
    event = (
        EventType.STARTED,
        f"started on {worker}" if worker else "started",
        {"attempt": attempt, "worker": worker},
    )
    task_name = str((defaults or {}).get("task_name") or "")[:255]
    if task_name:
        # A replacement (Task.replace) runs under the replaced task's id.
        updates["task_name"] = task_name
    transition = {
        "celery_task_id": celery_task_id,
        "updates": updates,
        "event": event,
        "guard": Q(attempt__lte=attempt),
        # A delivery is a worker's evidence: it reopens a presumed failure.
        "evidence": True,
        # And the body runs: a start is recorded whatever the row says, but
        # for a cancelled task (which the caller revokes instead of running).
        "again": True,
    }
    outcome = _transition(TaskStatus.PROCESSING, **transition)  # type: ignore[arg-type]
    if outcome.status is not None:
        return outcome
    values = dict(defaults or {})
    stored_args, stored_kwargs, redacted = stored_arguments(
        values.pop("args", None), values.pop("kwargs", None)
    )
    try:
        with _recording():
            log = TaskLog(
                celery_task_id=celery_task_id,
                status=TaskStatus.PROCESSING,
                started_at=now,
                heartbeat_at=now,
                worker=worker[:255],
                attempt=attempt,
                args=stored_args,
                kwargs=stored_kwargs,
                args_redacted=redacted,
                **values,
            )
            log.save(force_insert=True)
            _events(
                log.pk,
                (
                    EventType.CREATED,
                    "recorded by the worker: the task was sent untracked or not yet committed",
                    {"source": "worker"},
                ),
                event,
            )
    except IntegrityError:
        # The producer's row appeared (committed) meanwhile: apply the transition to it.
        return _transition(TaskStatus.PROCESSING, **transition)  # type: ignore[arg-type]
    outcome = Outcome(True, TaskStatus.PROCESSING, log.pk, log.parent_id, parent_known=True)
    _announce(outcome, EventType.STARTED)
    return outcome


def record_progress(
    write: ProgressWrite,
    *,
    celery_task_id: str | None = None,
    pk: uuid.UUID | None = None,
) -> Outcome:
    """Write a progress value (and its history row when ``write.history``).

    Refreshes the heartbeat. Writes only while the task is active; for a
    cancelled task it returns ``status == "cancelled"`` so the caller can stop.
    """
    qs = _rows(celery_task_id, pk)
    now = timezone.now()
    with _recording():
        changed = qs.filter(status__in=ALLOWED_FROM[TaskStatus.COMPLETED]).update(
            progress=write.progress,
            progress_message=stored_text(write.message)[:255],
            heartbeat_at=now,
        )
        if not changed:
            row = qs.values_list("pk", "status").first()
            return Outcome(False, None, None) if row is None else Outcome(False, row[1], row[0])
        if pk is None:
            pk = qs.values_list("pk", flat=True).get()
        _write_progress_rows(pk, write)
    if task_progress.has_listeners(TaskLog):
        task_log_id, cid = pk, celery_task_id

        def send() -> None:
            task_progress.send(
                sender=TaskLog,
                task_log_id=task_log_id,
                celery_task_id=cid,
                progress=write.progress,
                message=write.message,
                data=write.data,
            )

        transaction.on_commit(send)
    return Outcome(True, None, pk)


def status_of(*, celery_task_id: str | None = None, pk: uuid.UUID | None = None) -> str | None:
    """The task's current status (one ``SELECT``), or ``None`` when there is no row."""
    status: str | None = _rows(celery_task_id, pk).values_list("status", flat=True).first()
    return status


def record_event(
    event_type: str,
    message: str = "",
    metadata: Mapping[str, Any] | None = None,
    *,
    celery_task_id: str | None = None,
    pk: uuid.UUID | None = None,
) -> bool:
    """Add an event without changing the status; ``False`` when there is no row."""
    if pk is None:
        pk = _rows(celery_task_id, None).values_list("pk", flat=True).first()
        if pk is None:
            return False
    _events(pk, (event_type, message, metadata))
    return True


def touch(*, celery_task_id: str | None = None, pk: uuid.UUID | None = None) -> bool:
    """Refresh the heartbeat of a running task (one ``UPDATE``); ``True`` if it is still active."""
    qs = _rows(celery_task_id, pk).filter(status__in=ALLOWED_FROM[TaskStatus.COMPLETED])
    return bool(qs.update(heartbeat_at=timezone.now()))


def mark_retrying(
    celery_task_id: str,
    *,
    pk: uuid.UUID | None = None,
    next_attempt: int,
    reason: str = "",
    error_code: str = "",
    eta: datetime | None = None,
    progress: ProgressWrite | None = None,
) -> Outcome:
    """Record that attempt ``next_attempt`` (Celery's ``retries``) was scheduled."""
    now = timezone.now()
    updates = {
        "retry_count": F("retry_count") + 1,
        "attempt": next_attempt,
        "next_retry_at": eta,
        "error_message": reason,
        "error_code": error_code[:128],
        "heartbeat_at": now,
    }
    meta = {"attempt": next_attempt, "reason": reason, "error_code": error_code, "eta": eta}
    return _transition(
        TaskStatus.RETRYING,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(EventType.RETRIED, reason or "retry scheduled", meta),
        guard=Q(attempt__lt=next_attempt),
        before=_progress_writer(progress),
    )


def mark_completed(
    celery_task_id: str,
    *,
    pk: uuid.UUID | None = None,
    result: Any = None,
    progress: ProgressWrite | None = None,
    parent_id: uuid.UUID | None = None,
    parent_known: bool = False,
    error_message: str = "",
    error_code: str = "",
    evidence: bool = False,
) -> Outcome:
    """Record success.

    ``result`` must already be JSON-safe: see
    :func:`~django_taskqueue.serialization.encode_result`. ``error_message``
    and ``error_code`` are a warning kept with the success (e.g.
    ``result_not_stored``); by default an earlier error is cleared. With
    ``evidence`` (the worker that ran the task reports it) the success also
    supersedes a presumed failure (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`).
    """
    now = timezone.now()
    updates = {
        "completed_at": now,
        "heartbeat_at": now,
        "progress": 100,
        "result": result,
        "next_retry_at": None,
        "error_message": error_message,
        "error_code": error_code[:128],
    }
    if progress is not None:
        updates["progress_message"] = progress.message[:255]
    return _transition(
        TaskStatus.COMPLETED,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(EventType.COMPLETED, "completed", None),
        before=_progress_writer(progress),
        parent_id=parent_id,
        parent_known=parent_known,
        evidence=evidence,
    )


def mark_failed(
    celery_task_id: str | None = None,
    *,
    pk: uuid.UUID | None = None,
    error_message: str,
    error_code: str = "",
    traceback: str = "",
    progress: ProgressWrite | None = None,
    event_type: str = EventType.FAILED,
    metadata: Mapping[str, Any] | None = None,
    parent_id: uuid.UUID | None = None,
    parent_known: bool = False,
    guard: Q | None = None,
    evidence: bool = False,
) -> Outcome:
    """Record failure, with the error's message, code (exception class) and traceback.

    ``guard`` narrows the conditional update further (the housekeeping
    detectors re-check their own condition in it). With ``evidence`` (the
    worker that ran the task reports the failure) it also supersedes a
    presumed failure (see :data:`~django_taskqueue.status.PRESUMED_FAILURES`).
    """
    now = timezone.now()
    updates = {
        "completed_at": now,
        "error_message": error_message,
        "error_code": error_code[:128],
        "traceback": traceback,
        "next_retry_at": None,
    }
    meta = {"error_code": error_code, **(metadata or {})}
    return _transition(
        TaskStatus.FAILED,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(event_type, error_message, meta),
        guard=guard,
        before=_progress_writer(progress),
        parent_id=parent_id,
        parent_known=parent_known,
        evidence=evidence,
    )


def mark_publish_failed(pk: uuid.UUID, *, error_message: str) -> Outcome:
    """Record that the task's message could not be sent: ``failed``, ``publish_failed``.

    The row's idempotency key is released (kept in the event), so that the
    caller's retry with the same key starts the task instead of returning
    this row: nothing of it was queued.
    """
    key = TaskLog.objects.filter(pk=pk).values_list("idempotency_key", flat=True).first()
    now = timezone.now()
    return _transition(
        TaskStatus.FAILED,
        pk=pk,
        updates={
            "completed_at": now,
            "error_message": error_message,
            "error_code": PUBLISH_FAILED,
            "next_retry_at": None,
            "idempotency_key": None,
        },
        event=(
            EventType.FAILED,
            error_message,
            {"error_code": PUBLISH_FAILED, **({"idempotency_key": key} if key else {})},
        ),
    )


def mark_publish_unknown(pk: uuid.UUID, *, error_message: str) -> bool:
    """Record that the broker did not confirm the task's message in time.

    The message may be queued (the broker took the bytes and then did not
    answer), so the task is not failed: a worker that gets the message runs
    it and records it as usual. The row keeps its status, with
    ``error_code="publish_unknown"`` and a ``publish_unknown`` event, until a
    worker starts it or the lost-task detection (``LOST_AFTER``) fails it.
    A task a worker has already started is left alone.

    Returns:
        Whether the row was marked.
    """
    with _recording():
        marked = bool(
            TaskLog.objects.filter(
                pk=pk,
                status__in=(TaskStatus.PENDING, TaskStatus.RETRYING),
                started_at__isnull=True,
            ).update(error_message=error_message, error_code=PUBLISH_UNKNOWN)
        )
        if marked:
            _events(pk, (EventType.PUBLISH_UNKNOWN, error_message, {"error_code": PUBLISH_UNKNOWN}))
    return marked


def mark_cancelled(
    celery_task_id: str | None = None,
    *,
    pk: uuid.UUID | None = None,
    reason: str = "",
    event_type: str = EventType.CANCELLED,
    metadata: Mapping[str, Any] | None = None,
    error_code: str = "cancelled",
) -> Outcome:
    """Record that the task was cancelled, and why (``error_code``: why, for machines)."""
    now = timezone.now()
    updates = {
        "cancelled_at": now,
        "completed_at": now,
        "error_message": reason,
        "error_code": error_code,
        "next_retry_at": None,
    }
    return _transition(
        TaskStatus.CANCELLED,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(event_type, reason or "cancelled", {"reason": reason, **(metadata or {})}),
    )


def record_revoked(
    celery_task_id: str, *, terminated: bool, expired: bool, signum: Any = None
) -> Outcome:
    """Record a revoke the worker carried out (the ``task_revoked`` signal).

    An expired message fails the task (``error_code="expired"``); any other
    revoke cancels it. When the task was already cancelled through
    :func:`cancel`, only the worker's confirmation is added as an event.
    """
    meta = {"terminated": terminated, "expired": expired, "signum": str(signum) if signum else None}
    if expired:
        return mark_failed(
            celery_task_id,
            error_message="the message expired before a worker ran it",
            error_code="expired",
            event_type=EventType.REVOKED,
            metadata=meta,
        )
    qs = TaskLog.objects.filter(celery_task_id=celery_task_id)
    row = qs.values_list("pk", "status").first()
    if row is not None and row[1] == TaskStatus.CANCELLED:
        message = (
            "the worker terminated the task" if terminated else "the worker discarded the message"
        )
        _events(row[0], (EventType.REVOKED, message, meta))
        return Outcome(False, row[1], row[0])
    reason = "terminated by a revoke" if terminated else "revoked"
    return mark_cancelled(
        celery_task_id, reason=reason, event_type=EventType.REVOKED, metadata=meta
    )


# --- what people ask for (API, admin, commands) ----------------------------------------


def _actor(user: Any) -> dict[str, Any]:
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return {"by_user_id": user.pk, "by_username": user.get_username()}


def cancel(
    task_log: TaskLog,
    *,
    reason: str = "",
    user: Any = None,
    terminate: bool = False,
    revoke: bool = True,
) -> Outcome:
    """Cancel a task: record it at once, then revoke the Celery id.

    The ``cancelled`` status is written before the revoke is sent, so the
    record is right even when the broker is unreachable; a worker that
    later receives the message skips it (TrackedTask checks the row before
    running), and a running task stops at its next progress or cancel check.

    Args:
        task_log: the task.
        reason: why; stored as the error message and in the event.
        user: who asked (recorded in the event).
        terminate: also kill a running task's process (Celery's
            ``revoke(terminate=True)``; prefork pool only).
        revoke: send Celery's revoke (off in tests of the record alone).

    Raises:
        TransitionRefused: the task already finished.
    """
    outcome = mark_cancelled(
        pk=task_log.pk, reason=reason, metadata={**_actor(user), "terminate": terminate}
    )
    if not outcome.applied:
        raise TransitionRefused(
            f"the task is already {outcome.status} and cannot be cancelled",
            status=outcome.status or "",
        )
    # A bulk parent takes its unfinished children with it.
    children = _end_children(
        task_log.pk,
        TaskStatus.CANCELLED,
        from_statuses=ACTIVE_STATUSES,
        message=f"the bulk task was cancelled{f': {reason}' if reason else ''}",
        error_code="cancelled",
        metadata={**_actor(user), "terminate": terminate, "parent": task_log.pk},
    )
    if revoke:
        celery_task_ids = [task_log.celery_task_id, *children]
        transaction.on_commit(lambda: send_revoke(celery_task_ids, terminate=terminate))
    task_log.refresh_from_db()
    return outcome


def send_revoke(celery_task_id: str | list[str], *, terminate: bool = False) -> bool:
    """Broadcast Celery's revoke for one id or a list; log (don't raise) if the broker is down."""
    from celery import current_app

    try:
        current_app.control.revoke(celery_task_id, terminate=terminate)
    except Exception:
        logger.warning("Could not send the revoke for task %s", celery_task_id, exc_info=True)
        return False
    return True


def check_rerun(task_log: TaskLog, *, force: bool = False) -> TrackedTask:
    """Refuse what can never be run again, without writing anything.

    :func:`rerun` calls it first (and checks the status again under its lock);
    a caller may call it before its own checks to answer with this reason.

    Returns:
        The registered :class:`~django_taskqueue.TrackedTask` that would run.

    Raises:
        TransitionRefused: the task is a bulk parent, completed, active
            without ``force``, its arguments were redacted or not stored, or
            its Celery task is not a registered TrackedTask in this process
            (once its module has been looked for as a worker would:
            :func:`django_taskqueue.registry.tracked_task`).
    """
    from django.core.exceptions import ValidationError

    from django_taskqueue.registry import tracked_task

    status = task_log.status
    if task_log.task_name == BULK_TASK_NAME:
        raise TransitionRefused(
            "a bulk task is not run again as a whole: retry its failed or cancelled children",
            status=status,
        )
    _check_rerun_status(status, force)
    if task_log.args_redacted:
        raise TransitionRefused(
            "the task's arguments were redacted when stored, so it cannot be run again with them",
            status=status,
        )
    try:
        return tracked_task(task_log.task_name)
    except ValidationError as exc:
        raise TransitionRefused(" ".join(exc.messages), status=status) from None


def _check_rerun_status(status: str, force: bool) -> None:
    if status == TaskStatus.COMPLETED:
        raise TransitionRefused(
            "the task completed; only failed or cancelled tasks can be retried", status=status
        )
    if status not in (TaskStatus.FAILED, TaskStatus.CANCELLED) and not force:
        raise TransitionRefused(
            f"the task is {status}; pass force to retry a task that is stuck", status=status
        )


def _lineage_root(task_log: TaskLog) -> uuid.UUID:
    """The first run of the task's lineage (``retry_of`` followed back to its start).

    ``retry_of`` is written once, when a run is created, so the walk needs no lock.
    """
    root, up, seen = task_log.pk, task_log.retry_of_id, {task_log.pk}
    while up is not None and up not in seen:
        seen.add(up)
        row = TaskLog.objects.filter(pk=up).values_list("pk", "retry_of_id").first()
        if row is None:
            break
        root, up = row
    return root


def _active_run(root: uuid.UUID, exclude: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """An active run of the lineage that starts at ``root``, other than ``exclude``."""
    level = list(TaskLog.objects.filter(pk=root).values_list("pk", "status"))
    seen = {root}
    while level:
        for pk, status in level:
            if pk != exclude and status in ACTIVE_STATUSES:
                return pk, status
        runs = TaskLog.objects.filter(retry_of__in=[pk for pk, _ in level])
        level = [row for row in runs.values_list("pk", "status") if row[0] not in seen]
        seen.update(pk for pk, _ in level)
    return None


def rerun_options(task_log: TaskLog, now: datetime | None = None) -> dict[str, Any]:
    """The publish options of a re-run: the original's queue, priority and ETA.

    The ETA is kept only while it is still ahead: a re-run never starts
    before the original was due, and one whose time has passed runs now.
    """
    now = now or timezone.now()
    options: dict[str, Any] = {}
    if task_log.queue:
        options["queue"] = task_log.queue
    if task_log.priority is not None:
        options["priority"] = task_log.priority
    if task_log.eta is not None and task_log.eta > now:
        options["eta"] = task_log.eta
    return options


def rerun(
    task_log: TaskLog,
    *,
    force: bool = False,
    user: Any = None,
    terminate: bool = False,
    file: Mapping[str, Any] | None = None,
    **publish: Any,
) -> TaskLog:
    """Run a failed or cancelled task again, with the same arguments.

    The new run is a new TaskLog (a new Celery id: a revoked id stays revoked
    in the workers) that starts in ``retrying``, points at the original through
    ``retry_of`` and counts ``retry_count = original.retry_count + 1``. The
    original keeps its final status; both rows get a ``rerun`` event. It is
    published like the original (:func:`rerun_options`: queue, priority, and
    the ETA while that is still ahead).

    One lineage (a task, its re-runs, their re-runs) has at most one active
    run: while one is pending, processing or retrying, a re-run of any of them
    is refused. The check and the new row are written under a lock on the
    lineage's first row, so two requests at once give one re-run and one
    refusal; the message is published once that transaction has committed.

    Args:
        task_log: the task to run again.
        force: also allow a task that is still ``pending``, ``processing`` or
            ``retrying`` (stuck after its worker died): it is first cancelled
            with ``error_code="superseded"`` and its Celery id revoked, so a
            worker that still holds it stops it (see ``terminate``).
        user: who asked (recorded in the events).
        terminate: with ``force``, revoke with ``terminate=True``: the worker
            kills the process running the superseded task (prefork pool).
            Otherwise it stops at its next progress report or cancel check.
        file: the file the new run works on instead of the recorded one, as
            ``{"file_path", "file_name", "file_size"}`` (the API passes the
            path it re-resolved inside ``ALLOWED_FILE_ROOTS``); it replaces the
            first positional argument and the file fields.
        **publish: more ``apply_async`` options (e.g. a retry policy).

    Raises:
        TransitionRefused: see :func:`check_rerun`; also when another run of
            the lineage is active, or a forced task completed meanwhile.
    """
    task = check_rerun(task_log, force=force)
    actor = _actor(user)
    args = list(task_log.args)
    file_fields = {
        "file_path": task_log.file_path,
        "file_name": task_log.file_name,
        "file_size": task_log.file_size,
    }
    if file is not None:
        args[:1] = [file["file_path"]]
        file_fields = {key: file[key] for key in file_fields}
    new_id = str(uuid.uuid4())
    options = rerun_options(task_log)
    superseded = False
    with transaction.atomic():
        root = _lineage_root(task_log)
        # Every re-run of the lineage takes this lock first: they run one at a time.
        list(TaskLog.objects.select_for_update().filter(pk=root).values_list("pk"))
        status = TaskLog.objects.filter(pk=task_log.pk).values_list("status", flat=True).first()
        if status is None:
            raise TransitionRefused("the task no longer exists", status=task_log.status)
        _check_rerun_status(status, force)
        active = _active_run(root, exclude=task_log.pk)
        if active is not None:
            raise TransitionRefused(
                f"a run of this task is still {active[1]} ({active[0]}): wait for it to end, "
                "or retry that one with force if it is stuck",
                status=status,
            )
        if status in ACTIVE_STATUSES:
            outcome = mark_cancelled(
                pk=task_log.pk,
                reason=f"superseded: run again as {new_id}",
                error_code="superseded",
                metadata={**actor, "terminate": terminate, "rerun_celery_task_id": new_id},
            )
            if not outcome.applied and outcome.status == TaskStatus.COMPLETED:
                raise TransitionRefused("the task completed meanwhile", status=TaskStatus.COMPLETED)
            superseded = outcome.applied
        new_log = create_task_log(
            new_id,
            task_name=task.name,
            status=TaskStatus.RETRYING,
            args=args,
            kwargs=task_log.kwargs,
            event_message="run again",
            event_metadata={"rerun_of": task_log.pk, **actor},
            owner_id=task_log.owner_id,
            task_type=task_log.task_type,
            tags=task_log.tags,
            metadata=task_log.metadata,
            parent_id=task_log.parent_id,
            retry_of_id=task_log.pk,
            retry_count=task_log.retry_count + 1,
            max_retries=task.max_retries,
            queue=task_log.queue,
            eta=options.get("eta"),
            priority=task_log.priority,
            **file_fields,
        )
        _events(
            task_log.pk,
            (EventType.RERUN, f"run again as {new_id}", {"rerun_id": new_log.pk, **actor}),
        )
        if superseded:
            old_id = task_log.celery_task_id
            transaction.on_commit(lambda: send_revoke(old_id, terminate=terminate))
    try:
        # The row is committed: a worker that takes the message at once finds it.
        task.apply_async(
            args, task_log.kwargs, task_id=new_id, taskqueue_recorded=True, **{**options, **publish}
        )
    except Exception as exc:
        message = f"could not publish the task: {error_message_for(exc)}"
        # A publish that timed out after the broker may have taken the message
        # (``PublishError.sent is None``) is not a failure: the re-run may run.
        if getattr(exc, "sent", False) is None:
            if mark_publish_unknown(new_log.pk, error_message=message):
                new_log.error_code = PUBLISH_UNKNOWN
        else:
            mark_publish_failed(new_log.pk, error_message=message)
            new_log.status, new_log.error_code = TaskStatus.FAILED, PUBLISH_FAILED
        raise
    task_log.refresh_from_db()
    return new_log


# --- canvas: steps Celery failed without publishing them ----------------------------------


def record_unpublished(
    steps: Sequence[Step],
    *,
    upstream_id: str,
    upstream_name: str,
    root_id: str,
    reason: str,
    fields_of: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[TaskLog]:
    """Record canvas steps that will never run because the step ``upstream_id`` failed.

    When a step of a chain (or a member of a chord header) fails, Celery's
    result backend marks the steps after it (or the chord's body) failed
    without ever publishing them, so no worker records them. Each gets a
    ``failed`` row here, with ``error_code="upstream_failed"``, a message
    naming the failed step, and its lineage (the failed step as its parent).
    The rows and their events are written in bulk (an ``INSERT`` per 500); a step
    that already has a row keeps it as it is, whatever its status.

    Args:
        steps: from :func:`django_taskqueue.canvas.unpublished_steps`.
        upstream_id: the Celery id of the step that failed.
        upstream_name: its task name.
        root_id: the canvas's root (for steps whose signature names none).
        reason: what the failed step raised (``"ValueError: bad input"``).
        fields_of: other TaskLog fields for a task name (``task_type``, ...).

    Returns:
        The rows written (none for steps that had one).
    """
    if not steps:
        return []
    existing = set(
        TaskLog.objects.filter(
            celery_task_id__in=[step.celery_task_id for step in steps]
        ).values_list("celery_task_id", flat=True)
    )
    now = timezone.now()
    message = stored_text(
        f"Not run: the earlier step {upstream_name}[{upstream_id}] failed ({reason})"
    )[:10_000]
    rows: list[TaskLog] = []
    for step in steps:
        if step.celery_task_id in existing:
            continue
        args, kwargs, redacted = stored_arguments(step.args, step.kwargs)
        rows.append(
            TaskLog(
                celery_task_id=step.celery_task_id,
                task_name=step.task_name[:255],
                status=TaskStatus.FAILED,
                error_message=message,
                error_code=UPSTREAM_FAILED,
                completed_at=now,
                # A microsecond apart, in the order the steps would have run.
                created_at=now + timedelta(microseconds=len(rows)),
                args=args,
                kwargs=kwargs,
                args_redacted=redacted,
                celery_parent_id=upstream_id[:255],
                celery_root_id=(step.root_id or root_id)[:255],
                celery_group_id=step.group_id,
                **(fields_of(step.task_name) if fields_of is not None else {}),
            )
        )
    if not rows:
        return []
    meta = {"error_code": UPSTREAM_FAILED, "upstream": upstream_id}
    with _recording():
        # A step recorded meanwhile (by a concurrent failure of the same canvas)
        # is skipped by the unique Celery id, and gets no events below.
        TaskLog.objects.bulk_create(rows, ignore_conflicts=True, batch_size=_BATCH)
        written = set(
            TaskLog.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", flat=True)
        )
        rows = [row for row in rows if row.pk in written]
        TaskEventLog.objects.bulk_create(
            [
                TaskEventLog(
                    task_id=row.pk,
                    event_type=kind,
                    message=text,
                    metadata=stored_json(event_meta),
                    created_at=now,
                )
                for row in rows
                for kind, text, event_meta in (
                    (
                        EventType.CREATED,
                        "recorded when an earlier step of its canvas failed: never published",
                        {"source": "canvas", "upstream": upstream_id},
                    ),
                    (EventType.FAILED, message, meta),
                )
            ],
            batch_size=_BATCH,
        )
        for row in rows:
            _announce(Outcome(True, TaskStatus.FAILED, row.pk), EventType.FAILED)
    return rows


# --- bulk: a parent row that aggregates its children --------------------------------------


def create_bulk(
    task_name: str,
    files: Sequence[Mapping[str, Any]],
    *,
    task_type: str = "",
    kwargs: Mapping[str, Any] | None = None,
    parallel: bool = True,
    owner: Any = None,
    parent_task_id: str | None = None,
    tags: Sequence[str] | None = None,
    max_retries: int | None = None,
    queue: str = "",
    event_metadata: Mapping[str, Any] | None = None,
) -> tuple[TaskLog, list[TaskLog]]:
    """Record a bulk run: one parent row and one ``pending`` child per file, in one transaction.

    The children (and their ``created`` events) are written with
    ``bulk_create``, so a thousand files cost a handful of queries. The caller
    publishes the children with the Celery ids of the returned rows (a group or
    a chain) and, if that fails, calls :func:`fail_bulk`.

    The parent starts ``processing`` (``started_at`` now); its ``metadata["bulk"]``
    holds ``parallel``, ``files_count`` and the children's task name. The
    children's ``created_at`` are a microsecond apart, in the order of
    ``files``: the order a sequential run follows. When a
    child ends, :func:`_update_parent` updates the parent: see
    :doc:`/api` for the aggregation rule.

    Args:
        task_name: the Celery task each child runs (with the file path as its
            only positional argument).
        files: one mapping per child with ``file_path`` and optionally
            ``file_name`` and ``file_size``.
        task_type: recorded on the parent and the children.
        kwargs: keyword arguments of every child.
        parallel: a group (``True``) or a chain (``False``).
        owner: the user the rows belong to.
        parent_task_id: the parent's Celery id (the group id); a new UUID by default.
        tags: labels of every row.
        max_retries: the children's Celery ``max_retries``.
        queue: the queue the children are sent to.
        event_metadata: metadata of the parent's ``created`` event.

    Returns:
        ``(parent, children)``, the children in the order of ``files``.
    """
    now = timezone.now()
    tag_list = list(tags or [])
    parent_id = parent_task_id or str(uuid.uuid4())
    with transaction.atomic():
        parent = create_task_log(
            parent_id,
            task_name=BULK_TASK_NAME,
            status=TaskStatus.PROCESSING,
            event_message=f"bulk of {len(files)} {task_name} tasks, "
            + ("in parallel" if parallel else "in a chain"),
            event_metadata=event_metadata,
            owner=owner,
            task_type=task_type,
            tags=tag_list,
            metadata={
                "bulk": {"parallel": parallel, "files_count": len(files), "task_name": task_name}
            },
            started_at=now,
            heartbeat_at=now,
            queue=queue,
        )
        children = []
        # The keyword arguments are the same for every child: store them once.
        _, stored_kwargs, kwargs_redacted = stored_arguments(None, kwargs)
        for index, item in enumerate(files):
            path = str(item["file_path"])
            args, _, args_redacted = stored_arguments([path], None)
            redacted = args_redacted or kwargs_redacted
            children.append(
                TaskLog(
                    celery_task_id=str(uuid.uuid4()),
                    task_name=task_name,
                    task_type=task_type,
                    status=TaskStatus.PENDING,
                    queue=queue,
                    file_path=path,
                    file_name=str(item.get("file_name") or os.path.basename(path)),
                    file_size=item.get("file_size"),
                    owner=owner,
                    tags=tag_list,
                    args=args,
                    kwargs=stored_kwargs,
                    args_redacted=redacted,
                    max_retries=max_retries,
                    parent=parent,
                    # A microsecond apart: the run's order, which a sequential run follows.
                    created_at=now + timedelta(microseconds=index),
                )
            )
        TaskLog.objects.bulk_create(children, batch_size=_BATCH)
        TaskEventLog.objects.bulk_create(
            [
                TaskEventLog(
                    task_id=child.pk,
                    event_type=EventType.CREATED,
                    message=f"part of the bulk task {parent.pk}",
                    metadata={"parent": str(parent.pk), "redacted": True}
                    if child.args_redacted
                    else {"parent": str(parent.pk)},
                    created_at=now,
                )
                for child in children
            ],
            batch_size=_BATCH,
        )
    return parent, children


def fail_bulk(parent_pk: uuid.UUID, *, error_message: str, error_code: str) -> Outcome:
    """Fail a bulk run that could not be published: the parent and its pending children."""
    _end_children(
        parent_pk,
        TaskStatus.FAILED,
        from_statuses={TaskStatus.PENDING},
        message=error_message,
        error_code=error_code,
        metadata={"parent": parent_pk},
    )
    return mark_failed(pk=parent_pk, error_message=error_message, error_code=error_code)


_BATCH = 500


def _end_children(
    parent_pk: uuid.UUID,
    target: str,
    *,
    from_statuses: Iterable[str],
    message: str,
    error_code: str,
    metadata: Mapping[str, Any] | None = None,
) -> list[str]:
    """Move a parent's children in ``from_statuses`` to ``target``; return their Celery ids.

    One locked ``SELECT`` (nothing more when there are no such children), then
    batched ``UPDATE``s and events. Used for a cancelled parent, a broken chain
    and a bulk run that could not be published.
    """
    now = timezone.now()
    message = stored_text(message)
    updates: dict[str, Any] = {
        "status": target,
        "completed_at": now,
        "error_message": message,
        "error_code": error_code[:128],
        "next_retry_at": None,
    }
    if target == TaskStatus.CANCELLED:
        updates["cancelled_at"] = now
    event_type = EventType.CANCELLED if target == TaskStatus.CANCELLED else EventType.FAILED
    meta = stored_json(dict(metadata or {}))
    with transaction.atomic():
        rows = list(
            TaskLog.objects.select_for_update()
            .filter(parent_id=parent_pk, status__in=list(from_statuses))
            .values_list("pk", "celery_task_id", "status")
        )
        if not rows:
            return []
        for start in range(0, len(rows), _BATCH):
            batch = [pk for pk, _, _ in rows[start : start + _BATCH]]
            TaskLog.objects.filter(pk__in=batch).update(**updates)
        TaskEventLog.objects.bulk_create(
            [
                TaskEventLog(
                    task_id=pk,
                    event_type=event_type,
                    message=message,
                    metadata={**meta, "previous_status": status},
                )
                for pk, _, status in rows
            ],
            batch_size=_BATCH,
        )
        for pk, _, status in rows:
            _announce(Outcome(True, target, pk), event_type, status)
    return [celery_task_id for _, celery_task_id, _ in rows]


def _update_parent(child_pk: uuid.UUID, child_status: str) -> None:
    """Fold a child's end into its bulk parent (runs after the child's transaction commits).

    For a row without a parent this is one ``UPDATE`` that matches nothing.
    Otherwise the parent row stays locked while its children are counted, so
    two children ending at once cannot both miss being the last one.

    The rule: the parent's progress is the mean of its children's; when no
    child is active any more, the parent is ``completed`` if all completed,
    ``failed`` if any failed, else ``cancelled``. A child that was run again
    counts through its newest run. In a chain, a child that failed or was
    cancelled cancels the children still pending (Celery will not run them).
    """
    parent_of_child = TaskLog.objects.filter(pk=child_pk).values("parent_id")[:1]
    with transaction.atomic():
        touched = TaskLog.objects.filter(
            pk=Subquery(parent_of_child), status__in=list(ACTIVE_STATUSES)
        ).update(heartbeat_at=timezone.now())
        if not touched:
            return
        parent = TaskLog.objects.filter(pk=Subquery(parent_of_child))
        parent_pk, parent_task_id, metadata = parent.values_list(
            "pk", "celery_task_id", "metadata"
        ).get()
        bulk = metadata.get("bulk") if isinstance(metadata, dict) else None
        chained = isinstance(bulk, dict) and bulk.get("parallel") is False
        if chained and child_status != TaskStatus.COMPLETED:
            _end_children(
                parent_pk,
                TaskStatus.CANCELLED,
                from_statuses={TaskStatus.PENDING},
                message="an earlier task in the chain did not complete",
                error_code="chain_broken",
                metadata={"parent": parent_pk, "after": child_pk},
            )
        superseded = TaskLog.objects.filter(parent_id=parent_pk, retry_of__isnull=False).values(
            "retry_of_id"
        )
        stats = (
            TaskLog.objects.filter(parent_id=parent_pk)
            .exclude(pk__in=superseded)
            .aggregate(
                total=Count("pk"),
                active=Count("pk", filter=Q(status__in=list(ACTIVE_STATUSES))),
                completed=Count("pk", filter=Q(status=TaskStatus.COMPLETED)),
                failed=Count("pk", filter=Q(status=TaskStatus.FAILED)),
                cancelled=Count("pk", filter=Q(status=TaskStatus.CANCELLED)),
                progress=Avg("progress"),
            )
        )
        total = stats["total"]
        counts = {key: stats[key] for key in ("total", "completed", "failed", "cancelled")}
        TaskLog.objects.filter(pk=parent_pk).update(
            progress=min(100, round(stats["progress"] or 0)),
            progress_message=f"{total - stats['active']} of {total} tasks ended",
        )
        if stats["active"]:
            return
        if stats["failed"]:
            mark_failed(
                pk=parent_pk,
                error_message=f"{stats['failed']} of {total} tasks failed",
                error_code="children_failed",
                metadata=counts,
            )
        elif stats["cancelled"]:
            mark_cancelled(
                pk=parent_pk,
                reason=f"{stats['cancelled']} of {total} tasks were cancelled",
                metadata=counts,
            )
        else:
            mark_completed(parent_task_id, pk=parent_pk, result=counts)


# --- housekeeping (stuck, lost and re-queued tasks; heartbeats) ---------------------------


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
    return mark_failed(
        pk=pk,
        error_message=error_message,
        error_code="worker_lost",
        event_type=EventType.STALE,
        metadata=metadata,
        guard=_stale_guard(cutoff),
    )


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
        "heartbeat_at": timezone.now(),
    }
    meta = {"error_code": "worker_lost", "attempt": next_attempt, **(metadata or {})}
    return _transition(
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
    return mark_failed(
        pk=pk,
        error_message=error_message,
        error_code="lost",
        event_type=EventType.STALE,
        metadata=metadata,
        guard=Q(status=TaskStatus.PENDING, created_at__lt=created_before),
    )


def touch_many(pks: Sequence[uuid.UUID]) -> int:
    """Refresh the heartbeat of several running tasks in one ``UPDATE``; returns how many."""
    if not pks:
        return 0
    return TaskLog.objects.filter(
        pk__in=list(pks), status__in=ALLOWED_FROM[TaskStatus.COMPLETED]
    ).update(heartbeat_at=timezone.now())
