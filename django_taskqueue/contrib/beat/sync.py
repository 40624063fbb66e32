"""Install a ``beat_schedule`` dict as django-celery-beat ``PeriodicTask`` rows.

:func:`sync_schedule` creates the rows that are missing, updates the ones that
differ, and disables the rows it manages whose entry was removed from the
schedule. Rows it manages carry :data:`MARKER` in their description; a row of
the same name that it did not create is taken over. Running it twice changes
nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import schedules
from django.db import transaction
from django_celery_beat.models import (
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
    crontab_schedule_celery_timezone,
)

#: Description of the rows this module manages.
MARKER = "Managed by django-taskqueue (manage.py taskqueue_beat_sync)."
#: Added to the description of a managed row disabled because its entry was removed.
REMOVED = " Disabled: removed from the schedule."

_SECONDS = {
    IntervalSchedule.DAYS: 86400,
    IntervalSchedule.HOURS: 3600,
    IntervalSchedule.MINUTES: 60,
    IntervalSchedule.SECONDS: 1,
    IntervalSchedule.MICROSECONDS: 1e-6,
}

# Compared fields, in the order a diff shows them.
_FIELDS = (
    "task",
    "schedule",
    "args",
    "kwargs",
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "headers",
    "expire_seconds",
    "expires",
    "enabled",
    "description",
)


@dataclass(frozen=True)
class Change:
    """One row to create, update or disable, with the fields that differ (old, new)."""

    action: str
    name: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        """A line of the diff: ``+ name``, ``~ name: field old -> new``, ``- name``."""
        sign = {"create": "+", "update": "~", "disable": "-"}[self.action]
        if self.action == "create":
            details = ", ".join(f"{k}={_show(new)}" for k, (_, new) in self.fields.items())
        else:
            details = ", ".join(
                f"{k}: {_show(old)} -> {_show(new)}" for k, (old, new) in self.fields.items()
            )
        return f"{sign} {self.name}" + (f" ({details})" if details else "")


@dataclass
class SyncResult:
    """What :func:`sync_schedule` changed (or would change, in a dry run)."""

    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    dry_run: bool = False

    def names(self, action: str) -> list[str]:
        """The names of the rows with this action (``create``, ``update``, ``disable``)."""
        return [c.name for c in self.changes if c.action == action]


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def schedule_spec(schedule: Any) -> tuple[Any, ...]:
    """A comparable description of a Celery schedule (what a model row stores)."""
    schedule = schedules.maybe_schedule(schedule)
    if isinstance(schedule, schedules.crontab):
        cron: Any = schedule  # the _orig_* fields are not in the type stubs
        tz = getattr(cron, "tz", None)
        return (
            "crontab",
            str(cron._orig_minute),
            str(cron._orig_hour),
            str(cron._orig_day_of_month),
            str(cron._orig_month_of_year),
            str(cron._orig_day_of_week),
            str(tz) if tz else crontab_schedule_celery_timezone(),
        )
    if isinstance(schedule, schedules.solar):
        return ("solar", schedule.event, float(schedule.lat), float(schedule.lon))
    if isinstance(schedule, schedules.schedule):
        every: Any = schedule
        seconds = float(every.run_every.total_seconds())
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(
                f"django-celery-beat stores intervals in whole seconds; got {seconds}s"
            )
        return ("interval", int(seconds))
    raise ValueError(f"cannot store the schedule {schedule!r} in django-celery-beat")


def row_spec(row: PeriodicTask) -> tuple[Any, ...] | None:
    """The :func:`schedule_spec` of a row's schedule."""
    if row.interval_id:
        interval = row.interval
        return ("interval", int(interval.every * _SECONDS[interval.period]))
    if row.crontab_id:
        c = row.crontab
        return (
            "crontab",
            c.minute,
            c.hour,
            c.day_of_month,
            c.month_of_year,
            c.day_of_week,
            str(c.timezone),
        )
    if row.solar_id:
        s = row.solar
        return ("solar", s.event, float(s.latitude), float(s.longitude))
    if row.clocked_id:
        return ("clocked", row.clocked.clocked_time.isoformat())
    return None


def _show_spec(spec: tuple[Any, ...] | None) -> str:
    if spec is None:
        return "none"
    if spec[0] == "interval":
        return f"every {spec[1]}s"
    if spec[0] == "crontab":
        return f"cron '{' '.join(spec[1:6])}' {spec[6]}"
    return " ".join(str(part) for part in spec)


def desired(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The row fields an entry of a ``beat_schedule`` dict asks for."""
    options = dict(entry.get("options") or {})
    expires = options.get("expires")
    expire_seconds = None
    expires_at = None
    if isinstance(expires, datetime):
        expires_at = expires
    elif isinstance(expires, timedelta):
        expire_seconds = int(expires.total_seconds())
    elif expires is not None:
        expire_seconds = int(expires)
    return {
        "task": str(entry["task"]),
        "schedule": _show_spec(schedule_spec(entry["schedule"])),
        "args": list(entry.get("args") or []),
        "kwargs": dict(entry.get("kwargs") or {}),
        "queue": options.get("queue") or None,
        "exchange": options.get("exchange") or None,
        "routing_key": options.get("routing_key") or None,
        "priority": options.get("priority"),
        "headers": dict(options.get("headers") or {}),
        "expire_seconds": expire_seconds,
        "expires": expires_at,
        "enabled": True,
        "description": MARKER,
    }


def current(row: PeriodicTask) -> dict[str, Any]:
    """The same fields, as a row has them."""
    return {
        "task": row.task,
        "schedule": _show_spec(row_spec(row)),
        "args": json.loads(row.args or "[]"),
        "kwargs": json.loads(row.kwargs or "{}"),
        "queue": row.queue or None,
        "exchange": row.exchange or None,
        "routing_key": row.routing_key or None,
        "priority": row.priority,
        "headers": json.loads(row.headers or "{}"),
        "expire_seconds": row.expire_seconds,
        "expires": row.expires,
        "enabled": row.enabled,
        "description": row.description,
    }


def _model_schedule(schedule: Any) -> dict[str, Any]:
    """The schedule FKs for a row, reusing an equal schedule row or creating one."""
    spec = schedule_spec(schedule)
    fks: dict[str, Any] = {"interval": None, "crontab": None, "solar": None, "clocked": None}
    if spec[0] == "interval":
        fks["interval"] = (
            IntervalSchedule.objects.filter(every=spec[1], period=IntervalSchedule.SECONDS)
            .order_by("pk")
            .first()
        ) or IntervalSchedule.objects.create(every=spec[1], period=IntervalSchedule.SECONDS)
    elif spec[0] == "crontab":
        values = dict(
            zip(
                ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone"),
                spec[1:],
                strict=True,
            )
        )
        fks["crontab"] = CrontabSchedule.objects.filter(**values).order_by(
            "pk"
        ).first() or CrontabSchedule.objects.create(**values)
    else:
        fks["solar"], _ = SolarSchedule.objects.get_or_create(
            event=spec[1], latitude=spec[2], longitude=spec[3]
        )
    return fks


def _write(row: PeriodicTask, entry: Mapping[str, Any], want: dict[str, Any]) -> None:
    for name, value in _model_schedule(entry["schedule"]).items():
        setattr(row, name, value)
    row.task = want["task"]
    row.args = json.dumps(want["args"])
    row.kwargs = json.dumps(want["kwargs"])
    for name in ("queue", "exchange", "routing_key", "priority", "expire_seconds", "expires"):
        setattr(row, name, want[name])
    row.headers = json.dumps(want["headers"])
    row.enabled = want["enabled"]
    row.description = MARKER
    row.save()  # PeriodicTask.save() tells running beats that the schedule changed


def sync_schedule(
    schedule: Mapping[str, Mapping[str, Any]], *, dry_run: bool = False
) -> SyncResult:
    """Make the ``PeriodicTask`` rows match ``schedule`` (a ``beat_schedule`` dict).

    - an entry without a row: the row is created;
    - an entry whose row differs (task, schedule, arguments, options): the row
      is updated; a managed row that was disabled because its entry had been
      removed is enabled again; a row someone else disabled stays disabled;
    - a managed row (:data:`MARKER`) whose entry is gone: the row is disabled
      (not deleted: its history and run count stay).

    Args:
        schedule: entry name -> ``{"task", "schedule", "args", "kwargs", "options"}``.
        dry_run: compute the changes without writing anything.

    Raises:
        ValueError: a schedule django-celery-beat cannot store.
    """
    result = SyncResult(dry_run=dry_run)
    wanted = {name: desired(entry) for name, entry in schedule.items()}
    with transaction.atomic():
        rows = {
            row.name: row
            for row in PeriodicTask.objects.select_for_update(of=("self",))
            .filter(name__in=list(wanted))
            .select_related("interval", "crontab", "solar", "clocked")
        }
        for name, asked in wanted.items():
            want = dict(asked)
            row = rows.get(name)
            if row is None:
                shown = {k: (None, v) for k, v in want.items() if v not in (None, {}, [])}
                result.changes.append(Change("create", name, shown))
                if not dry_run:
                    _write(PeriodicTask(name=name), schedule[name], want)
                continue
            have = current(row)
            if not have["enabled"] and not str(have["description"]).endswith(REMOVED):
                want = {**want, "enabled": False}  # disabled by someone: keep it so
            diff = {k: (have[k], want[k]) for k in _FIELDS if have[k] != want[k]}
            if not diff:
                result.unchanged.append(name)
                continue
            result.changes.append(Change("update", name, diff))
            if not dry_run:
                _write(row, schedule[name], want)
        stale = (
            PeriodicTask.objects.select_for_update(of=("self",))
            .filter(description=MARKER, enabled=True)
            .exclude(name__in=list(wanted))
            .order_by("name")
        )
        for row in stale:
            result.changes.append(Change("disable", row.name, {"enabled": (True, False)}))
            if not dry_run:
                row.enabled = False
                row.description = MARKER + REMOVED
                row.save()
    return result
