"""The periodic summary (mail and log) and the taskqueue_stats command."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test.utils import override_settings
from django.utils import timezone

from django_taskqueue import housekeeping
from django_taskqueue.management.commands.taskqueue_stats import render_table
from tests import factories

pytestmark = pytest.mark.django_db


def _day() -> None:
    """A day of work: 3 completed (two types), 1 failed, 1 cancelled, and old tasks."""
    ended = factories.ago(hours=1)
    seconds = timedelta(seconds=1)
    factories.task("completed", completed_at=ended, runtime=2 * seconds, task_type="image")
    factories.task("completed", completed_at=ended, runtime=4 * seconds, task_type="image")
    factories.task("completed", completed_at=ended, runtime=10 * seconds, task_name="tests.echo")
    factories.task("failed", completed_at=ended, error_code="ValueError")
    factories.task("cancelled", completed_at=ended, ran=True)
    factories.task("failed", completed_at=factories.ago(days=3))  # outside the window
    factories.task("processing", heartbeat_at=factories.ago(hours=2))  # stuck


def test_build_report_counts_rates_and_slowest_types() -> None:
    _day()
    report = housekeeping.build_report(timedelta(days=1))

    assert report["finished"] == {"completed": 3, "failed": 1, "cancelled": 1}
    assert report["failure_rate"] == 0.25
    # Created in the window: every row above was created just now.
    assert report["created"]["total"] == 7
    assert [r["type"] for r in report["slowest"]] == ["tests.echo", "image"]
    assert report["slowest"][0]["mean_seconds"] == pytest.approx(10.0, abs=0.01)
    assert report["slowest"][1] == {
        "type": "image",
        "count": 2,
        "mean_seconds": pytest.approx(3.0, abs=0.01),
        "max_seconds": pytest.approx(4.0, abs=0.01),
    }
    assert report["errors"] == [{"error_code": "ValueError", "count": 1}]
    assert report["stuck"] == 1
    assert report["active"] == 1


def test_nothing_finished_has_no_failure_rate() -> None:
    report = housekeeping.build_report(timedelta(hours=1))
    assert report["failure_rate"] is None
    assert "Failure rate: n/a" in housekeeping.format_report(report)


@override_settings(DJANGO_TASKQUEUE={"REPORT_RECIPIENTS": ["ops@example.com", "me@example.com"]})
def test_send_report_mails_the_recipients_and_logs(mailoutbox: list[Any], caplog: Any) -> None:
    _day()
    with caplog.at_level(logging.INFO, logger="django_taskqueue.housekeeping"):
        report = housekeeping.send_report(timedelta(days=1))

    assert report["recipients"] == ["ops@example.com", "me@example.com"]
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com", "me@example.com"]
    assert mail.subject == "[django-taskqueue] 7 tasks, 25.0% failed in the last 1 day"
    assert "Failure rate: 25.0%" in mail.body
    assert "tests.echo: 10.000 / 10.000, 1" in mail.body
    assert "ValueError: 1" in mail.body
    assert "Failure rate: 25.0%" in caplog.text


def test_send_report_without_recipients_only_logs(mailoutbox: list[Any], caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="django_taskqueue.housekeeping"):
        report = housekeeping.send_report(timedelta(hours=6))
    assert report["recipients"] == []
    assert mailoutbox == []
    assert "django-taskqueue summary" in caplog.text


def test_the_report_task_runs_the_same_code(celery_app: Any, mailoutbox: list[Any]) -> None:
    from django_taskqueue.tasks import report

    _day()
    with override_settings(DJANGO_TASKQUEUE={"REPORT_RECIPIENTS": ["ops@example.com"]}):
        result = report.run(window_hours=24)  # the task body, in this process
    assert result["failure_rate"] == 0.25
    assert len(mailoutbox) == 1


def test_stats_command_prints_tables() -> None:
    _day()
    out = StringIO()
    call_command("taskqueue_stats", stdout=out)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["status", "all", "time", "created", "(last", "24h)"]
    assert any(line.split() == ["completed", "3", "3"] for line in lines)
    assert any(line.split() == ["failed", "2", "2"] for line in lines)
    assert "failure rate 25.0%" in text
    assert "stuck now 1" in text
    assert any(line.split()[:2] == ["tests.echo", "1"] for line in lines)


def test_stats_command_json() -> None:
    _day()
    out = StringIO()
    call_command("taskqueue_stats", "--json", "--window", "2h", stdout=out)
    data = json.loads(out.getvalue())
    assert data["all_time"]["failed"] == 2
    assert data["finished"]["failed"] == 1
    assert data["window_seconds"] == 7200


def test_stats_command_rejects_a_bad_window() -> None:
    with pytest.raises(CommandError, match="--window"):
        call_command("taskqueue_stats", "--window", "yesterday")


def test_render_table_aligns_numbers_right() -> None:
    table = render_table(["name", "n"], [["a", 1], ["bbb", 100]])
    assert table.splitlines() == ["name    n", "----  ---", "a       1", "bbb   100"]


def test_report_figures_exactly() -> None:
    """Every figure of the report, with its window bounds, fallbacks and rounding."""
    now, hour, second = timezone.now(), timedelta(hours=1), timedelta(seconds=1)
    ended = now - hour
    factories.task("completed", completed_at=ended, runtime=1.23456 * second, task_type="image")
    factories.task("completed", completed_at=ended, runtime=2 * second, task_type="image")
    # No task_type: grouped under the task name.
    factories.task("completed", completed_at=ended, runtime=5 * second, task_name="tests.echo")
    factories.task("failed", completed_at=ended, error_code="")
    factories.task("failed", completed_at=now - 2 * hour, error_code="KeyError")
    factories.task("failed", completed_at=now - 3 * hour, error_code="KeyError")
    factories.task("cancelled", completed_at=ended, ran=True)
    factories.task("completed", completed_at=now + hour, runtime=50 * second)  # ends after "now"
    factories.task("completed", completed_at=now - 48 * hour, runtime=70 * second)  # before
    factories.task("processing", heartbeat_at=now - 2 * hour)
    factories.task("processing", heartbeat_at=now - second)
    factories.task(created_at=now - 72 * hour)

    report = housekeeping.build_report(timedelta(days=1), top=2)

    assert report["finished"] == {"completed": 3, "failed": 3, "cancelled": 1}
    assert report["failure_rate"] == 0.5
    assert report["slowest"] == [
        {"type": "tests.echo", "count": 1, "mean_seconds": 5.0, "max_seconds": 5.0},
        {"type": "image", "count": 2, "mean_seconds": 1.617, "max_seconds": 2.0},
    ]
    assert report["errors"] == [
        {"error_code": "KeyError", "count": 2},
        {"error_code": "(none)", "count": 1},
    ]
    assert report["stuck"] == 1
    assert report["active"] == 3
    assert report["created"]["pending"] == 0
    assert report["created"]["total"] == 11
    assert report["window_seconds"] == 86400.0

    text = housekeeping.format_report(report)
    assert "Finished: completed 3, failed 3, cancelled 1\n" in text
    assert "Failure rate: 50.0%\n" in text
    assert "Active now: 3, stuck now: 1\n" in text
    assert "  image: 1.617 / 2.000, 2\n" in text
    assert "  (none): 1\n" in text


def test_report_failure_rate_has_four_decimals() -> None:
    for status in ("completed", "completed", "failed"):
        factories.task(status, completed_at=factories.ago(hours=1), ran=True)
    report = housekeeping.build_report(timedelta(days=1))
    assert report["failure_rate"] == 0.3333
    assert "Failure rate: 33.3%" in housekeeping.format_report(report)
