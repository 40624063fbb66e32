"""Beat presets: the housekeeping tasks as plain ``beat_schedule`` entries.

Merge them into your schedule::

    from datetime import timedelta

    from celery.schedules import crontab
    from django_taskqueue.beat import beat_schedule

    CELERY_BEAT_SCHEDULE = {
        **beat_schedule(mark_stale=timedelta(minutes=2), report=None),
        # ... your own entries
    }

With django-celery-beat, ``manage.py taskqueue_beat_sync`` (the
``django_taskqueue.contrib.beat`` app) installs them as ``PeriodicTask`` rows.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celery.schedules import crontab

#: The preset keys, in schedule order, mapped to their Celery task names.
TASKS: dict[str, str] = {
    "cleanup": "django_taskqueue.cleanup",
    "mark_stale": "django_taskqueue.mark_stale",
    "reconcile_lost": "django_taskqueue.reconcile_lost",
    "report": "django_taskqueue.report",
}

#: The default entries, keyed by their beat entry name (= the task name).
#: ``expires`` drops a run that could not start before the next one is due,
#: so a beat that was down does not replay a backlog of housekeeping.
PRESETS: dict[str, dict[str, Any]] = {
    "django_taskqueue.cleanup": {
        "task": "django_taskqueue.cleanup",
        "schedule": crontab(minute="17", hour="3"),
        "options": {"expires": 6 * 3600},
    },
    "django_taskqueue.mark_stale": {
        "task": "django_taskqueue.mark_stale",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 4 * 60},
    },
    "django_taskqueue.reconcile_lost": {
        "task": "django_taskqueue.reconcile_lost",
        "schedule": timedelta(minutes=15),
        "options": {"expires": 14 * 60},
    },
    "django_taskqueue.report": {
        "task": "django_taskqueue.report",
        "schedule": crontab(minute="0", hour="7"),
        "kwargs": {"window_hours": 24},
        "options": {"expires": 6 * 3600},
    },
}


def _as_schedule(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError("a schedule cannot be a bool")
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    return value


def beat_schedule(**overrides: Any) -> dict[str, dict[str, Any]]:
    """The presets as a ``beat_schedule`` dict, with overridable timings.

    Each keyword is a preset key (``cleanup``, ``mark_stale``,
    ``reconcile_lost``, ``report``) and takes:

    - a schedule: a :class:`~datetime.timedelta`, a number of seconds, a
      :class:`~celery.schedules.crontab` or any other Celery schedule;
    - a dict merged into the entry (``schedule``, ``kwargs``, ``options``, ...;
      ``options`` is merged key by key), e.g. ``report={"kwargs": {"window_hours": 168}}``;
    - ``None`` to leave the preset out.

    Returns:
        A new dict (deep-copied: changing it does not change the presets).

    Raises:
        TypeError: an unknown preset key or a value of the wrong type.
    """
    unknown = sorted(set(overrides) - set(TASKS))
    if unknown:
        raise TypeError(
            f"unknown preset(s) {', '.join(unknown)}; the presets are {', '.join(TASKS)}"
        )
    schedule: dict[str, dict[str, Any]] = {}
    for key, task_name in TASKS.items():
        entry = copy.deepcopy(PRESETS[task_name])
        if key in overrides:
            value = overrides[key]
            if value is None:
                continue
            if isinstance(value, Mapping):
                extra = dict(value)
                options = {**entry.get("options", {}), **dict(extra.pop("options", None) or {})}
                entry.update(extra)
                entry["options"] = options
                if "schedule" in extra:
                    entry["schedule"] = _as_schedule(extra["schedule"])
            else:
                entry["schedule"] = _as_schedule(value)
        schedule[task_name] = entry
    return schedule
