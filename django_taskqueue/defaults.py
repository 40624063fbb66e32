"""The defaults of the ``DJANGO_TASKQUEUE`` settings and the pure helpers around them.

Imports nothing of the package: :mod:`django_taskqueue.conf` (the live settings),
:mod:`django_taskqueue.setting_checks` (their validation) and
:mod:`django_taskqueue.checks` all build on it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

#: Where the documentation is published; the hints of the system checks link to it.
DOCS_URL = "https://django-taskqueue.readthedocs.io/en/latest/"

#: Terms of the keys whose values are replaced before anything is stored. Case and
#: separators do not count (``api_key`` also matches ``X-Api-Key`` and ``apiKey``); a
#: term of up to four characters must be a whole word of the key, a longer one may be
#: anywhere in it (see :class:`django_taskqueue.serialization.SecretKeys`).
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "api_key",
    "auth",
    "authorization",
    "credential",
    "private_key",
    "session",
    "cookie",
)

DEFAULTS: dict[str, Any] = {
    "ENABLED": True,
    "TASK_TYPES": {},
    "ALLOWED_FILE_ROOTS": [],
    "STORE_ARGS": True,
    "REDACT_KEYS": DEFAULT_REDACT_KEYS,
    "REDACT_EXTRA_KEYS": (),
    "REDACTED_VALUE": "********",
    "PROGRESS_MIN_INTERVAL": 0.5,
    "PROGRESS_HISTORY_STEP": 5.0,
    "RESULT_MAX_BYTES": 65_536,
    "TRACEBACK_MAX_CHARS": 20_000,
    # What a tracked task may publish (docs/tracked-task.md).
    "MESSAGE_MAX_DEPTH": 64,
    "MESSAGE_MAX_BYTES": 1_048_576,
    "SYNCHRONOUS_COMMIT": False,
    "PUBLISH_TIMEOUT": 10.0,
    # Records held through a database outage (docs/production.md).
    "HELD_RECORDS_MAX": 10_000,
    "HELD_RECORDS_WAIT": 60.0,
    # The REST API (docs/api.md).
    "API_PERMISSION_CLASSES": ["django_taskqueue.api.permissions.IsOwnerOrStaff"],
    "API_PAGE_SIZE": 20,
    "API_MAX_PAGE_SIZE": 100,
    "API_METADATA_MAX_BYTES": 8192,
    "API_JSON_MAX_DEPTH": 32,
    "API_BULK_MAX_FILES": 1000,
    "API_CANCEL_TERMINATE": False,
    "API_EXPOSE_ERROR_DETAILS": False,
    "API_STREAM_POLL_INTERVAL": 1.0,
    "API_STREAM_HEARTBEAT": 15.0,
    "API_STREAM_MAX_SECONDS": 25,
    "API_STREAM_MAX_PER_USER": 2,
    # Housekeeping (docs/housekeeping.md).
    "RETENTION": {"completed": 30, "failed": 90, "cancelled": 30},
    "RETENTION_BATCH_SIZE": 1000,
    "STALE_AFTER": 900,
    "LOST_AFTER": 3600,
    "HEARTBEAT_INTERVAL": 60,
    "REPORT_RECIPIENTS": [],
}

#: What a value the checks reject is read as, where that is not the default: a wrong
#: ``RETENTION`` keeps every task rather than deleting them after the default ages.
FALLBACKS: dict[str, tuple[Any, str]] = {"RETENTION": (None, "None (every task is kept)")}

#: The statuses ``RETENTION`` may name: the terminal ones.
RETENTION_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled")


def as_timedelta(value: Any, unit: timedelta) -> timedelta:
    """A duration setting as a timedelta: a timedelta as is, a number in ``unit``s."""
    if isinstance(value, timedelta):
        return value
    return unit * float(value)


def docs_url(check_id: str) -> str:
    """The address of a check's entry in the documentation's checks page.

    Args:
        check_id: the check's id, ``"django_taskqueue.E004"`` (or just ``"E004"``).
    """
    return f"{DOCS_URL}checks.html#{check_id.rsplit('.', 1)[-1].lower()}"
