"""The settings object reads settings live."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import override_settings

from django_taskqueue.checks import check_settings, setting_errors
from django_taskqueue.conf import DEFAULTS, DOCS_URL, TaskQueueSettings, conf


@pytest.fixture(autouse=True)
def _nothing_reported() -> None:
    """Each test sees its own lines: a wrong value is reported once per process."""
    conf._reported.clear()


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


BAD = {"PROGRESS_MIN_INTERVAL": "fast", "RESULT_MAX_BYTES": 10, "PROGRESS_HISTORY_STEP": 2}


def errors_of(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "django_taskqueue" and r.levelno == logging.ERROR
    ]


def test_a_wrong_value_is_read_as_the_default_with_one_logged_error(caplog: Any) -> None:
    """A value the checks reject must not fail every task that reads it (it raised ValueError)."""
    with override_settings(DJANGO_TASKQUEUE=BAD), caplog.at_level(logging.ERROR):
        for _ in range(3):
            assert DEFAULTS["PROGRESS_MIN_INTERVAL"] == conf.PROGRESS_MIN_INTERVAL
            assert DEFAULTS["RESULT_MAX_BYTES"] == conf.RESULT_MAX_BYTES
            # A right value next to them is still read.
            assert conf.PROGRESS_HISTORY_STEP == 2.0
        # manage.py check still reports both.
        assert {m.id for m in check_settings()} == {
            "django_taskqueue.E004",
            "django_taskqueue.E007",
        }
    lines = errors_of(caplog)
    assert len(lines) == 2, lines
    interval = next(line for line in lines if "PROGRESS_MIN_INTERVAL" in line)
    assert interval.startswith("django_taskqueue.E004: ")
    assert "Got 'fast'" in interval
    assert "the default, 0.5," in interval
    assert "checks.html#e004" in interval


def test_a_fixed_value_is_read_again(caplog: Any) -> None:
    with override_settings(DJANGO_TASKQUEUE={"PROGRESS_MIN_INTERVAL": -1}):
        assert conf.PROGRESS_MIN_INTERVAL == 0.5
    with override_settings(DJANGO_TASKQUEUE={"PROGRESS_MIN_INTERVAL": 3}):
        assert conf.PROGRESS_MIN_INTERVAL == 3.0


def test_a_wrong_retention_keeps_every_task(caplog: Any) -> None:
    """Not the default ages: a misspelt RETENTION must not delete what it meant to keep."""
    with override_settings(DJANGO_TASKQUEUE={"RETENTION": {"completed": "forever"}}):
        assert conf.RETENTION == {"completed": None, "failed": None, "cancelled": None}
    assert "None (every task is kept)" in errors_of(caplog)[0]


def test_settings_that_are_not_a_dict_are_the_defaults(caplog: Any) -> None:
    with override_settings(DJANGO_TASKQUEUE=["PROGRESS_MIN_INTERVAL"]):
        assert conf.PROGRESS_MIN_INTERVAL == 0.5
        assert conf.ENABLED is True
    assert [line.split(":")[0] for line in errors_of(caplog)] == ["django_taskqueue.E001"]


@pytest.mark.parametrize(
    "value",
    [
        {"TASK_TYPES": ["image"]},
        {"ALLOWED_FILE_ROOTS": "/srv"},
        {"PROGRESS_HISTORY_STEP": 0},
        {"REDACT_KEYS": "password"},
        {"TRACEBACK_MAX_CHARS": "long"},
        {"SYNCHRONOUS_COMMIT": "yes"},
        {"PUBLISH_TIMEOUT": "10"},
        {"MESSAGE_MAX_DEPTH": 0},
        {"API_PAGE_SIZE": "20"},
        {"API_STREAM_MAX_PER_USER": "two"},
        {"RETENTION_BATCH_SIZE": 0},
        {"STALE_AFTER": "15m"},
        {"LOST_AFTER": -1},
        {"HEARTBEAT_INTERVAL": "1m"},
        {"REPORT_RECIPIENTS": "ops@example.com"},
    ],
)
def test_every_error_about_a_key_falls_back(value: dict[str, Any]) -> None:
    """Each key an error of the checks names is read as its default (none raises)."""
    (name,) = value
    with override_settings(DJANGO_TASKQUEUE=value):
        assert [m.id for m in check_settings() if m.is_serious()], "the check should reject it"
        assert set(setting_errors(value)) == {name}
        expected = TaskQueueSettings()
        with override_settings(DJANGO_TASKQUEUE={}):
            default = getattr(expected, name)
        assert getattr(conf, name) == default


def test_the_docs_address_is_the_packages() -> None:
    """The checks' hints link to the Documentation address of pyproject.toml."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Documentation"] == DOCS_URL


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_no_value_makes_reading_a_key_raise(name: str) -> None:
    """Whatever a key holds, reading it gives a value (recording never fails on a setting)."""
    weird: tuple[Any, ...] = (
        *("fast", "", None, -1, 0, 10**30, float("nan"), True),
        *([], [None], {"x": None}, object()),
    )
    for value in weird:
        with override_settings(DJANGO_TASKQUEUE={name: value}):
            getattr(conf, name)
