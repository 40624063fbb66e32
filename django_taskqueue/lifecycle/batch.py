"""Many tasks' ends in a few statements, with the outcome each would have alone.

A worker process that ends tasks faster than it can write them one by one (two
or three statements and a commit each) hands them to its recorder thread
(:mod:`django_taskqueue.holding`), which writes what queued meanwhile with
:func:`write_endings`, in one transaction:

1. one ``SELECT ... FOR UPDATE`` of the rows (their status and parent), which
   holds them until the commit, so nothing moves them between the look and the
   write;
2. for the ends the status allows, one ``UPDATE`` per kind of end (completed,
   failed), the values that differ between rows as ``CASE`` expressions;
3. one ``INSERT`` of their events (and the progress rows of those that carry
   buffered progress).

An end the plain engine would treat specially — its row refuses it (ended by
another run, cancelled, a presumed failure to supersede), has no row, has a
guard, or ends twice in the batch — is written afterwards by the engine itself
(:meth:`~django_taskqueue.lifecycle.transitions.Ending.write`), so every rule of
:mod:`~django_taskqueue.lifecycle.transitions` holds for it unchanged. The
signals are those of the engine: ``task_status_changed`` after the commit, and a
bulk child's parent folded in after it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Case, Field, Value, When
from django.db.models.expressions import BaseExpression

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
    Ending,
    update_parent,
    write_progress_rows,
)
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import ALLOWED_FROM


def write_endings(endings: Sequence[Ending]) -> list[Outcome]:
    """Write ``endings``; return each one's outcome, in their order.

    Raises:
        DatabaseError: as the single writes would; nothing of the batch is
            written then (the caller may hold and retry all of it).
    """
    if not endings:
        return []
    outcomes: list[Outcome | None] = [None] * len(endings)
    alone: list[int] = []
    with recording():
        pks = _pks(endings)
        rows = {
            pk: (status, parent_id)
            for pk, status, parent_id in TaskLog.objects.select_for_update()
            .filter(pk__in={pk for pk in pks if pk is not None})
            .values_list("pk", "status", "parent_id")
        }
        fast: dict[str, dict[uuid.UUID, tuple[int, Ending, dict[str, Any]]]] = defaultdict(dict)
        seen: set[uuid.UUID] = set()
        for n, (ending, pk) in enumerate(zip(endings, pks, strict=True)):
            row = rows.get(pk) if pk is not None else None
            updates = stored_updates(ending.updates)
            if (
                pk is None
                or row is None
                or pk in seen
                or ending.guard is not None
                or row[0] not in ALLOWED_FROM[ending.target]
                or not _plain(updates)
            ):
                alone.append(n)
                continue
            seen.add(pk)
            key = ending.target + "|" + ",".join(sorted(updates))
            fast[key][pk] = (n, ending, updates)
        events: list[TaskEventLog] = []
        for group in fast.values():
            target = next(iter(group.values()))[1].target
            _update_many(target, {pk: updates for pk, (_, _, updates) in group.items()})
            for pk, (n, ending, _) in group.items():
                event = stored_event(ending.event)
                events.append(event_row(pk, event, ending.at))
                if ending.progress is not None:
                    with recorded_at(ending.at):
                        write_progress_rows(pk, ending.progress)
                parent_id = rows[pk][1]
                outcome = Outcome(True, target, pk, parent_id, parent_known=True)
                outcomes[n] = outcome
                announce(outcome, event[0])
                if parent_id is not None:
                    transaction.on_commit(_parent_update(pk, target))
        TaskEventLog.objects.bulk_create(events)
    for n in alone:
        outcomes[n] = endings[n].write()
    return [outcome or Outcome(False, None, None) for outcome in outcomes]


def _pks(endings: Sequence[Ending]) -> list[uuid.UUID | None]:
    """Each end's row: its pk, or found by its Celery id (one query for all that need it)."""
    wanted = [e.celery_task_id for e in endings if e.pk is None and e.celery_task_id]
    found: Mapping[str, uuid.UUID] = {}
    if wanted:
        found = dict(
            TaskLog.objects.filter(celery_task_id__in=wanted).values_list("celery_task_id", "pk")
        )
    return [e.pk if e.pk is not None else found.get(e.celery_task_id or "") for e in endings]


def _plain(updates: Mapping[str, Any]) -> bool:
    """Whether every update is a value (an expression is the engine's to write)."""
    return not any(
        isinstance(value, (KeepFirst, FillEmpty, BaseExpression)) for value in updates.values()
    )


def _update_many(target: str, rows: Mapping[uuid.UUID, Mapping[str, Any]]) -> None:
    """Move ``rows`` to ``target`` in one UPDATE: a column's shared value as is, else a CASE."""
    columns = next(iter(rows.values())).keys()
    values: dict[str, Any] = {}
    for name in columns:
        column = [updates[name] for updates in rows.values()]
        first = column[0]
        if all(type(v) is type(first) and v == first for v in column):
            values[name] = first
            continue
        field: Field[Any, Any] = TaskLog._meta.get_field(name)  # type: ignore[assignment]
        values[name] = Case(
            *(
                When(pk=pk, then=Value(updates[name], output_field=field))
                for pk, updates in rows.items()
            ),
            output_field=field,
        )
    TaskLog.objects.filter(pk__in=list(rows)).update(status=target, **values)


def _parent_update(child_pk: uuid.UUID, target: str) -> Any:
    return lambda: update_parent(child_pk, target)
