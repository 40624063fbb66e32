"""The conditional-update engine, and every status change it writes.

Each state change is a single conditional ``UPDATE ... WHERE status IN (...)``
(see :data:`~django_taskqueue.status.ALLOWED_FROM`), written together with its
event in one transaction. A late or repeated call (a ``started`` after
``completed``, a second delivery of the same message, a cancel racing the
completion) therefore changes nothing but an ``ignored`` event: there is one
final state, and a trace of every attempt.

A bulk child that ends folds into its parent here too (:func:`update_parent`):
the parent's end is a transition of the same engine, so the two live together.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ParamSpec

from django.db import IntegrityError, models, transaction
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, Subquery

from django_taskqueue.lifecycle.records import (
    BATCH,
    FRESH_RUN,
    LINEAGE_FIELDS,
    PUBLISH_FAILED,
    PUBLISH_UNKNOWN,
    FillEmpty,
    KeepFirst,
    Outcome,
    announce,
    earlier_outcome,
    orm_updates,
    record_time,
    recorded_at,
    recording,
    rows_of,
    stored_arguments,
    stored_event,
    stored_json,
    stored_text,
    stored_updates,
    write_events,
)
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.signals import task_progress
from django_taskqueue.status import (
    ACTIVE_STATUSES,
    ALLOWED_FROM,
    PRESUMED_FAILURES,
    TERMINAL_STATUSES,
    EventType,
    TaskStatus,
    can_move,
)

_P = ParamSpec("_P")


def transition(
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
    run: str = "",
) -> Outcome:
    """Move one task to ``target`` if its status allows it, with its event.

    ``before`` runs in the same transaction when the change applies (it writes
    the last buffered progress, so that lands with the final status). A caller
    that knows the row's ``parent_id`` (``parent_known``) saves the query that
    looks for a bulk parent to update. With ``evidence`` (a worker delivered or
    ran the task) a presumed failure is superseded too (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`); with ``again`` (a
    worker is starting the task) any status but ``cancelled`` gives way: see
    :func:`_run_again`. With ``run`` (the worker's id of the run that ends) an
    end that finds the task ended by another run of it is recorded after that
    one: see :func:`_end_again`. Those rare cases cost a few more statements,
    never the common one.
    """
    updates, event = stored_updates(updates), stored_event(event)
    with recording():
        qs = rows_of(celery_task_id, pk)
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
            write_events(pk, event)
            outcome = Outcome(True, target, pk, parent_id, parent_known)
        else:
            outcome = _refused(
                target,
                rows_of(celery_task_id, pk),
                updates=updates,
                event=event,
                guard=guard,
                before=before,
                evidence=evidence,
                again=again,
                run=run,
            )
            if outcome.pk is None:
                return outcome
            pk, parent_id, parent_known = outcome.pk, outcome.parent_id, outcome.parent_known
    announce(outcome, event[0])
    if (
        outcome.applied
        and target in TERMINAL_STATUSES
        and pk is not None
        and (parent_id is not None or not parent_known)
    ):
        # A bulk child that ended updates its parent once this commits, in a
        # transaction of its own (see update_parent); one UPDATE when there is none.
        child_pk = pk
        transaction.on_commit(lambda: update_parent(child_pk, target))
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
    run: str = "",
) -> Outcome:
    """The conditional update matched nothing: supersede a presumed failure, or say why not.

    Returns the superseding change when there was one (see
    :func:`_supersede_presumed`, :func:`_run_again`, :func:`_end_again`);
    otherwise leaves an ``ignored`` event and returns the status that refused
    the change (no pk when there is no row).
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
    if run and status in _RUN_ENDS and target in _RUN_ENDS:
        ended = _end_again(pk, target, updates, event, before, run)
        if ended is not None:
            return ended
    kind, message, meta = event
    write_events(
        pk,
        (
            EventType.IGNORED,
            f"{kind} ignored: the task is {status}",
            {"attempted": kind, "status": status, "message": message, **(meta or {})},
        ),
    )
    return Outcome(False, status, pk)


def _locked(rows: models.QuerySet[TaskLog], *fields: str) -> tuple[Any, ...] | None:
    """``fields`` of the one row of ``rows``, locked until the transaction ends, or ``None``."""
    found: tuple[Any, ...] | None = rows.select_for_update().values_list(*fields).first()
    return found


def _move_locked(
    pk: uuid.UUID,
    target: str,
    changes: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
    *,
    before: Callable[[uuid.UUID], None] | None = None,
    reopened: tuple[str, Mapping[str, Any]] | None = None,
) -> None:
    """Move a row found by :func:`_locked` to ``target``, with its event.

    The rare ways a task's record changes against its status (a presumed failure
    superseded, a run started or ended again) all end here: ``reopened`` (why,
    and what the row said before) becomes a ``reopened`` event ahead of the
    transition's own, so the trail keeps what the change replaced.
    """
    TaskLog.objects.filter(pk=pk).update(status=target, **orm_updates(changes))
    if before is not None:
        before(pk)
    if reopened is None:
        write_events(pk, event)
    else:
        why, earlier = reopened
        write_events(pk, (EventType.REOPENED, why, earlier), event)


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
        found = _locked(rows, "parent_id", "error_code", "error_message", "completed_at")
        if found is None:
            return None
        parent_id, code, presumption, presumed_at = found
        changes = dict(updates)
        if target == TaskStatus.PROCESSING:
            changes.update(completed_at=None, error_message="", error_code="", traceback="")
            why = f"delivered again after it was presumed failed ({code})"
        else:
            why = f"the worker reported its end after it was presumed failed ({code})"
        presumed = {
            "presumed_error_code": code,
            "presumed_error_message": presumption,
            "presumed_at": presumed_at,
            "status": target,
        }
        _move_locked(pk, target, changes, event, before=before, reopened=(why, presumed))
        if parent_id is not None and target != TaskStatus.FAILED:
            _reopen_parent(parent_id, child_pk=pk)
    return Outcome(True, target, pk, parent_id, parent_known=True)


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
        found = _locked(
            TaskLog.objects.filter(pk=pk).exclude(status=TaskStatus.CANCELLED),
            "status",
            "error_code",
            "error_message",
            "completed_at",
            "attempt",
            "worker",
            "parent_id",
        )
        if found is None:
            return None
        status, code, message, completed_at, attempt, worker, parent_id = found
        changes = dict(updates)
        kind, text, meta = event
        meta = {**(meta or {}), "again": True, "previous_status": status}
        reopened = None
        if status in TERMINAL_STATUSES:
            now = changes.get("heartbeat_at") or record_time()
            changes.update(FRESH_RUN, started_at=now)
            why = f"run again by a worker after it was {status}"
            reopened = (why, earlier_outcome(status, code, message, completed_at))
        else:
            changes["attempt"] = max(int(attempt or 0), int(changes.get("attempt") or 0))
            meta["previous_worker"] = worker
            text = f"{text} again" if status == TaskStatus.PROCESSING else text
        _move_locked(pk, TaskStatus.PROCESSING, changes, (kind, text, meta), reopened=reopened)
    return Outcome(True, TaskStatus.PROCESSING, pk, parent_id, parent_known=True)


#: The ends a run of a task reports: the final statuses but a cancel, which is no run's end.
_RUN_ENDS = TERMINAL_STATUSES - {TaskStatus.CANCELLED}


def _end_again(
    pk: uuid.UUID,
    target: str,
    updates: Mapping[str, Any],
    event: tuple[str, str, Mapping[str, Any] | None],
    before: Callable[[uuid.UUID], None] | None,
    run: str,
) -> Outcome | None:
    """Record the end of a run that finds its task ended by another run; ``None`` if not so.

    Two runs of one id overlap when a message is delivered twice (published
    twice, or redelivered while its first copy runs): both bodies run, and
    both ends are facts. The end that arrives second is recorded after the
    first, as the task's outcome (the last body's), with a ``reopened`` event
    that keeps the earlier one. Only for a run whose start was recorded here
    (its ``started`` event names ``run``), whose attempt is still the task's,
    and when the end on file is another run's: the same run reporting twice,
    or a run older than a newer attempt, is still ignored.
    """
    with transaction.atomic():
        found = _locked(
            TaskLog.objects.filter(pk=pk, status__in=_RUN_ENDS),
            "status",
            "error_code",
            "error_message",
            "completed_at",
            "attempt",
        )
        if found is None:
            return None
        status, code, message, completed_at, attempt = found
        events = TaskEventLog.objects.filter(task_id=pk)
        started = (
            events.filter(event_type=EventType.STARTED, metadata__run=run)
            .values_list("metadata", flat=True)
            .first()
        )
        last_end = (
            events.filter(event_type__in=_RUN_ENDS)
            .order_by("-created_at", "-id")
            .values_list("metadata", flat=True)
            .first()
        )
        if (
            started is None
            or int(started.get("attempt") or 0) < int(attempt or 0)
            or (last_end or {}).get("run") == run
        ):
            return None
        why = f"another run of the task ended after it was {status}"
        earlier = earlier_outcome(status, code, message, completed_at)
        _move_locked(pk, target, updates, event, before=before, reopened=(why, earlier))
    return Outcome(True, target, pk)


def _reopen_parent(parent_pk: uuid.UUID, *, child_pk: uuid.UUID) -> None:
    """Reopen a bulk parent failed by its children, one of which turned out not to be lost."""
    reopened = TaskLog.objects.filter(
        pk=parent_pk, status=TaskStatus.FAILED, error_code="children_failed"
    ).update(
        status=TaskStatus.PROCESSING,
        completed_at=None,
        error_message="",
        error_code="",
        heartbeat_at=record_time(),
    )
    if reopened:
        write_events(
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
        write_progress_rows(pk, write)

    return run


def write_progress_rows(pk: uuid.UUID, write: ProgressWrite) -> None:
    if not write.history:
        return
    data = stored_json(write.data)
    TaskProgress.objects.create(
        task_id=pk,
        created_at=record_time(),
        progress=write.progress,
        message=stored_text(write.message)[:255],
        data=data,
    )
    write_events(pk, (EventType.PROGRESS, write.message, {"progress": write.progress}))


@dataclass(frozen=True)
class Mark:
    """A worker's mark on a task, prepared: a start, a success or a failure.

    What :func:`mark_started`, :func:`mark_completed` and :func:`mark_failed`
    write: :meth:`write` writes it alone, and
    :func:`~django_taskqueue.lifecycle.batch.write_marks` writes many in a few
    statements, with the same outcome. ``at`` is when it happened: its timestamps
    and its event carry it, however late it is stored.
    """

    target: str
    celery_task_id: str | None
    pk: uuid.UUID | None
    updates: Mapping[str, Any]
    event: tuple[str, str, Mapping[str, Any] | None]
    at: datetime
    progress: ProgressWrite | None = None
    parent_id: uuid.UUID | None = None
    parent_known: bool = False
    guard: Q | None = None
    evidence: bool = False
    again: bool = False
    run: str = ""
    #: Applies only while the row's ``attempt`` is at most this (a start of an older
    #: attempt than the newest recorded is refused).
    attempt_at_most: int | None = None
    #: How it is written alone, when that is more than :func:`transition` (a start
    #: creates the row it does not find).
    alone: Callable[[], Outcome] | None = field(default=None, compare=False)

    def write(self) -> Outcome:
        """Write this mark in its own transaction (the engine's :func:`transition`)."""
        if self.alone is not None:
            return self.alone()
        return self.transition()

    def transition(self) -> Outcome:
        """The engine's :func:`transition` for this mark, at its time."""
        guard = self.guard
        if self.attempt_at_most is not None:
            limit = Q(attempt__lte=self.attempt_at_most)
            guard = limit if guard is None else guard & limit
        with recorded_at(self.at):
            return transition(
                self.target,
                celery_task_id=self.celery_task_id,
                pk=self.pk,
                updates=self.updates,
                event=self.event,
                guard=guard,
                before=_progress_writer(self.progress),
                parent_id=self.parent_id,
                parent_known=self.parent_known,
                evidence=self.evidence,
                again=self.again,
                run=self.run,
            )


def starting(
    celery_task_id: str,
    *,
    attempt: int = 0,
    worker: str = "",
    defaults: Mapping[str, Any] | None = None,
    run: str = "",
    pk: uuid.UUID | None = None,
) -> Mark:
    """A worker's start of the task (attempt ``attempt``), prepared: see :func:`mark_started`.

    ``pk``, when the caller has read the row (:func:`row_state`), saves the
    write its look-up by Celery id.

    ``run`` is the worker's id of this run (any string unique to it): its end,
    given the same ``run``, is then recorded even when another run of the task
    ended first (see :func:`mark_completed`).

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
    now = record_time()
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
        {"attempt": attempt, "worker": worker, **({"run": run} if run else {})},
    )
    task_name = str((defaults or {}).get("task_name") or "")[:255]
    if task_name:
        # A replacement (Task.replace) runs under the replaced task's id.
        updates["task_name"] = task_name
    mark = Mark(
        TaskStatus.PROCESSING,
        celery_task_id,
        pk,
        updates,
        event,
        now,
        # A delivery is a worker's evidence: it reopens a presumed failure.
        evidence=True,
        # And the body runs: a start is recorded whatever the row says, but for a
        # cancelled task (which the caller revokes instead of running).
        again=True,
        attempt_at_most=attempt,
    )
    return replace(mark, alone=functools.partial(_start_alone, mark, dict(defaults or {})))


def _start_alone(mark: Mark, defaults: dict[str, Any]) -> Outcome:
    """Write a start; create the row from ``defaults`` when there is none yet."""
    outcome = mark.transition()
    if outcome.status is not None:
        return outcome
    assert mark.celery_task_id is not None
    now, worker, attempt = mark.at, mark.updates["worker"], mark.updates["attempt"]
    values = dict(defaults)
    stored_args, stored_kwargs, redacted = stored_arguments(
        values.pop("args", None), values.pop("kwargs", None)
    )
    try:
        with recording(), recorded_at(now):
            log = TaskLog(
                celery_task_id=mark.celery_task_id,
                status=TaskStatus.PROCESSING,
                created_at=now,
                started_at=now,
                heartbeat_at=now,
                worker=worker,
                attempt=attempt,
                args=stored_args,
                kwargs=stored_kwargs,
                args_redacted=redacted,
                **values,
            )
            log.save(force_insert=True)
            write_events(
                log.pk,
                (
                    EventType.CREATED,
                    "recorded by the worker: the task was sent untracked or not yet committed",
                    {"source": "worker"},
                ),
                mark.event,
            )
    except IntegrityError:
        # The producer's row appeared (committed) meanwhile: apply the transition to it.
        return mark.transition()
    outcome = Outcome(True, TaskStatus.PROCESSING, log.pk, log.parent_id, parent_known=True)
    announce(outcome, EventType.STARTED)
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
    qs = rows_of(celery_task_id, pk)
    now = record_time()
    with recording():
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
        write_progress_rows(pk, write)
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


@dataclass(frozen=True)
class RowState:
    """What one read of a task's row says: its id, its status and its parent."""

    pk: uuid.UUID
    status: str
    parent_id: uuid.UUID | None


def row_state(*, celery_task_id: str | None = None, pk: uuid.UUID | None = None) -> RowState | None:
    """The task's row as it is now (one ``SELECT``), or ``None`` when there is none.

    A worker reads it before a task's body runs: the status says whether the
    task was cancelled, and the id and the parent spare the later writes their
    look-ups.
    """
    found = rows_of(celery_task_id, pk).values_list("pk", "status", "parent_id").first()
    return RowState(*found) if found is not None else None


def status_of(*, celery_task_id: str | None = None, pk: uuid.UUID | None = None) -> str | None:
    """The task's current status (one ``SELECT``), or ``None`` when there is no row."""
    # Not row_state(): a cooperative cancel check (is_cancelled) may run in a
    # task's loop, and the two UUID columns it would convert cost it a third more.
    status: str | None = rows_of(celery_task_id, pk).values_list("status", flat=True).first()
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
        pk = rows_of(celery_task_id, None).values_list("pk", flat=True).first()
        if pk is None:
            return False
    write_events(pk, (event_type, message, metadata))
    return True


def touch(*, celery_task_id: str | None = None, pk: uuid.UUID | None = None) -> bool:
    """Refresh the heartbeat of a running task (one ``UPDATE``); ``True`` if it is still active."""
    qs = rows_of(celery_task_id, pk).filter(status__in=ALLOWED_FROM[TaskStatus.COMPLETED])
    return bool(qs.update(heartbeat_at=record_time()))


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
    now = record_time()
    updates = {
        "retry_count": F("retry_count") + 1,
        "attempt": next_attempt,
        "next_retry_at": eta,
        "error_message": reason,
        "error_code": error_code[:128],
        "heartbeat_at": now,
    }
    meta = {"attempt": next_attempt, "reason": reason, "error_code": error_code, "eta": eta}
    return transition(
        TaskStatus.RETRYING,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(EventType.RETRIED, reason or "retry scheduled", meta),
        guard=Q(attempt__lt=next_attempt),
        before=_progress_writer(progress),
    )


def completion(
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
    run: str = "",
) -> Mark:
    """A success, prepared: see :func:`mark_completed`.

    ``result`` must already be JSON-safe: see
    :func:`~django_taskqueue.serialization.encode_result`. ``error_message``
    and ``error_code`` are a warning kept with the success (e.g.
    ``result_not_stored``); by default an earlier error is cleared. With
    ``evidence`` (the worker that ran the task reports it) the success also
    supersedes a presumed failure (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`). With ``run`` (the id
    its start was recorded with, see :func:`mark_started`) it is recorded
    after the end of another run of the same task: a message delivered twice
    ran twice, and the task's outcome is the last body's.
    """
    now = record_time()
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
    return Mark(
        TaskStatus.COMPLETED,
        celery_task_id,
        pk,
        updates,
        (EventType.COMPLETED, "completed", {"run": run} if run else None),
        now,
        progress=progress,
        parent_id=parent_id,
        parent_known=parent_known,
        evidence=evidence,
        run=run,
    )


def failure(
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
    run: str = "",
) -> Mark:
    """A failure, prepared (see :func:`mark_failed`): the error's message, code and traceback.

    ``guard`` narrows the conditional update further (the housekeeping
    detectors re-check their own condition in it). With ``evidence`` (the
    worker that ran the task reports the failure) it also supersedes a
    presumed failure (see :data:`~django_taskqueue.status.PRESUMED_FAILURES`);
    ``run`` is as for :func:`mark_completed`.
    """
    now = record_time()
    updates = {
        "completed_at": now,
        "error_message": error_message,
        "error_code": error_code[:128],
        "traceback": traceback,
        "next_retry_at": None,
    }
    meta = {"error_code": error_code, **({"run": run} if run else {}), **(metadata or {})}
    return Mark(
        TaskStatus.FAILED,
        celery_task_id,
        pk,
        updates,
        (event_type, error_message, meta),
        now,
        progress=progress,
        parent_id=parent_id,
        parent_known=parent_known,
        guard=guard,
        evidence=evidence,
        run=run,
    )


def _written(prepare: Callable[_P, Mark], name: str, doc: str) -> Callable[_P, Outcome]:
    """The function ``name`` that writes at once what ``prepare`` prepares (same arguments)."""

    def write(*args: _P.args, **kwargs: _P.kwargs) -> Outcome:
        return prepare(*args, **kwargs).write()

    write.__name__ = write.__qualname__ = name
    write.__doc__ = doc
    return write


#: Record that a worker started running the task; the arguments of :func:`starting`.
mark_started = _written(
    starting,
    "mark_started",
    """Record that a worker started running the task (attempt ``attempt``).

    Writes what :func:`starting` prepares, now, in its own transaction: see there
    for the arguments and the rules (a cancelled task reports ``status ==
    "cancelled"``: the caller must not run it).
    """,
)
#: Record success; the arguments of :func:`completion`.
mark_completed = _written(
    completion,
    "mark_completed",
    """Record success: what :func:`completion` prepares (same arguments), written now.""",
)
#: Record failure; the arguments of :func:`failure`.
mark_failed = _written(
    failure,
    "mark_failed",
    """Record failure: what :func:`failure` prepares (same arguments), written now.""",
)


def mark_publish_failed(pk: uuid.UUID, *, error_message: str) -> Outcome:
    """Record that the task's message could not be sent: ``failed``, ``publish_failed``.

    The row's idempotency key is released (kept in the event), so that the
    caller's retry with the same key starts the task instead of returning
    this row: nothing of it was queued.
    """
    key = TaskLog.objects.filter(pk=pk).values_list("idempotency_key", flat=True).first()
    now = record_time()
    return transition(
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
    with recording():
        marked = bool(
            TaskLog.objects.filter(
                pk=pk,
                status__in=(TaskStatus.PENDING, TaskStatus.RETRYING),
                started_at__isnull=True,
            ).update(error_message=error_message, error_code=PUBLISH_UNKNOWN)
        )
        if marked:
            write_events(
                pk, (EventType.PUBLISH_UNKNOWN, error_message, {"error_code": PUBLISH_UNKNOWN})
            )
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
    now = record_time()
    updates = {
        "cancelled_at": now,
        "completed_at": now,
        "error_message": reason,
        "error_code": error_code,
        "next_retry_at": None,
    }
    return transition(
        TaskStatus.CANCELLED,
        celery_task_id=celery_task_id,
        pk=pk,
        updates=updates,
        event=(event_type, reason or "cancelled", {"reason": reason, **(metadata or {})}),
    )


def cancel_with_children(
    pk: uuid.UUID, *, reason: str = "", metadata: Mapping[str, Any] | None = None
) -> tuple[Outcome, list[str]]:
    """Cancel a task and, for a bulk parent, its unfinished children.

    The record half of :func:`django_taskqueue.actions.cancel` (which also
    revokes the Celery ids).

    Returns:
        The task's outcome, and the Celery ids of the children cancelled with
        it (none when the task itself was not cancelled).
    """
    outcome = mark_cancelled(pk=pk, reason=reason, metadata=metadata)
    if not outcome.applied:
        return outcome, []
    children = end_children(
        pk,
        TaskStatus.CANCELLED,
        from_statuses=ACTIVE_STATUSES,
        message=f"the bulk task was cancelled{f': {reason}' if reason else ''}",
        error_code="cancelled",
        metadata={**(metadata or {}), "parent": pk},
    )
    return outcome, children


def record_revoked(
    celery_task_id: str, *, terminated: bool, expired: bool, signum: Any = None
) -> Outcome:
    """Record a revoke the worker carried out (the ``task_revoked`` signal).

    An expired message fails the task (``error_code="expired"``); any other
    revoke cancels it. When the task was already cancelled through
    :func:`~django_taskqueue.actions.cancel`, only the worker's confirmation is added as an event.
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
        write_events(row[0], (EventType.REVOKED, message, meta))
        return Outcome(False, row[1], row[0])
    reason = "terminated by a revoke" if terminated else "revoked"
    return mark_cancelled(
        celery_task_id, reason=reason, event_type=EventType.REVOKED, metadata=meta
    )


def end_children(
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
    now = record_time()
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
        for start in range(0, len(rows), BATCH):
            batch = [pk for pk, _, _ in rows[start : start + BATCH]]
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
            batch_size=BATCH,
        )
        for pk, _, status in rows:
            announce(Outcome(True, target, pk), event_type, status)
    return [celery_task_id for _, celery_task_id, _ in rows]


def update_parent(child_pk: uuid.UUID, child_status: str) -> None:
    """Fold a child's end into its bulk parent (runs after the child's transaction commits).

    For a row without a parent this is one ``UPDATE`` that matches nothing.
    Otherwise the parent row stays locked while its children are counted, so
    two children mark at once cannot both miss being the last one.

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
        ).update(heartbeat_at=record_time())
        if not touched:
            return
        parent = TaskLog.objects.filter(pk=Subquery(parent_of_child))
        parent_pk, parent_task_id, metadata = parent.values_list(
            "pk", "celery_task_id", "metadata"
        ).get()
        bulk = metadata.get("bulk") if isinstance(metadata, dict) else None
        chained = isinstance(bulk, dict) and bulk.get("parallel") is False
        if chained and child_status != TaskStatus.COMPLETED:
            end_children(
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
