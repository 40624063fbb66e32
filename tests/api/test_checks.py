"""The system check of the API_* settings (E015); it needs no DRF."""

from __future__ import annotations

from typing import Any

import pytest

from django_taskqueue.checks import check_settings


def e015(settings: Any, **values: Any) -> list[str]:
    settings.DJANGO_TASKQUEUE = values
    return [m.msg for m in check_settings() if m.id == "django_taskqueue.E015"]


def test_the_defaults_pass(settings: Any) -> None:
    assert e015(settings) == []


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"API_PERMISSION_CLASSES": "app.Perm"}, "API_PERMISSION_CLASSES"),
        ({"API_PERMISSION_CLASSES": ["Perm"]}, "dotted paths"),
        ({"API_PAGE_SIZE": 0}, "API_PAGE_SIZE'] must be an integer >= 1"),
        ({"API_MAX_PAGE_SIZE": "100"}, "API_MAX_PAGE_SIZE"),
        ({"API_PAGE_SIZE": 50, "API_MAX_PAGE_SIZE": 10}, "no larger than API_MAX_PAGE_SIZE"),
        ({"API_METADATA_MAX_BYTES": True}, "API_METADATA_MAX_BYTES"),
        ({"API_JSON_MAX_DEPTH": 1}, "API_JSON_MAX_DEPTH'] must be an integer >= 2"),
        ({"API_BULK_MAX_FILES": -1}, "API_BULK_MAX_FILES"),
        ({"API_STREAM_POLL_INTERVAL": 0}, "API_STREAM_POLL_INTERVAL"),
        ({"API_STREAM_HEARTBEAT": "15"}, "API_STREAM_HEARTBEAT"),
        ({"API_STREAM_MAX_SECONDS": -5}, "API_STREAM_MAX_SECONDS"),
        ({"API_STREAM_MAX_PER_USER": 0}, "API_STREAM_MAX_PER_USER'] must be an integer >= 1"),
        ({"API_STREAM_MAX_PER_USER": 2.5}, "API_STREAM_MAX_PER_USER"),
        ({"API_STREAM_MAX_PER_USER": True}, "API_STREAM_MAX_PER_USER"),
        ({"API_CANCEL_TERMINATE": "yes"}, "True or False"),
    ],
)
def test_wrong_values_are_reported(settings: Any, values: dict[str, Any], fragment: str) -> None:
    messages = e015(settings, **values)
    assert len(messages) == 1
    assert fragment in messages[0]


def test_no_stream_cap_is_allowed(settings: Any) -> None:
    assert e015(settings, API_STREAM_MAX_PER_USER=None) == []


def test_api_keys_are_known_keys(settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {"API_PAGE_SIZE": 5, "API_CANCEL_TERMINATE": True}
    assert not [m for m in check_settings() if m.id == "django_taskqueue.W001"]
