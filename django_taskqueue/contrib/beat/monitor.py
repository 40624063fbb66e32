"""Missed-run monitoring for django-celery-beat's ``PeriodicTask`` rows.

:func:`missed_runs` compares each enabled periodic task's ``last_run_at`` with
what its schedule says: a task whose next run after ``last_run_at`` is more than
``grace`` in the past did not run when it should have (beat is down, stuck, or
not using the database scheduler). The ``taskqueue_beat_check`` command and an
admin overview call it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

#: How late a run may be before it counts as missed. django-celery-beat writes
#: ``last_run_at`` to the database when beat syncs (every 3 minutes by default),
#: so the grace must be longer than that.
DEFAULT_GRACE = timedelta(minutes=5)


@dataclass(frozen=True)
class MissedRun:
    """A periodic task that did not run when its schedule said it should have."""

    name: str
    task: str
    schedule: str
    last_run_at: datetime | None
    due_at: datetime
    overdue_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        data = asdict(self)
        data["last_run_at"] = self.last_run_at.isoformat() if self.last_run_at else None
        data["due_at"] = self.due_at.isoformat()
        return data


def due_at(task: PeriodicTask, now: datetime | None = None) -> datetime | None:
    """When the task's next run after its last one is (or was) due; ``None`` if never again."""
    now = now or timezone.now()
    if task.clocked_id:
        return None if task.last_run_at else task.clocked.clocked_time
    # Beat counts a task that never ran from when it was last changed.
    reference = task.last_run_at or task.start_time or task.date_changed
    if task.start_time and task.start_time > reference:
        reference = task.start_time
    remaining = task.schedule.remaining_estimate(reference)
    # remaining_estimate is relative to the schedule's clock (the real now).
    due: datetime = timezone.now() + remaining
    return due


def missed_runs(
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
    queryset: Any = None,
) -> list[MissedRun]:
    """The enabled periodic tasks whose due run is more than ``grace`` overdue.

    Skipped: disabled tasks, one-off tasks that ran, tasks whose ``expires``
    passed or whose ``start_time`` is still ahead.

    Args:
        grace: how late a run may be (longer than beat's sync interval).
        now: the reference time (default: now).
        queryset: the ``PeriodicTask`` rows to look at (default: all).

    Returns:
        The missed runs, the most overdue first.
    """
    now = now or timezone.now()
    rows = (queryset if queryset is not None else PeriodicTask.objects.all()).filter(enabled=True)
    missed = []
    for task in rows.select_related("interval", "crontab", "solar", "clocked"):
        if task.one_off and task.total_run_count:
            continue
        if (task.expires and task.expires <= now) or (task.start_time and task.start_time > now):
            continue
        if task.scheduler is None:
            continue
        due = due_at(task, now)
        if due is None:
            continue
        overdue = (now - due).total_seconds()
        if overdue > grace.total_seconds():
            missed.append(
                MissedRun(
                    name=task.name,
                    task=task.task,
                    schedule=str(task.scheduler),
                    last_run_at=task.last_run_at,
                    due_at=due,
                    overdue_seconds=round(overdue, 1),
                )
            )
    missed.sort(key=lambda m: -m.overdue_seconds)
    return missed
