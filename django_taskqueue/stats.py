"""Task statistics: one definition of each figure the admin overview and the summary show.

Plain functions over :class:`~django_taskqueue.models.TaskLog` querysets. Each
figure family costs one aggregating query (the database counts, averages and,
on PostgreSQL, takes the percentiles) and comes back as a small dataclass or
dict. ``queryset`` narrows the tasks looked at (e.g. one user's); by default
every task counts. The admin's overview page
(:mod:`django_taskqueue.admin.overview`) and the periodic summary
(:func:`django_taskqueue.housekeeping.build_report`, which the ``report`` beat
task and ``taskqueue_stats`` show) read their figures from here.

Windows: a figure counts the tasks whose timestamp is at or after ``since``
and, when ``until`` is given, at or before it. The overview looks back over
whole local days (:func:`local_days_start`), the summary over a duration
ending now.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db import connections, models
from django.db.models import Aggregate, Avg, Count, DurationField, ExpressionWrapper, F, Max
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Coalesce, NullIf, TruncHour
from django.utils import timezone

from django_taskqueue.models import TaskLog
from django_taskqueue.querysets import TaskLogQuerySet
from django_taskqueue.status import TERMINAL_STATUSES, TaskStatus

#: On databases without ``percentile_cont``, runtime percentiles come from at
#: most this many of the newest completed tasks in the window.
RUNTIME_SAMPLE = 20_000


def _tasks(queryset: TaskLogQuerySet | None) -> TaskLogQuerySet:
    return TaskLog.objects.all() if queryset is None else queryset


def _ended_between(
    queryset: TaskLogQuerySet, since: datetime, until: datetime | None
) -> TaskLogQuerySet:
    """Tasks whose ``completed_at`` is in the window (served by ``(status, completed_at)``)."""
    tasks = queryset.filter(completed_at__gte=since)
    return tasks if until is None else tasks.filter(completed_at__lte=until)


# --- windows and durations -------------------------------------------------------------


def local_days_start(now: datetime, days: int) -> datetime:
    """The start of the local day ``days - 1`` days before ``now``'s: ``days`` whole days to now."""
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days - 1)


def hour_starts(now: datetime, hours: int = 24) -> list[datetime]:
    """The starts of the last ``hours`` local hours (the current one last), in UTC."""
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    current_utc = current.astimezone(dt_timezone.utc)
    return [current_utc - timedelta(hours=n) for n in range(hours - 1, -1, -1)]


def run_time() -> ExpressionWrapper[CombinedExpression]:
    """A task's run time in SQL: from ``started_at`` to ``completed_at``."""
    return ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())


def seconds(value: Any) -> float:
    """An aggregated duration in seconds (``None``: 0).

    Args:
        value: a ``timedelta``, or a number of microseconds from a backend that
            averages durations as numbers.
    """
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000


def completed_runs(
    since: datetime, until: datetime | None = None, queryset: TaskLogQuerySet | None = None
) -> TaskLogQuerySet:
    """Completed tasks that ended in the window and have a start time: the ones with a run time."""
    return _ended_between(
        _tasks(queryset).filter(status=TaskStatus.COMPLETED, started_at__isnull=False),
        since,
        until,
    )


# --- counts ------------------------------------------------------------------------------


def created_counts(since: datetime, queryset: TaskLogQuerySet | None = None) -> dict[str, int]:
    """Tasks created at or after ``since``, per status, plus ``"total"`` (one query)."""
    return _tasks(queryset).filter(created_at__gte=since).status_counts()


def active_counts(queryset: TaskLogQuerySet | None = None) -> dict[str, int]:
    """Active tasks (pending, processing, retrying) of any age, per status, plus ``"total"``."""
    return _tasks(queryset).active().status_counts()


def stuck_count(stale_after: timedelta, queryset: TaskLogQuerySet | None = None) -> int:
    """Tasks in ``processing`` silent for longer than ``stale_after``.

    See :meth:`TaskLogQuerySet.stale <django_taskqueue.querysets.TaskLogQuerySet.stale>`.
    """
    return _tasks(queryset).stale(stale_after).count()


@dataclass(frozen=True)
class Bucket:
    """Tasks that ended from ``start`` on (in one hour, one day, or a window), by how they ended."""

    start: datetime | date
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Tasks that ended in the bucket."""
        return self.completed + self.failed + self.cancelled

    @property
    def finished(self) -> int:
        """Tasks that ran to an end: completed or failed (cancelled ones did not)."""
        return self.completed + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed / (completed + failed), a fraction; ``None`` when nothing finished."""
        return None if self.finished == 0 else self.failed / self.finished

    @property
    def failure_percent(self) -> float | None:
        """The failure rate in percent; ``None`` when nothing finished."""
        # Computed from the counts, not as 100 * failure_rate: the same float
        # whichever way it is rounded for display.
        return None if self.finished == 0 else 100.0 * self.failed / self.finished

    def counts(self) -> dict[str, int]:
        """``{"completed": n, "failed": n, "cancelled": n}``."""
        return {
            TaskStatus.COMPLETED.value: self.completed,
            TaskStatus.FAILED.value: self.failed,
            TaskStatus.CANCELLED.value: self.cancelled,
        }


def _bucket(start: datetime | date, counts: dict[str, int]) -> Bucket:
    return Bucket(
        start=start,
        completed=counts.get(TaskStatus.COMPLETED, 0),
        failed=counts.get(TaskStatus.FAILED, 0),
        cancelled=counts.get(TaskStatus.CANCELLED, 0),
    )


def _ended(
    queryset: TaskLogQuerySet | None, since: datetime, until: datetime | None
) -> TaskLogQuerySet:
    # Only a terminal status sets completed_at, and every way back out clears it.
    return _ended_between(_tasks(queryset).filter(status__in=TERMINAL_STATUSES), since, until)


def ended_counts(
    since: datetime, until: datetime | None = None, queryset: TaskLogQuerySet | None = None
) -> Bucket:
    """Tasks that ended in the window (by ``completed_at``), per terminal status (one query)."""
    rows = _ended(queryset, since, until).order_by().values_list("status").annotate(n=Count("pk"))
    return _bucket(since, dict(rows))


@dataclass(frozen=True)
class Throughput:
    """Ended tasks per local hour (the last 24) and per local day (the last ``days``)."""

    hourly: list[Bucket]
    daily: list[Bucket]


def throughput(now: datetime, days: int, queryset: TaskLogQuerySet | None = None) -> Throughput:
    """Tasks that ended per hour and per day, from :func:`local_days_start` on (one query).

    Both series come from one count per UTC hour and status; a day sums its
    local hours. Every bucket is there, empty ones with zeros.
    """
    rows = (
        _ended(queryset, local_days_start(now, days), None)
        .order_by()
        .annotate(hour=TruncHour("completed_at"))
        .values_list("hour", "status")
        .annotate(n=Count("pk"))
    )
    today = timezone.localdate(now)
    by_hour: dict[datetime, dict[str, int]] = defaultdict(dict)
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    for hour, status, n in rows:
        by_hour[hour.astimezone(dt_timezone.utc)][status] = n
        day = timezone.localtime(hour).date()
        by_day[day][status] = by_day[day].get(status, 0) + n
    return Throughput(
        hourly=[_bucket(hour, by_hour.get(hour, {})) for hour in hour_starts(now)],
        daily=[
            _bucket(day, by_day.get(day, {}))
            for day in (today - timedelta(days=n) for n in range(days - 1, -1, -1))
        ],
    )


@dataclass(frozen=True)
class ErrorCount:
    """How many tasks failed with one ``error_code`` (``""``: none recorded)."""

    error_code: str
    count: int


def failures_by_error_code(
    since: datetime,
    until: datetime | None = None,
    top: int = 5,
    queryset: TaskLogQuerySet | None = None,
) -> list[ErrorCount]:
    """The ``top`` most frequent error codes of tasks that failed in the window (one query)."""
    rows = (
        _ended_between(_tasks(queryset).filter(status=TaskStatus.FAILED), since, until)
        .order_by()
        .values_list("error_code")
        .annotate(n=Count("pk"))
        .order_by("-n")[:top]
    )
    return [ErrorCount(error_code=code, count=n) for code, n in rows]


# --- run times ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTimes:
    """Mean and longest run time of one kind of task's completed runs."""

    kind: str | None
    count: int
    mean_seconds: float
    max_seconds: float


def slowest(
    since: datetime,
    until: datetime | None = None,
    top: int = 5,
    queryset: TaskLogQuerySet | None = None,
) -> list[RunTimes]:
    """The ``top`` kinds of task with the longest mean run time in the window (one query).

    A task's kind is its ``task_type``, else its task name (``None`` when it has neither).
    """
    kind = Coalesce(NullIf("task_type", models.Value("")), "task_name")
    rows = (
        completed_runs(since, until, queryset)
        .annotate(kind=kind)
        .order_by()
        .values("kind")
        .annotate(n=Count("pk"), mean=Avg(run_time()), longest=Max(run_time()))
        .order_by("-mean")[:top]
    )
    return [
        RunTimes(
            kind=row["kind"],
            count=row["n"],
            mean_seconds=seconds(row["mean"]),
            max_seconds=seconds(row["longest"]),
        )
        for row in rows
    ]


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        # A literal, formatted from a float: nothing from outside reaches the SQL.
        super().__init__(expression, fraction=f"{float(fraction):.4f}", **extra)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Interpolated percentile of already sorted values, as ``percentile_cont`` computes it."""
    if not sorted_values:
        raise ValueError("no values")
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


@dataclass(frozen=True)
class Runtime:
    """Runtime percentiles of one task type's completed tasks."""

    task_type: str
    count: int
    p50: timedelta
    p95: timedelta


@dataclass(frozen=True)
class Percentiles:
    """Runtime percentiles per task type; ``sampled``: from the newest runs only."""

    runtimes: list[Runtime]
    sampled: bool


def _percentiles_sql(since: datetime, queryset: TaskLogQuerySet | None = None) -> list[Runtime]:
    rows = (
        completed_runs(since, None, queryset)
        .order_by()
        .values("task_type")
        .annotate(
            n=Count("pk"),
            p50=PercentileCont(run_time(), 0.5),
            p95=PercentileCont(run_time(), 0.95),
        )
        .order_by("task_type")
    )
    return [
        Runtime(task_type=row["task_type"], count=row["n"], p50=row["p50"], p95=row["p95"])
        for row in rows
    ]


def _percentiles_sample(since: datetime, queryset: TaskLogQuerySet | None = None) -> Percentiles:
    rows = list(
        completed_runs(since, None, queryset)
        .order_by("-completed_at")
        .values_list("task_type", "started_at", "completed_at")[: RUNTIME_SAMPLE + 1]
    )
    values: dict[str, list[float]] = defaultdict(list)
    for task_type, started_at, completed_at in rows[:RUNTIME_SAMPLE]:
        if started_at is None or completed_at is None:  # excluded by the filter; for mypy
            continue
        values[task_type].append(max(0.0, (completed_at - started_at).total_seconds()))
    runtimes = []
    for task_type in sorted(values):
        ordered = sorted(values[task_type])
        runtimes.append(
            Runtime(
                task_type=task_type,
                count=len(ordered),
                p50=timedelta(seconds=percentile(ordered, 0.5)),
                p95=timedelta(seconds=percentile(ordered, 0.95)),
            )
        )
    return Percentiles(runtimes=runtimes, sampled=len(rows) > RUNTIME_SAMPLE)


def runtime_percentiles(since: datetime, queryset: TaskLogQuerySet | None = None) -> Percentiles:
    """Median and 95th percentile run time per ``task_type`` of completed runs since ``since``.

    One query: on PostgreSQL ``percentile_cont`` over every run; elsewhere the
    newest :data:`RUNTIME_SAMPLE` runs, interpolated the same way in Python.
    """
    tasks = _tasks(queryset)
    if connections[tasks.db].vendor == "postgresql":
        return Percentiles(runtimes=_percentiles_sql(since, tasks), sampled=False)
    return _percentiles_sample(since, tasks)
