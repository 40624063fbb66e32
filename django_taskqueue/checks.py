"""System checks for the ``DJANGO_TASKQUEUE`` settings and unsafe setups.

Every id is listed in ``docs/checks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check

from django_taskqueue.conf import DEFAULTS

_PREFIX = "django_taskqueue"


def _error(n: int, msg: str, hint: str | None = None) -> Error:
    return Error(msg, hint=hint, id=f"{_PREFIX}.E{n:03d}")


def _warning(n: int, msg: str, hint: str | None = None) -> Warning:
    return Warning(msg, hint=hint, id=f"{_PREFIX}.W{n:03d}")


def check_settings(**kwargs: Any) -> list[CheckMessage]:
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
    return errors


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
