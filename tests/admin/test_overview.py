"""The overview page and the figures behind it."""

from __future__ import annotations

import importlib
import statistics
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import clear_url_caches, reverse
from django.utils import timezone

import tests.urls
from django_taskqueue.admin.overview import WINDOW_DAYS, build_overview
from django_taskqueue.models import TaskLog
from django_taskqueue.stats import percentile
from django_taskqueue.status import TaskStatus
from tests import factories

URL = reverse("admin:django_taskqueue_tasklog_overview")


def ended(status: str, *, hours_ago: float, runtime: float, task_type: str = "sample") -> Any:
    end = factories.ago(hours=hours_ago)
    return factories.task(
        status,
        task_type=task_type,
        created_at=end - timedelta(seconds=runtime + 1),
        started_at=end - timedelta(seconds=runtime),
        completed_at=end,
        args=[1, 2],
        **factories.BOOM,
    )


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9, 0.95, 1.0])
def test_percentile_matches_linear_interpolation(fraction: float) -> None:
    values = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3])
    expected = (
        values[0]
        if fraction == 0
        else values[-1]
        if fraction == 1
        else statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]
    )
    assert percentile(values, fraction) == pytest.approx(expected)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


@pytest.mark.django_db
def test_counts_buckets_and_runtimes() -> None:
    for runtime in (1, 2, 3, 4, 100):
        ended(TaskStatus.COMPLETED, hours_ago=1.5, runtime=runtime)
    ended(TaskStatus.COMPLETED, hours_ago=30, runtime=10, task_type="document")
    ended(TaskStatus.FAILED, hours_ago=1.5, runtime=1)
    ended(TaskStatus.CANCELLED, hours_ago=1.5, runtime=1)
    old = ended(TaskStatus.FAILED, hours_ago=24 * (WINDOW_DAYS + 2), runtime=1)
    factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)
    factories.task(
        TaskStatus.PENDING, created_at=factories.ago(days=WINDOW_DAYS + 5), **factories.SAMPLE_TASK
    )

    overview = build_overview(stale_after=timedelta(minutes=15))

    # Created in the window (today and the six days before).
    assert overview.window_counts[TaskStatus.COMPLETED] == 6
    assert overview.window_counts[TaskStatus.FAILED] == 1
    assert overview.window_counts[TaskStatus.PENDING] == 1
    # Active ones of any age.
    assert overview.active_counts[TaskStatus.PENDING] == 2
    # Recent failures are the newest ones, of any age.
    assert overview.failures[-1].pk == old.pk

    assert len(overview.hourly) == 24
    assert len(overview.daily) == WINDOW_DAYS
    hour = timezone.localtime(factories.ago(hours=1.5)).replace(minute=0, second=0, microsecond=0)
    bucket = next(b for b in overview.hourly if b.start == hour)
    assert (bucket.completed, bucket.failed, bucket.cancelled) == (5, 1, 1)
    assert bucket.failure_percent == pytest.approx(100 / 6)
    assert sum(b.total for b in overview.hourly) == 7
    assert sum(b.total for b in overview.daily) == 8
    assert overview.daily[-1].start == timezone.localdate()

    by_type = {r.task_type: r for r in overview.runtimes}
    assert by_type["sample"].count == 5
    assert by_type["sample"].p50.total_seconds() == pytest.approx(3.0, abs=0.01)
    assert by_type["sample"].p95.total_seconds() == pytest.approx(80.8, abs=0.01)
    assert by_type["document"].p50.total_seconds() == pytest.approx(10.0, abs=0.01)


@pytest.mark.django_db
def test_stuck_and_failures() -> None:
    stuck = factories.task(
        TaskStatus.PROCESSING, heartbeat_at=factories.ago(hours=2), **factories.SAMPLE_TASK
    )
    fresh = factories.task(
        TaskStatus.PROCESSING, heartbeat_at=factories.ago(minutes=1), **factories.SAMPLE_TASK
    )
    failures = [ended(TaskStatus.FAILED, hours_ago=h, runtime=1) for h in (5, 1, 3)]
    overview = build_overview(stale_after=timedelta(minutes=15))
    assert [t.pk for t in overview.stuck] == [stuck.pk]
    assert fresh.pk not in {t.pk for t in overview.stuck}
    assert [t.pk for t in overview.failures] == [failures[1].pk, failures[2].pk, failures[0].pk]


@pytest.mark.django_db
def test_page_renders_everything(admin_client: Any) -> None:
    ended(TaskStatus.COMPLETED, hours_ago=1, runtime=2)
    failed = ended(TaskStatus.FAILED, hours_ago=2, runtime=1)
    stuck = factories.task(
        TaskStatus.PROCESSING,
        heartbeat_at=factories.ago(hours=2),
        task_name="imports.stuck",
        **factories.SAMPLE_TASK,
    )
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg class="tq-chart"') == 4
    assert "completed, 0 failed, 0 cancelled</title>" in html
    assert 'id="tq-runtimes"' in html
    assert reverse("admin:django_taskqueue_tasklog_change", args=[stuck.pk]) in html
    assert reverse("admin:django_taskqueue_tasklog_change", args=[failed.pk]) in html
    assert "ValueError: boom" in html
    assert "?status__exact=failed" in html
    # No CDN, no script: the charts are inline SVG.
    assert '<script src="http' not in html


@pytest.mark.django_db
def test_page_is_linked_from_changelist_and_app_index(admin_client: Any) -> None:
    changelist = admin_client.get(reverse("admin:django_taskqueue_tasklog_changelist"))
    assert URL in changelist.content.decode()
    app_index = admin_client.get(reverse("admin:app_list", args=["django_taskqueue"]))
    assert URL in app_index.content.decode()


@pytest.mark.django_db
def test_query_count_is_constant(admin_client: Any, django_assert_num_queries: Any) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(URL).status_code == 200
        return len(queries)

    empty = count()
    for h in range(30):
        ended(TaskStatus.FAILED if h % 4 == 0 else TaskStatus.COMPLETED, hours_ago=h * 3, runtime=h)
        factories.task(
            TaskStatus.PROCESSING, heartbeat_at=factories.ago(hours=1 + h), **factories.SAMPLE_TASK
        )
    assert count() == empty
    # session, user, window counts, active counts, buckets, runtimes, stuck, failures
    # (+1 on PostgreSQL: the table estimate).
    with django_assert_num_queries(8 if connection.vendor != "postgresql" else 9):
        admin_client.get(URL)


@pytest.mark.django_db
def test_permissions(client: Any) -> None:
    client.force_login(factories.user("nobody", staff=True))
    assert client.get(URL).status_code == 403
    client.force_login(factories.user("viewer", staff=True, perms=("view_tasklog",)))
    assert client.get(URL).status_code == 200
    client.logout()
    assert client.get(URL).status_code == 302


@pytest.mark.integration
@pytest.mark.django_db
def test_postgresql_percentiles_match_the_python_ones() -> None:
    from django_taskqueue.stats import _percentiles_sample, _percentiles_sql

    assert connection.vendor == "postgresql"
    for runtime in (1, 2, 3, 4, 100, 7, 0.5):
        ended(TaskStatus.COMPLETED, hours_ago=2, runtime=runtime)
    since = factories.ago(days=1)
    sql = _percentiles_sql(since)
    sample = _percentiles_sample(since)
    python, sampled = sample.runtimes, sample.sampled
    assert not sampled
    assert [(r.task_type, r.count) for r in sql] == [(r.task_type, r.count) for r in python]
    for a, b in zip(sql, python, strict=True):
        assert a.p50.total_seconds() == pytest.approx(b.p50.total_seconds(), abs=0.001)
        assert a.p95.total_seconds() == pytest.approx(b.p95.total_seconds(), abs=0.001)


@pytest.mark.django_db
def test_app_index_without_the_tasklog_admin(admin_client: Any) -> None:
    """A site that unregisters TaskLog keeps a working app index (no overview link)."""
    registered = admin.site._registry[TaskLog]
    admin.site.unregister(TaskLog)
    try:
        clear_url_caches()
        importlib.reload(tests.urls)
        response = admin_client.get("/admin/django_taskqueue/")
        assert response.status_code == 200
        assert "Task overview" not in response.content.decode()
    finally:
        admin.site._registry[TaskLog] = registered
        clear_url_caches()
        importlib.reload(tests.urls)


@pytest.mark.django_db
def test_page_shows_each_figure(admin_client: Any) -> None:
    """The figures as the page prints them: counts, hover texts with rates, runtimes."""
    # The previous hour's middle: one hourly bucket, whatever the minute now.
    end = timezone.localtime().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    for runtime in (0.5, 2, 3, 130):
        ended(
            TaskStatus.COMPLETED,
            hours_ago=(timezone.now() - end).total_seconds() / 3600,
            runtime=runtime,
        )
    for _ in range(2):
        ended(
            TaskStatus.FAILED,
            hours_ago=(timezone.now() - end).total_seconds() / 3600,
            runtime=1,
            task_type="document",
        )
    ended(TaskStatus.CANCELLED, hours_ago=(timezone.now() - end).total_seconds() / 3600, runtime=1)
    factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)

    response = admin_client.get(URL)
    html = response.content.decode()
    label = end.strftime("%H:00")
    assert f"<title>{label}: 4 completed, 2 failed, 1 cancelled</title>" in html
    assert f"<title>{label}: 33.3% failed (2 of 6)</title>" in html
    day = end.strftime("%a %d")
    if end.date() == timezone.localdate():
        assert f"<title>{day}: 4 completed, 2 failed, 1 cancelled</title>" in html
        assert f"<title>{day}: 33.3% failed (2 of 6)</title>" in html
    rows = {
        status.value: (created, active)
        for status, created, active in response.context["status_rows"]
    }
    assert rows["completed"] == (4, None)
    assert rows["failed"] == (2, None)
    assert rows["pending"] == (1, 1)
    assert response.context["runtime_rows"] == [("sample", 4, "2.5 s", "1 min 50 s")]
