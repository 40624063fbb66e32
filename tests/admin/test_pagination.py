"""The capped-count paginator and the SVG charts (pure parts of the admin)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from django_taskqueue.admin.charts import Bar, Segment, _nice_ceiling, bar_chart
from django_taskqueue.admin.pagination import CappedCountPaginator, table_estimate
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories


class SmallCap(CappedCountPaginator):
    cap = 4


@pytest.mark.django_db
def test_exact_below_the_cap() -> None:
    for _ in range(3):
        factories.task(**factories.SAMPLE_TASK)
    paginator = SmallCap(TaskLog.objects.filter(status=TaskStatus.PENDING), 2)
    assert paginator.count == 3
    assert not paginator.is_capped
    assert not paginator.is_estimate
    assert paginator.num_pages == 2


@pytest.mark.django_db
def test_capped_above_the_cap() -> None:
    for _ in range(6):
        factories.task(**factories.SAMPLE_TASK)
    paginator = SmallCap(
        TaskLog.objects.filter(status=TaskStatus.PENDING).order_by("-created_at"), 2
    )
    assert paginator.count == 4
    assert paginator.is_capped
    assert paginator.num_pages == 2
    assert len(paginator.page(2).object_list) == 2


@pytest.mark.django_db
def test_unfiltered_without_estimate_is_capped_count() -> None:
    for _ in range(6):
        factories.task(**factories.SAMPLE_TASK)
    if connection.vendor == "sqlite":
        assert table_estimate(TaskLog.objects.all()) is None
    paginator = SmallCap(TaskLog.objects.all(), 10)
    assert paginator.count in (4, 6)


def test_plain_lists_are_counted() -> None:
    assert CappedCountPaginator([1, 2, 3], 2).count == 3


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_postgresql_estimate_for_the_unfiltered_list() -> None:
    for _ in range(12):
        factories.task(**factories.SAMPLE_TASK)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskLog._meta.db_table}")
    assert table_estimate(TaskLog.objects.all()) == 12
    paginator = SmallCap(TaskLog.objects.all(), 5)
    assert paginator.count == 12
    assert paginator.is_estimate
    filtered = SmallCap(TaskLog.objects.filter(status=TaskStatus.PENDING), 5)
    assert filtered.count == 4
    assert filtered.is_capped


def test_nice_ceiling() -> None:
    assert [_nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 12, 99, 101, 4999)] == [
        1.0,
        0.5,
        1.0,
        5.0,
        10.0,
        20.0,
        100.0,
        200.0,
        5000.0,
    ]


def test_bar_chart_scales_stacks_and_escapes() -> None:
    bars = [
        Bar(
            segments=(
                Segment(30, "tq-fill-completed", "#0a0"),
                Segment(10, "tq-fill-failed", "#a00"),
            ),
            title="<b>hour</b>",
            axis_label="00:00",
        ),
        Bar(segments=(Segment(0, "tq-fill-completed", "#0a0"),), title="empty"),
    ]
    svg = str(bar_chart(bars, label='say "hi"'))
    assert svg.startswith('<svg class="tq-chart"')
    assert 'aria-label="say &quot;hi&quot;"' in svg
    assert "<title>&lt;b&gt;hour&lt;/b&gt;</title>" in svg
    # Axis top is 50 (a round number above 40); 40 of 50 fills 80% of the 170px plot.
    assert 'height="102.0"' in svg  # the completed segment: 30/50 of 170
    assert 'height="34.0"' in svg  # the failed segment: 10/50 of 170
    assert ">50<" in svg
    assert svg.count('class="tq-fill-completed"') == 1  # zero-height segments are left out
    assert ">00:00</text>" in svg


def test_rate_chart_has_a_fixed_axis() -> None:
    svg = str(
        bar_chart(
            [Bar(segments=(Segment(25.0, "tq-fill-failed", "#a00"),), title="25%")],
            label="rate",
            max_value=100,
            unit="%",
        )
    )
    assert ">100%<" in svg
    assert ">50%<" in svg
    assert 'height="42.5"' in svg


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_postgresql_changelist_says_estimated(admin_client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(CappedCountPaginator, "cap", 4)
    for _ in range(12):
        factories.task(**factories.SAMPLE_TASK)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TaskLog._meta.db_table}")
    response = admin_client.get(reverse("admin:django_taskqueue_tasklog_changelist"))
    assert response.context["cl"].paginator.is_estimate
    assert "about 12 task logs (estimated)" in " ".join(response.content.decode().split())
