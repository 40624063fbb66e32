"""The numbers behind the admin's overview page.

Every figure is computed over a recent window, through the indexes on
``(status, created_at)`` and ``(status, completed_at)``, in a fixed number of
queries: the page costs the same at a thousand rows as at a million (it grows
with the tasks in the window, not with the table). The figures themselves are
defined once, in :mod:`django_taskqueue.stats`; this module adds the page's
window and its lists of tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from django_taskqueue import stats
from django_taskqueue.admin.pagination import table_estimate
from django_taskqueue.models import TaskLog
from django_taskqueue.stats import Bucket, Runtime
from django_taskqueue.status import TaskStatus

#: How far back the per-status counts, the daily chart and the runtimes look.
WINDOW_DAYS = 7
#: Rows shown in the "stuck" and "recent failures" tables.
LIST_LIMIT = 20


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
    window_start = stats.local_days_start(now, WINDOW_DAYS)
    window_counts = stats.created_counts(window_start)
    active_counts = stats.active_counts()
    throughput = stats.throughput(now, WINDOW_DAYS)
    percentiles = stats.runtime_percentiles(window_start)

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
        hourly=throughput.hourly,
        daily=throughput.daily,
        runtimes=percentiles.runtimes,
        runtimes_sampled=percentiles.sampled,
        stale_after=stale_after,
        stuck=stuck[:LIST_LIMIT],
        stuck_more=len(stuck) > LIST_LIMIT,
        failures=failures,
    )
