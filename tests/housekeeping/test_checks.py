"""System checks of the housekeeping settings (E009-E014, W005, W006)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test.utils import override_settings

from django_taskqueue.checks import check_settings
from django_taskqueue.conf import conf


def _ids(**settings: Any) -> list[str]:
    with override_settings(DJANGO_TASKQUEUE=settings):
        return [message.id or "" for message in check_settings()]


def test_the_defaults_pass() -> None:
    assert _ids() == []


@pytest.mark.parametrize(
    ("settings", "check_id"),
    [
        ({"RETENTION": 30}, "django_taskqueue.E009"),
        ({"RETENTION": {"processing": 1}}, "django_taskqueue.E009"),
        ({"RETENTION": {"completed": -1}}, "django_taskqueue.E009"),
        ({"RETENTION": {"failed": "90"}}, "django_taskqueue.E009"),
        ({"RETENTION_BATCH_SIZE": 0}, "django_taskqueue.E010"),
        ({"RETENTION_BATCH_SIZE": 50_000}, "django_taskqueue.E010"),
        ({"STALE_AFTER": 0}, "django_taskqueue.E011"),
        ({"STALE_AFTER": "15m"}, "django_taskqueue.E011"),
        ({"LOST_AFTER": timedelta(0)}, "django_taskqueue.E012"),
        ({"HEARTBEAT_INTERVAL": -5}, "django_taskqueue.E013"),
        ({"REPORT_RECIPIENTS": "ops@example.com"}, "django_taskqueue.E014"),
        ({"REPORT_RECIPIENTS": ["not an address"]}, "django_taskqueue.E014"),
        ({"STALE_AFTER": 100, "HEARTBEAT_INTERVAL": 60}, "django_taskqueue.W005"),
        ({"HEARTBEAT_INTERVAL": None}, "django_taskqueue.W006"),
    ],
)
def test_wrong_values_are_reported(settings: dict[str, Any], check_id: str) -> None:
    assert check_id in _ids(**settings)


def test_good_values_of_every_shape_pass() -> None:
    assert (
        _ids(
            RETENTION={"completed": timedelta(hours=12), "failed": 365, "cancelled": None},
            RETENTION_BATCH_SIZE=500,
            STALE_AFTER=timedelta(minutes=30),
            LOST_AFTER=7200,
            HEARTBEAT_INTERVAL=30.0,
            REPORT_RECIPIENTS=["ops@example.com"],
        )
        == []
    )


def test_conf_reads_the_shapes() -> None:
    with override_settings(
        DJANGO_TASKQUEUE={
            "RETENTION": {"failed": None, "completed": timedelta(hours=1)},
            "STALE_AFTER": 120,
            "HEARTBEAT_INTERVAL": 0,
            "REPORT_RECIPIENTS": ("a@example.com",),
        }
    ):
        retention, stale, heartbeat = conf.RETENTION, conf.STALE_AFTER, conf.HEARTBEAT_INTERVAL
        assert retention == {
            "completed": timedelta(hours=1),
            "failed": None,
            "cancelled": timedelta(days=30),  # a status left out keeps its default
        }
        assert stale == timedelta(seconds=120)
        assert heartbeat is None  # 0 turns heartbeats off
        recipients = conf.REPORT_RECIPIENTS
        assert recipients == ["a@example.com"]
    lost = conf.LOST_AFTER
    assert lost == timedelta(hours=1)
