"""The numbers behind the admin's overview page.

Every figure is computed over a recent window, through the indexes on
``(status, created_at)`` and ``(status, completed_at)``, in a fixed number of
queries: the page costs the same at a thousand rows as at a million (it grows
with the tasks in the window, not with the table).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F
from django.db.models.functions import TruncHour
from django.utils import timezone

from django_taskqueue.admin.pagination import table_estimate
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES, TaskStatus

#: How far back the per-status counts, the daily chart and the runtimes look.
WINDOW_DAYS = 7
#: On databases without ``percentile_cont``, runtimes come from at most this
#: many of the newest completed tasks in the window.
RUNTIME_SAMPLE = 20_000
#: Rows shown in the "stuck" and "recent failures" tables.
LIST_LIMIT = 20


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
class Bucket:
    """Tasks that ended in one hour or one day, by how they ended."""

    start: datetime | date
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Tasks that ended in the bucket."""
        return self.completed + self.failed + self.cancelled

    @property
    def failure_rate(self) -> float | None:
        """Failed / (completed + failed), in percent; ``None`` when nothing finished."""
        finished = self.completed + self.failed
        return None if finished == 0 else 100.0 * self.failed / finished


@dataclass(frozen=True)
class Runtime:
    """Runtime percentiles of one task type's completed tasks."""

    task_type: str
    count: int
    p50: timedelta
    p95: timedelta


@dataclass
class Overview:
    """Everything the overview page shows."""

    now: datetime
    window_start: datetime
    window_counts: dict[str, int]
    active_counts: dict[str, int]
    total_estimate: int | None
    hourly: list[Bucket]
    daily: list[Bucket]
    runtimes: list[Runtime]
    runtimes_sampled: bool
    stale_after: timedelta
    stuck: list[TaskLog] = field(default_factory=list)
    stuck_more: bool = False
    failures: list[TaskLog] = field(default_factory=list)


def _hour_starts(now: datetime) -> list[datetime]:
    """The starts of the last 24 local hours, oldest first, in UTC."""
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    current_utc = current.astimezone(dt_timezone.utc)
    return [current_utc - timedelta(hours=hours) for hours in range(23, -1, -1)]


def _buckets(
    rows: Iterable[tuple[datetime, str, int]], now: datetime
) -> tuple[list[Bucket], list[Bucket]]:
    hours = _hour_starts(now)
    today = timezone.localdate(now)
    days = [today - timedelta(days=n) for n in range(WINDOW_DAYS - 1, -1, -1)]
    by_hour: dict[datetime, dict[str, int]] = defaultdict(dict)
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    for hour, status, n in rows:
        by_hour[hour.astimezone(dt_timezone.utc)][status] = n
        day = timezone.localtime(hour).date()
        by_day[day][status] = by_day[day].get(status, 0) + n

    def bucket(start: datetime | date, counts: dict[str, int]) -> Bucket:
        return Bucket(
            start=start,
            completed=counts.get(TaskStatus.COMPLETED, 0),
            failed=counts.get(TaskStatus.FAILED, 0),
            cancelled=counts.get(TaskStatus.CANCELLED, 0),
        )

    return (
        [bucket(hour, by_hour.get(hour, {})) for hour in hours],
        [bucket(day, by_day.get(day, {})) for day in days],
    )


def _runtimes_sql(since: datetime) -> list[Runtime]:
    duration = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
    rows = (
        TaskLog.objects.filter(
            status=TaskStatus.COMPLETED, completed_at__gte=since, started_at__isnull=False
        )
        .order_by()
        .values("task_type")
        .annotate(
            n=Count("pk"),
            p50=PercentileCont(duration, 0.5),
            p95=PercentileCont(duration, 0.95),
        )
        .order_by("task_type")
    )
    return [
        Runtime(task_type=row["task_type"], count=row["n"], p50=row["p50"], p95=row["p95"])
        for row in rows
    ]


def _runtimes_sample(since: datetime) -> tuple[list[Runtime], bool]:
    rows = list(
        TaskLog.objects.filter(
            status=TaskStatus.COMPLETED, completed_at__gte=since, started_at__isnull=False
        )
        .order_by("-completed_at")
        .values_list("task_type", "started_at", "completed_at")[: RUNTIME_SAMPLE + 1]
    )
    sampled = len(rows) > RUNTIME_SAMPLE
    seconds: dict[str, list[float]] = defaultdict(list)
    for task_type, started_at, completed_at in rows[:RUNTIME_SAMPLE]:
        if started_at is None or completed_at is None:  # excluded by the filter; for mypy
            continue
        seconds[task_type].append(max(0.0, (completed_at - started_at).total_seconds()))
    runtimes = []
    for task_type in sorted(seconds):
        values = sorted(seconds[task_type])
        runtimes.append(
            Runtime(
                task_type=task_type,
                count=len(values),
                p50=timedelta(seconds=percentile(values, 0.5)),
                p95=timedelta(seconds=percentile(values, 0.95)),
            )
        )
    return runtimes, sampled


def build_overview(*, stale_after: timedelta, now: datetime | None = None) -> Overview:
    """Compute the overview in a fixed number of queries.

    Args:
        stale_after: a ``processing`` task with no sign of life for this long
            is listed as stuck (see :meth:`TaskLogQuerySet.stale
            <django_taskqueue.querysets.TaskLogQuerySet.stale>`).
        now: the moment to look back from (tests pin it).

    Returns:
        The figures: per-status counts for tasks created in the window and
        for active tasks of any age, hourly and daily buckets of ended tasks,
        runtime percentiles per task type, stuck tasks and recent failures.
    """
    now = now or timezone.now()
    window_start = timezone.localtime(now).replace(
        hour=0, minute=0, second=0, microsecond=0
    ) - timedelta(days=WINDOW_DAYS - 1)

    window_counts = TaskLog.objects.filter(created_at__gte=window_start).status_counts()
    active_counts = TaskLog.objects.active().status_counts()

    ended = (
        TaskLog.objects.filter(status__in=TERMINAL_STATUSES, completed_at__gte=window_start)
        .order_by()
        .annotate(hour=TruncHour("completed_at"))
        .values_list("hour", "status")
        .annotate(n=Count("pk"))
    )
    hourly, daily = _buckets(ended, now)

    if connections[TaskLog.objects.db].vendor == "postgresql":
        runtimes, sampled = _runtimes_sql(window_start), False
    else:
        runtimes, sampled = _runtimes_sample(window_start)

    stuck = list(
        TaskLog.objects.stale(stale_after)
        .with_last_seen()
        .select_related("owner")
        .defer("result", "traceback", "args", "kwargs", "metadata")
        # with_last_seen() annotates last_seen, which the type plugin cannot see.
        .order_by("last_seen")[: LIST_LIMIT + 1]  # type: ignore[misc]
    )
    failures = list(
        TaskLog.objects.filter(status=TaskStatus.FAILED, completed_at__isnull=False)
        .select_related("owner")
        .defer("result", "traceback", "args", "kwargs", "metadata")
        .order_by("-completed_at")[:LIST_LIMIT]
    )
    return Overview(
        now=now,
        window_start=window_start,
        window_counts=window_counts,
        active_counts=active_counts,
        total_estimate=table_estimate(TaskLog.objects.all()),
        hourly=hourly,
        daily=daily,
        runtimes=runtimes,
        runtimes_sampled=sampled,
        stale_after=stale_after,
        stuck=stuck[:LIST_LIMIT],
        stuck_more=len(stuck) > LIST_LIMIT,
        failures=failures,
    )
