"""Many tasks' starts and ends in a few statements, with the outcome each would have alone.

A worker process that runs tasks faster than it can write their marks one by one
(four or five statements and a commit each) hands them to its recorder thread
(:mod:`django_taskqueue.holding`), which writes what queued meanwhile with
:func:`write_marks`, in one transaction, in waves of at most one mark per task
(a short task's start and end are in the same batch):

1. one ``SELECT ... FOR UPDATE`` of the rows (their status, parent and
   attempt), which holds them until the commit, so nothing moves them between
   the look and the write;
2. for the marks the status allows, one ``UPDATE`` per kind of mark (started,
   completed, failed), the values that differ between rows as ``CASE``
   expressions;
3. one ``INSERT`` of their events (and the progress rows of those that carry
   buffered progress).

A mark the plain engine would treat specially — its row refuses it (ended by
another run, cancelled, a presumed failure to supersede, an older attempt), has
no row (a start creates it), has a guard — is written afterwards by the engine itself
(:meth:`~django_taskqueue.lifecycle.transitions.Mark.write`), so every rule of
:mod:`~django_taskqueue.lifecycle.transitions` holds for it unchanged. The
signals are those of the engine: ``task_status_changed`` after the commit, and a
bulk child's parent folded in after it.
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Field, Value, When
from django.db.models.expressions import BaseExpression
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact

from django_taskqueue.lifecycle.records import (
    FillEmpty,
    KeepFirst,
    Outcome,
    announce,
    event_row,
    recorded_at,
    recording,
    stored_event,
    stored_updates,
)
from django_taskqueue.lifecycle.transitions import (
    Mark,
    update_parent,
    write_progress_rows,
)
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import ALLOWED_FROM, TERMINAL_STATUSES, TaskStatus


def write_marks(marks: Sequence[Mark]) -> list[Outcome]:
    """Write ``marks``, in their order; return each one's outcome.

    The marks are taken in waves, each with at most one step of a task: a mark,
    or a start and the end that follows it (a short task's two marks in one
    batch), written together as the engine would write them one after the other.

    Raises:
        DatabaseError: as the single writes would; nothing of the batch is
            written then (the caller may hold and retry all of it).
    """
    outcomes: list[Outcome | None] = [None] * len(marks)
    alone: list[int] = []
    with recording():
        pks = _pks(marks)
        waiting = list(range(len(marks)))
        # A task one of whose marks the engine writes has its later marks written
        # by the engine too, after it: in their order.
        by_engine: set[uuid.UUID] = set()
        while waiting:
            wave: dict[uuid.UUID, list[int]] = {}
            later: list[int] = []
            for n in waiting:
                pk = pks[n]
                if pk is None or pk in by_engine:
                    alone.append(n)
                elif pk not in wave:
                    wave[pk] = [n]
                elif len(wave[pk]) == 1 and _ends_a_start(marks[wave[pk][0]], marks[n]):
                    wave[pk].append(n)
                else:
                    later.append(n)
            refused, put_off = _write_wave(marks, wave, outcomes)
            alone.extend(refused)
            by_engine.update(pk for pk in (pks[n] for n in refused) if pk is not None)
            waiting = sorted([*put_off, *later])
    for n in sorted(alone):
        outcomes[n] = marks[n].write()
    return [outcome or Outcome(False, None, None) for outcome in outcomes]


def _ends_a_start(first: Mark, then: Mark) -> bool:
    """Whether ``then`` ends the run ``first`` starts (then both are written at once)."""
    return (
        first.target == TaskStatus.PROCESSING
        and then.target in TERMINAL_STATUSES
        and first.target in ALLOWED_FROM[then.target]
        and then.guard is None
        and then.attempt_at_most is None
    )


def _write_wave(
    marks: Sequence[Mark], wave: Mapping[uuid.UUID, list[int]], outcomes: list[Outcome | None]
) -> tuple[list[int], list[int]]:
    """Write the steps of ``wave`` (one per task) that need no engine.

    Returns:
        The marks the engine must write, and those put off to the next wave (the
        end of a start that is the engine's).
    """
    if not wave:
        return [], []
    rows = {
        pk: (status, parent_id, attempt)
        for pk, status, parent_id, attempt in TaskLog.objects.select_for_update()
        .filter(pk__in=list(wave))
        .values_list("pk", "status", "parent_id", "attempt")
    }
    groups: dict[str, dict[uuid.UUID, tuple[list[int], dict[str, Any]]]] = defaultdict(dict)
    alone: list[int] = []
    put_off: list[int] = []
    for pk, step in wave.items():
        first, row = marks[step[0]], rows.get(pk)
        updates = {}
        for n in step:
            updates.update(stored_updates(marks[n].updates))
        if (
            row is None
            or first.guard is not None
            or row[0] not in ALLOWED_FROM[first.target]
            or (first.attempt_at_most is not None and row[2] > first.attempt_at_most)
            or not _plain(updates)
        ):
            alone.append(step[0])
            put_off.extend(step[1:])
            continue
        target = marks[step[-1]].target
        groups[target + "|" + ",".join(sorted(updates))][pk] = (step, updates)
    events: list[TaskEventLog] = []
    for group in groups.values():
        target = marks[next(iter(group.values()))[0][-1]].target
        _update_many(target, {pk: updates for pk, (_, updates) in group.items()})
        for pk, (step, _) in group.items():
            parent_id = rows[pk][1]
            for n in step:
                mark = marks[n]
                event = stored_event(mark.event)
                events.append(event_row(pk, event, mark.at))
                if mark.progress is not None:
                    with recorded_at(mark.at):
                        write_progress_rows(pk, mark.progress)
                outcome = Outcome(True, mark.target, pk, parent_id, parent_known=True)
                outcomes[n] = outcome
                announce(outcome, event[0])
            if parent_id is not None and target in TERMINAL_STATUSES:
                transaction.on_commit(functools.partial(update_parent, pk, target))
    TaskEventLog.objects.bulk_create(events)
    return alone, put_off


def _pks(marks: Sequence[Mark]) -> list[uuid.UUID | None]:
    """Each end's row: its pk, or found by its Celery id (one query for all that need it)."""
    wanted = [e.celery_task_id for e in marks if e.pk is None and e.celery_task_id]
    found: Mapping[str, uuid.UUID] = {}
    if wanted:
        found = dict(
            TaskLog.objects.filter(celery_task_id__in=wanted).values_list("celery_task_id", "pk")
        )
    return [e.pk if e.pk is not None else found.get(e.celery_task_id or "") for e in marks]


_PK: Field[Any, Any] = TaskLog._meta.pk


def _plain(updates: Mapping[str, Any]) -> bool:
    """Whether every update is a value or a marker (an expression is the engine's to write)."""
    return not any(isinstance(value, BaseExpression) for value in updates.values())


def _update_many(target: str, rows: Mapping[uuid.UUID, Mapping[str, Any]]) -> None:
    """Move ``rows`` to ``target`` in one UPDATE: a column's shared value as is, else a CASE."""
    columns = next(iter(rows.values())).keys()
    values: dict[str, Any] = {}
    for name in columns:
        field: Field[Any, Any] = TaskLog._meta.get_field(name)  # type: ignore[assignment]
        column = {pk: updates[name] for pk, updates in rows.items()}
        first = next(iter(column.values()))
        if name == "heartbeat_at":
            # A sign of life, not an event's time: the newest of the batch does for all
            # (one value, not a CASE of one per row).
            values[name] = max(column.values())
        elif isinstance(first, KeepFirst):
            value = _per_row({pk: v.value for pk, v in column.items()}, field)
            values[name] = Coalesce(F(name), value, output_field=field)
        elif isinstance(first, FillEmpty):
            value = _per_row({pk: v.value for pk, v in column.items()}, field)
            values[name] = Case(When(**{name: ""}, then=value), default=F(name))
        else:
            values[name] = _per_row(column, field, plain=True)
    TaskLog.objects.filter(pk__in=list(rows)).update(status=target, **values)


def _per_row(
    column: Mapping[uuid.UUID, Any], field: Field[Any, Any], *, plain: bool = False
) -> Any:
    """One column's values: the value all rows share, or a CASE on the primary key."""
    first = next(iter(column.values()))
    if all(type(v) is type(first) and v == first for v in column.values()):
        return first if plain else Value(first, output_field=field)
    # The condition as a lookup expression, not pk=...: a Q would be compiled as a
    # filter for each row, which costs more than the rest of the batch.
    key = F("pk")
    return Case(
        *(
            When(Exact(key, Value(pk, output_field=_PK)), then=Value(v, output_field=field))
            for pk, v in column.items()
        ),
        output_field=field,
    )
