"""The system check of the ``DJANGO_TASKQUEUE`` setting: its keys, types and ranges.

Reads values only (no Celery, no registry, no database), so
:mod:`django_taskqueue.conf` runs it too, to read a value it rejects as the
default. :mod:`django_taskqueue.checks` registers it with the checks of the
environment. Every id is listed in ``docs/checks.md``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from django_taskqueue.defaults import DEFAULTS, RETENTION_STATUSES, as_timedelta, docs_url

_PREFIX = "django_taskqueue"


def _with_link(check_id: str, hint: str | None) -> str:
    """The hint, followed by where the docs explain the check."""
    link = f"See {docs_url(check_id)}"
    return f"{hint} {link}" if hint else link


def error(n: int, msg: str, hint: str | None = None) -> Error:
    """The check error ``django_taskqueue.E<n>``, its hint ending with a link to the docs.

    Args:
        n: the number of the id (``4`` makes ``django_taskqueue.E004``).
        msg: what is wrong.
        hint: how to fix it, if there is more to say than the docs' entry.
    """
    check_id = f"{_PREFIX}.E{n:03d}"
    return Error(msg, hint=_with_link(check_id, hint), id=check_id)


def warning(n: int, msg: str, hint: str | None = None) -> Warning:
    """The check warning ``django_taskqueue.W<n>``, its hint ending with a link to the docs.

    Args:
        n: the number of the id (``5`` makes ``django_taskqueue.W005``).
        msg: what may hurt.
        hint: what to do about it, if there is more to say than the docs' entry.
    """
    check_id = f"{_PREFIX}.W{n:03d}"
    return Warning(msg, hint=_with_link(check_id, hint), id=check_id)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Validate ``settings.DJANGO_TASKQUEUE``."""
    return _settings_messages(getattr(settings, "DJANGO_TASKQUEUE", {}))


# An error about one key names it first, as DJANGO_TASKQUEUE['KEY'].
_KEY = re.compile(r"DJANGO_TASKQUEUE\['(\w+)'\]")


def setting_errors(user: Mapping[str, Any]) -> dict[str, CheckMessage]:
    """The keys of ``user`` (a ``DJANGO_TASKQUEUE`` dict) the checks reject, with the error.

    What :mod:`django_taskqueue.conf` reads as the default instead. Warnings do
    not count: the value works.
    """
    wrong: dict[str, CheckMessage] = {}
    for message in _settings_messages(user):
        named = _KEY.search(message.msg)
        if message.is_serious() and named and named[1] in user:
            wrong.setdefault(named[1], message)
    return wrong


def _settings_messages(user: Any) -> list[CheckMessage]:  # noqa: PLR0912 (one check per key)
    if not isinstance(user, Mapping):
        return [error(1, f"DJANGO_TASKQUEUE must be a dict, not {type(user).__name__}.")]
    errors: list[CheckMessage] = []
    unknown = sorted(str(key) for key in set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            warning(
                1,
                f"DJANGO_TASKQUEUE has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )

    task_types = user.get("TASK_TYPES", {})
    if not isinstance(task_types, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in task_types.items()
    ):
        errors.append(
            error(
                2,
                "DJANGO_TASKQUEUE['TASK_TYPES'] must map task type names to Celery task names "
                "(both non-empty strings).",
                hint='For example {"image": "jobs.tasks.process_image"}.',
            )
        )
    elif any(len(k) > 64 for k in task_types):
        errors.append(
            error(2, "DJANGO_TASKQUEUE['TASK_TYPES'] keys are stored in a 64-character field.")
        )

    roots = user.get("ALLOWED_FILE_ROOTS", [])
    if (
        isinstance(roots, (str, bytes))
        or not isinstance(roots, (list, tuple))
        or not all(isinstance(r, (str, os.PathLike)) for r in roots)
    ):
        errors.append(
            error(3, "DJANGO_TASKQUEUE['ALLOWED_FILE_ROOTS'] must be a list of directories.")
        )
    else:
        relative = [str(r) for r in roots if not os.path.isabs(os.fspath(r))]
        if relative:
            errors.append(
                error(
                    3,
                    "DJANGO_TASKQUEUE['ALLOWED_FILE_ROOTS'] must hold absolute paths; "
                    f"got {', '.join(relative)}.",
                )
            )

    interval = user.get("PROGRESS_MIN_INTERVAL", DEFAULTS["PROGRESS_MIN_INTERVAL"])
    if (
        isinstance(interval, bool)
        or not isinstance(interval, Real)
        or not 0 <= float(interval) < math.inf  # NaN fails too
    ):
        errors.append(
            error(4, "DJANGO_TASKQUEUE['PROGRESS_MIN_INTERVAL'] must be a number of seconds >= 0.")
        )

    step = user.get("PROGRESS_HISTORY_STEP", DEFAULTS["PROGRESS_HISTORY_STEP"])
    if isinstance(step, bool) or not isinstance(step, Real) or not 0 < float(step) <= 100:
        errors.append(
            error(5, "DJANGO_TASKQUEUE['PROGRESS_HISTORY_STEP'] must be a number in (0, 100].")
        )

    for name in ("REDACT_KEYS", "REDACT_EXTRA_KEYS"):
        keys = user.get(name, DEFAULTS[name])
        if (
            isinstance(keys, (str, bytes))
            or not isinstance(keys, (list, tuple))
            or not all(isinstance(k, str) and any(c.isalnum() for c in k) for k in keys)
        ):
            errors.append(
                error(
                    6,
                    f"DJANGO_TASKQUEUE['{name}'] must be a list of strings with a letter or digit.",
                )
            )

    for n, name in ((7, "RESULT_MAX_BYTES"), (8, "TRACEBACK_MAX_CHARS")):
        value = user.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < 64:
            errors.append(error(n, f"DJANGO_TASKQUEUE['{name}'] must be an integer >= 64."))
    if not isinstance(user.get("SYNCHRONOUS_COMMIT", DEFAULTS["SYNCHRONOUS_COMMIT"]), bool):
        errors.append(error(16, "DJANGO_TASKQUEUE['SYNCHRONOUS_COMMIT'] must be True or False."))
    timeout = user.get("PUBLISH_TIMEOUT", DEFAULTS["PUBLISH_TIMEOUT"])
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, Real) or not 0 < float(timeout) <= 3600
    ):
        errors.append(
            error(
                17,
                "DJANGO_TASKQUEUE['PUBLISH_TIMEOUT'] must be a number of seconds in (0, 3600] "
                "or None.",
                hint="For example 10; None leaves Celery's own publish retry policy in place.",
            )
        )
    errors.extend(_check_held_records(user))
    errors.extend(_check_messages(user))
    errors.extend(_check_api(user))
    errors.extend(_check_housekeeping(user))
    return errors


def _check_held_records(user: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    limit = user.get("HELD_RECORDS_MAX", DEFAULTS["HELD_RECORDS_MAX"])
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        errors.append(error(27, "DJANGO_TASKQUEUE['HELD_RECORDS_MAX'] must be an integer >= 0."))
    wait = user.get("HELD_RECORDS_WAIT", DEFAULTS["HELD_RECORDS_WAIT"])
    if isinstance(wait, bool) or not isinstance(wait, Real) or not 0 <= float(wait) <= 3600:
        errors.append(
            error(
                27,
                "DJANGO_TASKQUEUE['HELD_RECORDS_WAIT'] must be a number of seconds in [0, 3600].",
            )
        )
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
            errors.append(error(18, f"DJANGO_TASKQUEUE['{name}'] must be an integer {what}."))
    return errors


def _is_duration(value: Any, unit: timedelta = timedelta(seconds=1)) -> bool:
    """A positive number of ``unit``s that a timedelta can hold, or a positive timedelta."""
    if isinstance(value, timedelta):
        return value > timedelta(0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return False
    try:
        as_timedelta(value, unit)
    except (OverflowError, ValueError):  # more than 999,999,999 days, or not finite
        return False
    return True


def _check_housekeeping(user: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    retention = user.get("RETENTION", DEFAULTS["RETENTION"])
    if retention is not None and not isinstance(retention, Mapping):
        errors.append(
            error(
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
            if k in RETENTION_STATUSES and v is not None and not _is_duration(v, timedelta(days=1))
        )
        if unknown or bad:
            errors.append(
                error(
                    9,
                    "DJANGO_TASKQUEUE['RETENTION'] keys must be "
                    f"{', '.join(RETENTION_STATUSES)} and values a positive number of days, "
                    f"a timedelta or None; wrong: {', '.join(unknown + bad)}.",
                )
            )
    batch = user.get("RETENTION_BATCH_SIZE", DEFAULTS["RETENTION_BATCH_SIZE"])
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
        errors.append(
            error(10, "DJANGO_TASKQUEUE['RETENTION_BATCH_SIZE'] must be an integer in [1, 10000].")
        )
    for n, name in ((11, "STALE_AFTER"), (12, "LOST_AFTER")):
        if not _is_duration(user.get(name, DEFAULTS[name])):
            errors.append(
                error(
                    n,
                    f"DJANGO_TASKQUEUE['{name}'] must be a positive number of seconds.",
                )
            )
    heartbeat = user.get("HEARTBEAT_INTERVAL", DEFAULTS["HEARTBEAT_INTERVAL"])
    if heartbeat is not None and heartbeat != 0 and not _is_duration(heartbeat):
        errors.append(
            error(
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
            error(14, "DJANGO_TASKQUEUE['REPORT_RECIPIENTS'] must be a list of e-mail addresses.")
        )
    if not errors:
        stale = as_timedelta(user.get("STALE_AFTER", DEFAULTS["STALE_AFTER"]), timedelta(seconds=1))
        if heartbeat and stale <= 2 * as_timedelta(heartbeat, timedelta(seconds=1)):
            errors.append(
                warning(
                    5,
                    "DJANGO_TASKQUEUE['STALE_AFTER'] is not more than twice HEARTBEAT_INTERVAL: "
                    "a healthy task that reports no progress may be marked as stuck.",
                    hint="Make STALE_AFTER several heartbeats long (the defaults: 900 s and 60 s).",
                )
            )
        elif not heartbeat:
            errors.append(
                warning(
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
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not 0 < float(value) < math.inf
        ):
            wrong.append((name, "a positive number of seconds"))
    per_user = user.get("API_STREAM_MAX_PER_USER", DEFAULTS["API_STREAM_MAX_PER_USER"])
    if per_user is not None and (
        isinstance(per_user, bool) or not isinstance(per_user, int) or per_user < 1
    ):
        wrong.append(("API_STREAM_MAX_PER_USER", "an integer >= 1, or None for no cap"))
    for name in ("API_CANCEL_TERMINATE", "API_EXPOSE_ERROR_DETAILS"):
        if not isinstance(user.get(name, False), bool):
            wrong.append((name, "True or False"))
    return [error(15, f"DJANGO_TASKQUEUE['{key}'] must be {what}.") for key, what in wrong]
