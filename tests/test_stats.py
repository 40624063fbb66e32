"""The statistics module: each figure's definition, window bounds and query count."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from itertools import pairwise
from typing import Any

import pytest
from django.db import connection
from django.test.utils import override_settings
from django.utils import timezone

from django_taskqueue import stats
from django_taskqueue.models import TaskLog
from django_taskqueue.stats import Bucket
from django_taskqueue.status import TaskStatus
from tests import factories

UTC = dt_timezone.utc


def ended_at(
    end: datetime,
    status: str = TaskStatus.COMPLETED,
    *,
    runtime: float = 1.0,
    error_code: str | None = None,
    **fields: Any,
) -> TaskLog:
    """A task that ran ``runtime`` seconds and ended at ``end`` (optionally with ``error_code``)."""
    log = factories.task(
        status,
        created_at=end - timedelta(seconds=runtime + 1),
        started_at=end - timedelta(seconds=runtime),
        completed_at=end,
        **{**factories.SAMPLE_TASK, **fields},
    )
    if error_code is not None:
        TaskLog.objects.filter(pk=log.pk).update(error_code=error_code)
    return log


# --- windows and durations ----------------------------------------------------------


@override_settings(TIME_ZONE="Europe/Paris")
def test_windows_are_whole_local_days_and_hours_across_a_dst_change() -> None:
    # 01:37 UTC on the day Paris moves its clocks from 02:00 to 03:00 (03:37 local).
    now = datetime(2026, 3, 29, 1, 37, tzinfo=UTC)
    start = stats.local_days_start(now, 7)
    assert timezone.localtime(start).replace(tzinfo=None) == datetime(2026, 3, 23)
    hours = stats.hour_starts(now)
    assert len(hours) == 24
    assert hours[-1] == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(hours))
    assert stats.local_days_start(now, 1) == datetime(2026, 3, 28, 23, tzinfo=UTC)


def test_seconds_of_an_aggregated_duration() -> None:
    assert stats.seconds(timedelta(seconds=1.5)) == 1.5
    assert stats.seconds(None) == 0.0
    assert stats.seconds(2_500_000) == 2.5  # microseconds, as some backends average


def test_bucket_rates() -> None:
    bucket = Bucket(start=date(2026, 1, 1), completed=5, failed=1, cancelled=4)
    assert (bucket.total, bucket.finished) == (10, 6)
    assert bucket.failure_rate == 1 / 6
    assert bucket.failure_percent == 100.0 * 1 / 6
    assert bucket.counts() == {"completed": 5, "failed": 1, "cancelled": 4}
    # Cancelled tasks did not finish: no rate without a completed or failed one.
    only_cancelled = Bucket(start=date(2026, 1, 1), cancelled=3)
    assert only_cancelled.failure_rate is None
    assert only_cancelled.failure_percent is None


# --- counts -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_counts_per_status(django_assert_num_queries: Any) -> None:
    now = timezone.now()
    factories.task(TaskStatus.PENDING, created_at=now - timedelta(days=3), **factories.SAMPLE_TASK)
    factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)
    factories.task(
        TaskStatus.PROCESSING, heartbeat_at=now - timedelta(hours=1), **factories.SAMPLE_TASK
    )
    factories.task(TaskStatus.PROCESSING, heartbeat_at=now, **factories.SAMPLE_TASK)
    ended_at(now, TaskStatus.FAILED)

    with django_assert_num_queries(1):
        created = stats.created_counts(now - timedelta(days=1))
    assert created == {
        "pending": 1,
        "processing": 2,
        "retrying": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
        "total": 4,
    }
    with django_assert_num_queries(1):
        active = stats.active_counts()
    assert (active["pending"], active["processing"], active["failed"], active["total"]) == (
        2,
        2,
        0,
        4,
    )
    with django_assert_num_queries(1):
        assert stats.stuck_count(timedelta(minutes=15)) == 1


@pytest.mark.django_db
def test_a_queryset_narrows_every_figure() -> None:
    alice, bob = factories.user("alice", staff=True), factories.user("bob", staff=True)
    now = timezone.now()
    ended_at(now, TaskStatus.FAILED, owner=alice, error_code="x")
    ended_at(now, TaskStatus.COMPLETED, owner=bob)
    mine = TaskLog.objects.filter(owner=alice)
    since = now - timedelta(hours=1)

    assert stats.created_counts(since, mine)["total"] == 1
    assert stats.ended_counts(since, None, mine).counts() == {
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }
    assert stats.slowest(since, None, 5, mine) == []
    assert [e.error_code for e in stats.failures_by_error_code(since, None, 5, mine)] == ["x"]
    assert (
        stats.runtime_percentiles(since, TaskLog.objects.filter(owner=bob)).runtimes[0].count == 1
    )


@pytest.mark.django_db
def test_ended_counts_window_includes_both_bounds(django_assert_num_queries: Any) -> None:
    until = timezone.now().replace(microsecond=0)
    since = until - timedelta(hours=1)
    ended_at(since)  # on the lower bound: in
    ended_at(until, TaskStatus.FAILED)  # on the upper bound: in
    ended_at(since - timedelta(microseconds=1))  # before: out
    ended_at(until + timedelta(seconds=1), TaskStatus.CANCELLED)  # after: out, unless open-ended
    factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)  # not ended

    with django_assert_num_queries(1):
        bounded = stats.ended_counts(since, until)
    assert bounded == Bucket(start=since, completed=1, failed=1, cancelled=0)
    assert bounded.failure_rate == 0.5
    assert stats.ended_counts(since).cancelled == 1


@pytest.mark.django_db
def test_throughput_per_hour_and_day(django_assert_num_queries: Any) -> None:
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    ended_at(hour + timedelta(seconds=1))  # this hour
    ended_at(hour - timedelta(minutes=30), TaskStatus.FAILED)  # the previous one
    ended_at(hour - timedelta(days=3))  # a day of the window, no longer in the hours
    ended_at(hour - timedelta(days=10))  # out of the window

    with django_assert_num_queries(1):
        series = stats.throughput(now, 7)

    assert [b.start for b in series.hourly] == stats.hour_starts(now)
    assert series.hourly[-1].completed == 1
    assert series.hourly[-2].failed == 1
    assert sum(b.total for b in series.hourly) == 2
    assert [b.start for b in series.daily] == [
        timezone.localdate(now) - timedelta(days=n) for n in range(6, -1, -1)
    ]
    assert sum(b.total for b in series.daily) == 3


@pytest.mark.django_db
def test_failures_by_error_code_most_frequent_first(django_assert_num_queries: Any) -> None:
    now = timezone.now()
    for code in ("KeyError", "KeyError", "KeyError", "", "", "lost"):
        ended_at(now, TaskStatus.FAILED, error_code=code)
    ended_at(now - timedelta(days=2), TaskStatus.FAILED, error_code="old")

    with django_assert_num_queries(1):
        top = stats.failures_by_error_code(now - timedelta(days=1), now, top=2)
    assert top == [
        stats.ErrorCount(error_code="KeyError", count=3),
        stats.ErrorCount(error_code="", count=2),
    ]


# --- run times ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_slowest_kinds_by_mean(django_assert_num_queries: Any) -> None:
    now = timezone.now()
    for runtime in (1.0, 3.0):
        ended_at(now, runtime=runtime, task_type="image")
    ended_at(now, runtime=10.0, task_type="", task_name="tests.echo")  # kind: the task name
    ended_at(now, runtime=0.5, task_type="quick")
    ended_at(now, TaskStatus.FAILED, runtime=99.0, task_type="image")  # failed: no run time
    never_started = ended_at(now, runtime=50.0, task_type="image")
    TaskLog.objects.filter(pk=never_started.pk).update(started_at=None)  # no run time

    with django_assert_num_queries(1):
        slowest = stats.slowest(now - timedelta(hours=1), now, top=2)
    assert [(s.kind, s.count) for s in slowest] == [("tests.echo", 1), ("image", 2)]
    assert slowest[1].mean_seconds == pytest.approx(2.0, abs=0.001)
    assert slowest[1].max_seconds == pytest.approx(3.0, abs=0.001)


@pytest.mark.django_db
def test_runtime_percentiles_per_type(django_assert_num_queries: Any) -> None:
    now = timezone.now()
    values = [0.5, 1.0, 2.0, 4.0, 100.0]
    for runtime in values:
        ended_at(now, runtime=runtime, task_type="sample")
    ended_at(now, runtime=7.0, task_type="document")
    ended_at(now - timedelta(days=2), runtime=50.0, task_type="document")  # before the window

    with django_assert_num_queries(1):
        result = stats.runtime_percentiles(now - timedelta(days=1))

    assert not result.sampled
    by_type = {r.task_type: r for r in result.runtimes}
    assert list(by_type) == ["document", "sample"]
    assert by_type["document"].count == 1
    assert by_type["document"].p95.total_seconds() == pytest.approx(7.0, abs=0.001)
    assert by_type["sample"].count == 5
    assert by_type["sample"].p50.total_seconds() == pytest.approx(2.0, abs=0.001)
    assert by_type["sample"].p95.total_seconds() == pytest.approx(
        stats.percentile(values, 0.95), abs=0.001
    )


@pytest.mark.django_db
def test_runtime_percentiles_say_when_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL computes percentiles over every run")
    monkeypatch.setattr(stats, "RUNTIME_SAMPLE", 2)
    now = timezone.now()
    for n, runtime in enumerate((100.0, 1.0, 2.0)):
        ended_at(now - timedelta(minutes=n), runtime=runtime)
    result = stats.runtime_percentiles(now - timedelta(days=1))
    assert result.sampled
    # The two newest runs only.
    assert result.runtimes[0].count == 2
    assert result.runtimes[0].p50.total_seconds() == pytest.approx(50.5, abs=0.001)
