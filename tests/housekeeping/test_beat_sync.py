"""The django-celery-beat integration: schedule sync and missed-run monitoring."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest

pytest.importorskip("django_celery_beat")

from celery.schedules import crontab
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from django_taskqueue.beat import beat_schedule
from django_taskqueue.contrib.beat.monitor import missed_runs
from django_taskqueue.contrib.beat.sync import MARKER, sync_schedule

pytestmark = pytest.mark.django_db


def _snapshot() -> list[tuple[Any, ...]]:
    return list(
        PeriodicTask.objects.order_by("name").values_list(
            "name",
            "task",
            "interval_id",
            "crontab_id",
            "args",
            "kwargs",
            "enabled",
            "expire_seconds",
            "queue",
            "description",
            "date_changed",
        )
    )


def test_sync_creates_then_changes_nothing_the_second_time() -> None:
    first = sync_schedule(beat_schedule())
    assert sorted(first.names("create")) == sorted(beat_schedule())
    rows = _snapshot()
    changed = PeriodicTasks.last_change()

    second = sync_schedule(beat_schedule())

    assert second.changes == []
    assert sorted(second.unchanged) == sorted(beat_schedule())
    assert _snapshot() == rows  # not even date_changed moved
    assert PeriodicTasks.last_change() == changed  # running beats are not told to reload
    stale = PeriodicTask.objects.get(name="django_taskqueue.mark_stale")
    assert (stale.interval.every, stale.interval.period) == (300, IntervalSchedule.SECONDS)
    assert stale.expire_seconds == 240
    assert stale.description == MARKER
    cleanup = PeriodicTask.objects.get(name="django_taskqueue.cleanup")
    assert (cleanup.crontab.minute, cleanup.crontab.hour) == ("17", "3")
    report = PeriodicTask.objects.get(name="django_taskqueue.report")
    assert json.loads(report.kwargs) == {"window_hours": 24}


def test_sync_updates_what_differs_and_disables_what_was_removed() -> None:
    sync_schedule(beat_schedule())
    result = sync_schedule(beat_schedule(mark_stale=timedelta(minutes=1), report=None))

    assert result.names("update") == ["django_taskqueue.mark_stale"]
    assert result.names("disable") == ["django_taskqueue.report"]
    update = next(c for c in result.changes if c.action == "update")
    assert update.fields == {"schedule": ("every 300s", "every 60s")}
    assert PeriodicTask.objects.get(name="django_taskqueue.mark_stale").interval.every == 60
    report = PeriodicTask.objects.get(name="django_taskqueue.report")
    assert not report.enabled
    # Idempotent in this state too.
    assert sync_schedule(beat_schedule(mark_stale=timedelta(minutes=1), report=None)).changes == []

    # Putting the entry back enables the row again.
    back = sync_schedule(beat_schedule(mark_stale=timedelta(minutes=1)))
    assert back.names("update") == ["django_taskqueue.report"]
    assert PeriodicTask.objects.get(name="django_taskqueue.report").enabled


def test_rows_someone_else_owns_or_disabled_are_respected() -> None:
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.create(name="theirs", task="tests.add", interval=every_minute)
    sync_schedule(beat_schedule())
    PeriodicTask.objects.filter(name="django_taskqueue.report").update(enabled=False)

    result = sync_schedule(beat_schedule(cleanup=None))

    assert result.names("disable") == ["django_taskqueue.cleanup"]  # not "theirs"
    assert PeriodicTask.objects.get(name="theirs").enabled
    assert "django_taskqueue.report" in result.unchanged  # an admin switched it off: it stays off
    assert not PeriodicTask.objects.get(name="django_taskqueue.report").enabled


def test_a_row_of_the_same_name_is_taken_over() -> None:
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.create(
        name="django_taskqueue.mark_stale",
        task="django_taskqueue.mark_stale",
        interval=every_minute,
    )
    result = sync_schedule(beat_schedule())
    assert "django_taskqueue.mark_stale" in result.names("update")
    assert PeriodicTask.objects.get(name="django_taskqueue.mark_stale").description == MARKER


def test_dry_run_writes_nothing() -> None:
    result = sync_schedule(beat_schedule(), dry_run=True)
    assert len(result.names("create")) == 4
    assert not PeriodicTask.objects.exists()
    assert not IntervalSchedule.objects.exists()


def test_sub_second_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        sync_schedule(beat_schedule(mark_stale=0.5))


def test_sync_command_shows_the_diff_and_is_idempotent() -> None:
    out = StringIO()
    call_command("taskqueue_beat_sync", "--dry-run", stdout=out)
    text = out.getvalue()
    assert (
        "+ django_taskqueue.cleanup (task=django_taskqueue.cleanup, schedule=cron '17 3 * * *' UTC"
        in text
    )
    assert "Dry run: 4 to create, 0 to update, 0 to disable, 0 unchanged." in text
    assert not PeriodicTask.objects.exists()

    out = StringIO()
    call_command("taskqueue_beat_sync", stdout=out)
    assert "4 create, 0 update, 0 disable, 0 unchanged." in out.getvalue()
    out = StringIO()
    call_command("taskqueue_beat_sync", stdout=out)
    assert out.getvalue().strip().endswith("0 create, 0 update, 0 disable, 4 unchanged.")


SHORT = {
    "only-this": {"task": "tests.add", "schedule": crontab(minute="*/5"), "args": [1, 2]},
}


def test_sync_command_takes_another_schedule_and_disables_the_rest() -> None:
    call_command("taskqueue_beat_sync", stdout=StringIO())
    out = StringIO()
    call_command("taskqueue_beat_sync", "--schedule", f"{__name__}.SHORT", stdout=out)
    text = out.getvalue()
    assert "+ only-this" in text
    assert "- django_taskqueue.cleanup (enabled: True -> False)" in text
    assert set(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True)) == {
        "only-this"
    }


def test_sync_command_rejects_what_is_not_a_schedule() -> None:
    with pytest.raises(CommandError, match="cannot import"):
        call_command("taskqueue_beat_sync", "--schedule", "nowhere.SCHEDULE")
    with pytest.raises(CommandError, match="not a beat_schedule dict"):
        call_command("taskqueue_beat_sync", "--schedule", "django_taskqueue.beat.TASKS")


# --- missed runs -------------------------------------------------------------------------


def _periodic(name: str, *, every: int = 60, last_run: timedelta | None, **fields: Any) -> Any:
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    task = PeriodicTask.objects.create(name=name, task="tests.add", interval=interval, **fields)
    if last_run is not None:
        PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now() - last_run)
    return task


def test_missed_runs_reports_overdue_enabled_tasks() -> None:
    _periodic("late", last_run=timedelta(hours=1))  # due 59 minutes ago
    _periodic("on-time", last_run=timedelta(seconds=30))
    _periodic("slightly-late", last_run=timedelta(minutes=3))  # within the 5-minute grace
    _periodic("off", last_run=timedelta(hours=1), enabled=False)
    _periodic("not-yet", last_run=timedelta(hours=1), start_time=timezone.now() + timedelta(days=1))
    daily, _ = IntervalSchedule.objects.get_or_create(every=86400, period="seconds")
    PeriodicTask.objects.create(name="daily-new", task="tests.add", interval=daily)

    missed = missed_runs()

    assert [m.name for m in missed] == ["late"]
    assert missed[0].overdue_seconds == pytest.approx(59 * 60, abs=5)
    assert missed[0].as_dict()["last_run_at"]
    assert [m.name for m in missed_runs(grace=timedelta(minutes=1))] == ["late", "slightly-late"]


def test_missed_runs_understands_crontabs() -> None:
    from django_celery_beat.models import CrontabSchedule

    hourly = CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
    task = PeriodicTask.objects.create(name="hourly", task="tests.add", crontab=hourly)
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now() - timedelta(hours=3))
    assert [m.name for m in missed_runs()] == ["hourly"]
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now())
    assert missed_runs() == []


def test_beat_check_command_exits_non_zero_on_missed_runs() -> None:
    out = StringIO()
    call_command("taskqueue_beat_check", stdout=out)
    assert "No missed runs." in out.getvalue()

    _periodic("late", last_run=timedelta(hours=1))
    out = StringIO()
    with pytest.raises(CommandError, match="1 periodic task") as raised:
        call_command("taskqueue_beat_check", stdout=out)
    assert raised.value.returncode == 1
    assert "late" in out.getvalue()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("taskqueue_beat_check", "--json", "--grace", "10m", stdout=out)
    assert json.loads(out.getvalue())[0]["name"] == "late"
    call_command("taskqueue_beat_check", "--grace", "2h", stdout=StringIO())  # exits 0
