"""System checks for the ``DJANGO_TASKQUEUE`` settings and unsafe setups.

Every id is listed in ``docs/checks.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check
from django.db import router

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

    for name in ("REDACT_KEYS", "REDACT_EXTRA_KEYS"):
        keys = user.get(name, DEFAULTS[name])
        if (
            isinstance(keys, (str, bytes))
            or not isinstance(keys, (list, tuple))
            or not all(isinstance(k, str) and any(c.isalnum() for c in k) for k in keys)
        ):
            errors.append(
                _error(
                    6,
                    f"DJANGO_TASKQUEUE['{name}'] must be a list of strings with a letter or digit.",
                )
            )

    for n, name in ((7, "RESULT_MAX_BYTES"), (8, "TRACEBACK_MAX_CHARS")):
        value = user.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < 64:
            errors.append(_error(n, f"DJANGO_TASKQUEUE['{name}'] must be an integer >= 64."))
    if not isinstance(user.get("SYNCHRONOUS_COMMIT", DEFAULTS["SYNCHRONOUS_COMMIT"]), bool):
        errors.append(_error(16, "DJANGO_TASKQUEUE['SYNCHRONOUS_COMMIT'] must be True or False."))
    timeout = user.get("PUBLISH_TIMEOUT", DEFAULTS["PUBLISH_TIMEOUT"])
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, Real) or not 0 < float(timeout) <= 3600
    ):
        errors.append(
            _error(
                17,
                "DJANGO_TASKQUEUE['PUBLISH_TIMEOUT'] must be a number of seconds in (0, 3600] "
                "or None.",
                hint="For example 10; None leaves Celery's own publish retry policy in place.",
            )
        )
    errors.extend(_check_messages(user))
    errors.extend(_check_api(user))
    errors.extend(_check_housekeeping(user))
    return errors


#: The deepest MESSAGE_MAX_DEPTH allowed: pickling a message for the pool recurses
#: once or twice per level, and the worker's main process dies a few hundred deep.
MAX_MESSAGE_DEPTH = 200


def _check_messages(user: Mapping[str, Any]) -> list[CheckMessage]:
    """``MESSAGE_MAX_DEPTH`` and ``MESSAGE_MAX_BYTES`` (one id, E018; the message names the key)."""
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
            errors.append(_error(18, f"DJANGO_TASKQUEUE['{name}'] must be an integer {what}."))
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
    per_user = user.get("API_STREAM_MAX_PER_USER", DEFAULTS["API_STREAM_MAX_PER_USER"])
    if per_user is not None and (
        isinstance(per_user, bool) or not isinstance(per_user, int) or per_user < 1
    ):
        wrong.append(("API_STREAM_MAX_PER_USER", "an integer >= 1, or None for no cap"))
    for name in ("API_CANCEL_TERMINATE", "API_EXPOSE_ERROR_DETAILS"):
        if not isinstance(user.get(name, False), bool):
            wrong.append((name, "True or False"))
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
    warnings.extend(_check_timeouts())
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


# "-c statement_timeout=30s" or "--statement-timeout=30s" in libpq's options; the last wins.
_STATEMENT_TIMEOUT = re.compile(r"statement[_-]timeout\s*=\s*'?([^\s']+)")
_NO_LIMIT = re.compile(r"0+[a-z]*", re.IGNORECASE)


def _check_timeouts() -> list[CheckMessage]:
    """W008: the PostgreSQL database that records tasks has no connect or statement timeout.

    Reads ``settings.DATABASES`` only (no connection is opened). A timeout set
    where Django cannot see it (a service file, the role, PgBouncer) is the
    reason this is a warning that can be silenced.
    """
    from django_taskqueue.models import TaskLog

    alias = router.db_for_write(TaskLog)
    db = getattr(settings, "DATABASES", {}).get(alias) or {}
    engine = str(db.get("ENGINE", ""))
    if "postgresql" not in engine and "postgis" not in engine:
        return []
    options = db.get("OPTIONS") or {}
    missing = []
    # libpq reads PGCONNECT_TIMEOUT and PGOPTIONS when OPTIONS does not say; 0 means no limit.
    connect = options.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT", ""))
    if str(connect).strip() in {"", "0"}:
        missing.append("connect_timeout")
    server = _STATEMENT_TIMEOUT.findall(
        str(options["options"]) if "options" in options else os.environ.get("PGOPTIONS", "")
    )
    if not server or _NO_LIMIT.fullmatch(server[-1]):
        missing.append("statement_timeout")
    if not missing:
        return []
    return [
        _warning(
            8,
            f"Database {alias!r} records the tasks on PostgreSQL without "
            f"{' or '.join(missing)} in its OPTIONS: a worker that connects to a frozen "
            "server, or whose statement waits for a lock that is never released, waits "
            "with no end.",
            hint='Set OPTIONS = {"connect_timeout": 5, "options": "-c statement_timeout=30s '
            '-c lock_timeout=10s"} (see the production page of the docs); silence the '
            "warning if the timeouts are set where Django cannot see them.",
        )
    ]


_REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def _over(value: Any, limit: float) -> bool:
    """Unset or longer than ``limit`` seconds (a wait the deadline does not bound)."""
    try:
        return value is None or float(value) > limit
    except (TypeError, ValueError):
        return True


def check_publish_waits(**kwargs: Any) -> list[CheckMessage]:
    """Warn when the Celery app lets a publish wait longer than ``PUBLISH_TIMEOUT``.

    Only the Redis settings are checked: they are the ones whose defaults let a
    publish to a down or frozen Redis block for 19 s to forever.
    """
    user = getattr(settings, "DJANGO_TASKQUEUE", None) or {}
    if not isinstance(user, Mapping):
        return []  # E001
    timeout = user.get("PUBLISH_TIMEOUT", DEFAULTS["PUBLISH_TIMEOUT"])
    if timeout is None or isinstance(timeout, bool) or not isinstance(timeout, Real):
        return []  # no deadline, or E017 reports it
    limit = float(timeout)
    from celery import current_app

    app_conf = current_app.conf
    loose: list[str] = []
    if str(app_conf.broker_url or "").startswith(_REDIS_SCHEMES):
        options = app_conf.broker_transport_options or {}
        if _over(options.get("socket_timeout"), limit):
            loose.append("broker_transport_options['socket_timeout']")
    if str(app_conf.result_backend or "").startswith(_REDIS_SCHEMES):
        if _over(app_conf.redis_socket_timeout, limit):
            loose.append("redis_socket_timeout")
        if "retry_policy" not in (app_conf.result_backend_transport_options or {}):
            loose.append("result_backend_transport_options['retry_policy']")
    if not loose:
        return []
    return [
        _warning(
            9,
            f"Celery's {', '.join(loose)} let a publish to a down or frozen Redis wait longer "
            f"than DJANGO_TASKQUEUE['PUBLISH_TIMEOUT'] ({limit:g} s).",
            hint="Call django_taskqueue.publishing.bound_publish_waits(app) where you configure "
            "the Celery app, or set these yourself; see docs/settings.md.",
        )
    ]


def register() -> None:
    """Register the checks (called from ``AppConfig.ready``)."""
    register_check(Tags.compatibility)(check_settings)
    register_check(Tags.compatibility)(check_setup)
    register_check(Tags.compatibility)(check_publish_waits)
