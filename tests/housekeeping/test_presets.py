"""The beat presets: plain dicts with overridable timings, and the task names they use."""

from __future__ import annotations

import importlib
import sys
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab

from django_taskqueue.beat import PRESETS, beat_schedule


def test_default_presets_name_registered_tasks(celery_app: Celery) -> None:
    schedule = beat_schedule()
    assert list(schedule) == [
        "django_taskqueue.cleanup",
        "django_taskqueue.mark_stale",
        "django_taskqueue.reconcile_lost",
        "django_taskqueue.report",
    ]
    for entry in schedule.values():
        assert entry["task"] in celery_app.tasks
    assert schedule["django_taskqueue.mark_stale"]["schedule"] == timedelta(minutes=5)
    assert schedule["django_taskqueue.cleanup"]["schedule"] == crontab(minute="17", hour="3")


def test_overrides_take_a_schedule_seconds_a_dict_or_none() -> None:
    schedule = beat_schedule(
        mark_stale=timedelta(minutes=1),
        reconcile_lost=30,
        report={"kwargs": {"window_hours": 168}, "options": {"queue": "ops"}},
        cleanup=None,
    )
    assert "django_taskqueue.cleanup" not in schedule
    assert schedule["django_taskqueue.mark_stale"]["schedule"] == timedelta(minutes=1)
    assert schedule["django_taskqueue.reconcile_lost"]["schedule"] == timedelta(seconds=30)
    report = schedule["django_taskqueue.report"]
    assert report["kwargs"] == {"window_hours": 168}
    assert report["options"] == {"expires": 6 * 3600, "queue": "ops"}  # merged, not replaced
    assert report["schedule"] == crontab(minute="0", hour="7")


def test_the_result_is_a_copy() -> None:
    schedule = beat_schedule()
    schedule["django_taskqueue.report"]["kwargs"]["window_hours"] = 1
    assert PRESETS["django_taskqueue.report"]["kwargs"] == {"window_hours": 24}


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown preset"):
        beat_schedule(vacuum=60)


def test_the_contrib_app_names_the_extra_when_beat_is_missing(monkeypatch: Any) -> None:
    for name in [m for m in sys.modules if m.startswith("django_taskqueue.contrib.beat")]:
        monkeypatch.delitem(sys.modules, name)
    # Without the beat extra (the minimal env) this is the real thing; with it, a None
    # entry in sys.modules makes the import fail the same way.
    monkeypatch.setitem(sys.modules, "django_celery_beat", None)
    with pytest.raises(ImportError, match=r'pip install "django-taskqueue\[beat\]"'):
        importlib.import_module("django_taskqueue.contrib.beat")
