"""The settings object reads settings live."""

from __future__ import annotations

from django.test import override_settings

from django_taskqueue.conf import DEFAULTS, TaskQueueSettings, conf


def test_defaults_when_unset() -> None:
    with override_settings(DJANGO_TASKQUEUE={}):
        assert conf.ENABLED is True
        assert DEFAULTS["PROGRESS_MIN_INTERVAL"] == conf.PROGRESS_MIN_INTERVAL
        assert DEFAULTS["REDACT_KEYS"] == conf.REDACT_KEYS


def test_values_are_read_live() -> None:
    with override_settings(DJANGO_TASKQUEUE={"PROGRESS_HISTORY_STEP": 2, "REDACT_KEYS": ["PIN"]}):
        assert conf.PROGRESS_HISTORY_STEP == 2.0
        assert conf.REDACT_KEYS == ("pin",)
    with override_settings(DJANGO_TASKQUEUE={"PROGRESS_HISTORY_STEP": 7}):
        assert conf.PROGRESS_HISTORY_STEP == 7.0


def test_every_default_has_a_property() -> None:
    names = {name for name in dir(TaskQueueSettings) if name.isupper()}
    assert names == set(DEFAULTS)
