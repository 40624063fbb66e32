"""System checks for the ``DJANGO_TASKQUEUE`` settings and unsafe setups.

Every id is listed in ``docs/checks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check

from django_taskqueue.conf import DEFAULTS, RETENTION_STATUSES, as_timedelta

_PREFIX = "django_taskqueue"


def _error(n: int, msg: str, hint: str | None = None) -> Error:
    return Error(msg, hint=hint, id=f"{_PREFIX}.E{n:03d}")


def _warning(n: int, msg: str, hint: str | None = None) -> Warning:
    return Warning(msg, hint=hint, id=f"{_PREFIX}.W{n:03d}")


def check_settings(**kwargs: Any) -> list[CheckMessage]:  # noqa: PLR0912 (one check per key)
    """Validate ``settings.DJANGO_TASKQUEUE``."""
    user = getattr(settings, "DJANGO_TASKQUEUE", {})
    if not isinstance(user, Mapping):
        return [_error(1, f"DJANGO_TASKQUEUE must be a dict, not {type(user).__name__}.")]
    errors: list[CheckMessage] = []
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            _warning(
                1,
                f"DJANGO_TASKQUEUE has unknown keys: {', '.join(map(str, unknown))}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )

    task_types = user.get("TASK_TYPES", {})
    if not isinstance(task_types, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in task_types.items()
    ):
        errors.append(
            _error(
                2,
                "DJANGO_TASKQUEUE['TASK_TYPES'] must map task type names to Celery task names "
                "(both non-empty strings).",
                hint='For example {"image": "jobs.tasks.process_image"}.',
            )
        )
    elif any(len(k) > 64 for k in task_types):
        errors.append(
            _error(2, "DJANGO_TASKQUEUE['TASK_TYPES'] keys are stored in a 64-character field.")
        )

    roots = user.get("ALLOWED_FILE_ROOTS", [])
    if isinstance(roots, (str, bytes)) or not isinstance(roots, (list, tuple)):
        errors.append(
            _error(3, "DJANGO_TASKQUEUE['ALLOWED_FILE_ROOTS'] must be a list of directories.")
        )
    else:
        relative = [str(r) for r in roots if not os.path.isabs(os.fspath(r))]
        if relative:
            errors.append(
                _error(
                    3,
                    "DJANGO_TASKQUEUE['ALLOWED_FILE_ROOTS'] must hold absolute paths; "
                    f"got {', '.join(relative)}.",
                )
            )

    interval = user.get("PROGRESS_MIN_INTERVAL", DEFAULTS["PROGRESS_MIN_INTERVAL"])
    if isinstance(interval, bool) or not isinstance(interval, Real) or float(interval) < 0:
        errors.append(
            _error(4, "DJANGO_TASKQUEUE['PROGRESS_MIN_INTERVAL'] must be a number of seconds >= 0.")
        )

    step = user.get("PROGRESS_HISTORY_STEP", DEFAULTS["PROGRESS_HISTORY_STEP"])
    if isinstance(step, bool) or not isinstance(step, Real) or not 0 < float(step) <= 100:
        errors.append(
            _error(5, "DJANGO_TASKQUEUE['PROGRESS_HISTORY_STEP'] must be a number in (0, 100].")
        )

    keys = user.get("REDACT_KEYS", DEFAULTS["REDACT_KEYS"])
    if (
        isinstance(keys, (str, bytes))
        or not isinstance(keys, (list, tuple))
        or not all(isinstance(k, str) and k for k in keys)
    ):
        errors.append(
            _error(6, "DJANGO_TASKQUEUE['REDACT_KEYS'] must be a list of non-empty strings.")
        )

    for n, name in ((7, "RESULT_MAX_BYTES"), (8, "TRACEBACK_MAX_CHARS")):
        value = user.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < 64:
            errors.append(_error(n, f"DJANGO_TASKQUEUE['{name}'] must be an integer >= 64."))
    for name in ("SYNCHRONOUS_COMMIT", "PREPARED_STATEMENTS"):
        if not isinstance(user.get(name, DEFAULTS[name]), bool):
            errors.append(_error(16, f"DJANGO_TASKQUEUE['{name}'] must be True or False."))
    errors.extend(_check_messages(user))
    errors.extend(_check_api(user))
    errors.extend(_check_housekeeping(user))
    return errors


#: The deepest MESSAGE_MAX_DEPTH allowed: pickling a message for the pool recurses
#: once or twice per level, and the worker's main process dies a few hundred deep.
MAX_MESSAGE_DEPTH = 200


def _check_messages(user: Mapping[str, Any]) -> list[CheckMessage]:
    """``MESSAGE_MAX_DEPTH`` and ``MESSAGE_MAX_BYTES`` (one id, E017; the message names the key)."""
    errors: list[CheckMessage] = []
    for name, low, high in (
        ("MESSAGE_MAX_DEPTH", 1, MAX_MESSAGE_DEPTH),
        ("MESSAGE_MAX_BYTES", 1024, None),
    ):
        value = user.get(name, DEFAULTS[name])
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            what = f"in [{low}, {high}]" if high is not None else f">= {low}"
            errors.append(_error(17, f"DJANGO_TASKQUEUE['{name}'] must be an integer {what}."))
    return errors


def _is_duration(value: Any) -> bool:
    """A positive number (of seconds or days) or a positive timedelta."""
    if isinstance(value, timedelta):
        return value > timedelta(0)
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def _check_housekeeping(user: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    retention = user.get("RETENTION", DEFAULTS["RETENTION"])
    if retention is not None and not isinstance(retention, Mapping):
        errors.append(
            _error(
                9,
                "DJANGO_TASKQUEUE['RETENTION'] must be a dict of terminal status to days.",
                hint='For example {"completed": 30, "failed": 90, "cancelled": 30}; None keeps.',
            )
        )
    elif retention:
        unknown = sorted(str(k) for k in retention if k not in RETENTION_STATUSES)
        bad = sorted(
            str(k)
            for k, v in retention.items()
            if k in RETENTION_STATUSES and v is not None and not _is_duration(v)
        )
        if unknown or bad:
            errors.append(
                _error(
                    9,
                    "DJANGO_TASKQUEUE['RETENTION'] keys must be "
                    f"{', '.join(RETENTION_STATUSES)} and values a positive number of days, "
                    f"a timedelta or None; wrong: {', '.join(unknown + bad)}.",
                )
            )
    batch = user.get("RETENTION_BATCH_SIZE", DEFAULTS["RETENTION_BATCH_SIZE"])
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
        errors.append(
            _error(10, "DJANGO_TASKQUEUE['RETENTION_BATCH_SIZE'] must be an integer in [1, 10000].")
        )
    for n, name in ((11, "STALE_AFTER"), (12, "LOST_AFTER")):
        if not _is_duration(user.get(name, DEFAULTS[name])):
            errors.append(
                _error(
                    n,
                    f"DJANGO_TASKQUEUE['{name}'] must be a positive number of seconds.",
                )
            )
    heartbeat = user.get("HEARTBEAT_INTERVAL", DEFAULTS["HEARTBEAT_INTERVAL"])
    if heartbeat is not None and heartbeat != 0 and not _is_duration(heartbeat):
        errors.append(
            _error(
                13,
                "DJANGO_TASKQUEUE['HEARTBEAT_INTERVAL'] must be a positive number of seconds, "
                "a timedelta, or None/0 to turn heartbeats off.",
            )
        )
    recipients = user.get("REPORT_RECIPIENTS", DEFAULTS["REPORT_RECIPIENTS"])
    if (
        isinstance(recipients, (str, bytes))
        or not isinstance(recipients, (list, tuple))
        or not all(isinstance(r, str) and "@" in r for r in recipients)
    ):
        errors.append(
            _error(14, "DJANGO_TASKQUEUE['REPORT_RECIPIENTS'] must be a list of e-mail addresses.")
        )
    if not errors:
        stale = as_timedelta(user.get("STALE_AFTER", DEFAULTS["STALE_AFTER"]), timedelta(seconds=1))
        if heartbeat and stale <= 2 * as_timedelta(heartbeat, timedelta(seconds=1)):
            errors.append(
                _warning(
                    5,
                    "DJANGO_TASKQUEUE['STALE_AFTER'] is not more than twice HEARTBEAT_INTERVAL: "
                    "a healthy task that reports no progress may be marked as stuck.",
                    hint="Make STALE_AFTER several heartbeats long (the defaults: 900 s and 60 s).",
                )
            )
        elif not heartbeat:
            errors.append(
                _warning(
                    6,
                    "DJANGO_TASKQUEUE['HEARTBEAT_INTERVAL'] is off: a long task that reports no "
                    "progress for STALE_AFTER is marked as stuck by the mark_stale task.",
                    hint="Keep heartbeats on, or set stale_after on long-running task classes.",
                )
            )
    return errors


def _check_api(user: Mapping[str, Any]) -> list[CheckMessage]:
    """The ``API_*`` keys (one id, E015, whose message names the key)."""
    wrong: list[tuple[str, str]] = []
    classes = user.get("API_PERMISSION_CLASSES", DEFAULTS["API_PERMISSION_CLASSES"])
    if (
        isinstance(classes, (str, bytes))
        or not isinstance(classes, (list, tuple))
        or not all(isinstance(c, str) and "." in c for c in classes)
    ):
        wrong.append(("API_PERMISSION_CLASSES", "a list of dotted paths to permission classes"))
    for name, low in (
        ("API_PAGE_SIZE", 1),
        ("API_MAX_PAGE_SIZE", 1),
        ("API_METADATA_MAX_BYTES", 2),
        ("API_JSON_MAX_DEPTH", 2),
        ("API_BULK_MAX_FILES", 1),
        ("API_PUBLISH_RETRIES", 0),
    ):
        value = user.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            wrong.append((name, f"an integer >= {low}"))
    if not wrong and user.get("API_PAGE_SIZE", DEFAULTS["API_PAGE_SIZE"]) > user.get(
        "API_MAX_PAGE_SIZE", DEFAULTS["API_MAX_PAGE_SIZE"]
    ):
        wrong.append(("API_PAGE_SIZE", "no larger than API_MAX_PAGE_SIZE"))
    for name in ("API_STREAM_POLL_INTERVAL", "API_STREAM_HEARTBEAT", "API_STREAM_MAX_SECONDS"):
        value = user.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, Real) or value <= 0:
            wrong.append((name, "a positive number of seconds"))
    if not isinstance(user.get("API_CANCEL_TERMINATE", False), bool):
        wrong.append(("API_CANCEL_TERMINATE", "True or False"))
    return [_error(15, f"DJANGO_TASKQUEUE['{key}'] must be {what}.") for key, what in wrong]


def check_setup(**kwargs: Any) -> list[CheckMessage]:
    """Warn about setups that work but hurt."""
    warnings: list[CheckMessage] = []
    if getattr(settings, "CELERY_DB_REUSE_MAX", None) is None:
        warnings.append(
            _warning(
                2,
                "CELERY_DB_REUSE_MAX is not set: Celery workers open a new database "
                "connection for every task.",
                hint="Set CELERY_DB_REUSE_MAX (for example 100) in your settings.",
            )
        )
    for alias, db in getattr(settings, "DATABASES", {}).items():
        if "sqlite" not in str(db.get("ENGINE", "")):
            continue
        options = db.get("OPTIONS", {}) or {}
        init = str(options.get("init_command", "")).lower().replace(" ", "")
        if (
            "journal_mode=wal" not in init
            or str(options.get("transaction_mode", "")).upper() != "IMMEDIATE"
        ):
            warnings.append(
                _warning(
                    3,
                    f"Database {alias!r} is SQLite without WAL and immediate transactions: "
                    "a worker and the web process writing at once will see 'database is locked'.",
                    hint='Set OPTIONS {"init_command": "PRAGMA journal_mode=WAL;", '
                    '"transaction_mode": "IMMEDIATE", "timeout": 20}; see docs/checks.md.',
                )
            )
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        warnings.append(
            _warning(
                4,
                "CELERY_TASK_ALWAYS_EAGER is on: tasks run inside the caller, so tracking "
                "records them but revoke, time limits and worker fields do not apply.",
                hint="Use a worker (the memory:// transport in tests) instead of eager mode.",
            )
        )
    return warnings


def register() -> None:
    """Register the checks (called from ``AppConfig.ready``)."""
    register_check(Tags.compatibility)(check_settings)
    register_check(Tags.compatibility)(check_setup)
