"""System checks for the ``DJANGO_TASKQUEUE`` settings and unsafe setups.

Every id is listed in ``docs/checks.md``, where it has an anchor of its own
(``#e004``) that its hint links to. The checks carry the tag :data:`TAG` too, so
``manage.py check --tag django_taskqueue`` runs the package's checks alone.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from numbers import Real
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check
from django.db import router
from django.urls import URLPattern, URLResolver, get_resolver

from django_taskqueue.conf import DEFAULTS, DOCS_URL, RETENTION_STATUSES, as_timedelta

logger = logging.getLogger("django_taskqueue")

_PREFIX = "django_taskqueue"

#: The tag of the package's checks (besides Django's ``compatibility``).
TAG = "django_taskqueue"


def docs_url(check_id: str) -> str:
    """The address of a check's entry in the documentation's checks page.

    Args:
        check_id: the check's id, ``"django_taskqueue.E004"`` (or just ``"E004"``).
    """
    return f"{DOCS_URL}checks.html#{check_id.rsplit('.', 1)[-1].lower()}"


def _with_link(check_id: str, hint: str | None) -> str:
    """The hint, followed by where the docs explain the check."""
    link = f"See {docs_url(check_id)}"
    return f"{hint} {link}" if hint else link


def _error(n: int, msg: str, hint: str | None = None) -> Error:
    check_id = f"{_PREFIX}.E{n:03d}"
    return Error(msg, hint=_with_link(check_id, hint), id=check_id)


def _warning(n: int, msg: str, hint: str | None = None) -> Warning:
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
        return [_error(1, f"DJANGO_TASKQUEUE must be a dict, not {type(user).__name__}.")]
    errors: list[CheckMessage] = []
    unknown = sorted(str(key) for key in set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            _warning(
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
    if (
        isinstance(roots, (str, bytes))
        or not isinstance(roots, (list, tuple))
        or not all(isinstance(r, (str, os.PathLike)) for r in roots)
    ):
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
    if (
        isinstance(interval, bool)
        or not isinstance(interval, Real)
        or not 0 <= float(interval) < math.inf  # NaN fails too
    ):
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
            if k in RETENTION_STATUSES and v is not None and not _is_duration(v, timedelta(days=1))
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
                    '"transaction_mode": "IMMEDIATE", "timeout": 20}.',
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
            f'-c lock_timeout=10s"}} (see {DOCS_URL}production.html#the-settings); silence the '
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
            f"the Celery app, or set these yourself; see {DOCS_URL}settings.html#publish-timeout.",
        )
    ]


def check_task_types(**kwargs: Any) -> list[CheckMessage]:
    """E019/E020: a ``TASK_TYPES`` entry whose Celery task is not a TrackedTask this process finds.

    The task is looked for as the API looks for it when a request starts it
    (:func:`django_taskqueue.registry.tracked_task`: the registered tasks, then
    the installed apps' ``tasks`` modules and the module part of the name), so a
    name that cannot work is reported at startup rather than as a 400.
    """
    from django.core.exceptions import ValidationError

    from django_taskqueue.registry import tracked_task

    user = getattr(settings, "DJANGO_TASKQUEUE", None) or {}
    task_types = user.get("TASK_TYPES") if isinstance(user, Mapping) else None
    if not isinstance(task_types, Mapping):
        return []  # E001/E002
    errors: list[CheckMessage] = []
    for key, name in task_types.items():
        if not (isinstance(key, str) and isinstance(name, str) and name):
            continue  # E002
        try:
            tracked_task(name)
        except ValidationError as exc:
            errors.append(
                _error(
                    20 if exc.code == "not_tracked" else 19,
                    f"DJANGO_TASKQUEUE['TASK_TYPES'][{key!r}]: {' '.join(exc.messages)}",
                    hint="Until this is fixed the API answers this task type with a 400.",
                )
            )
    return errors


#: The apps the package's API renders templates of, once its URLs are routed: DRF's
#: browsable API and django-filter's filter form in it (a 500 without them).
_API_APPS = (
    ("rest_framework", "Django REST Framework's browsable API"),
    ("django_filters", "the browsable API's filter form (django-filter)"),
)


def _routed_views(patterns: Any) -> Iterator[str]:
    """The module of every view in a URLconf, recursing into ``include()``."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            name = pattern.urlconf_name  # a module, a dotted path, or a list of patterns
            yield name if isinstance(name, str) else str(getattr(name, "__name__", ""))
            yield from _routed_views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view = pattern.callback
            # DRF and class-based views keep their class on the function as_view() returns.
            owner = getattr(view, "cls", None) or getattr(view, "view_class", None) or view
            yield str(getattr(owner, "__module__", ""))


def check_api_apps(**kwargs: Any) -> list[CheckMessage]:
    """E025/E026: the API's URLs are routed, but an app its pages need is not installed.

    Reads the root URLconf (as Django's own URL checks do). E025 names a missing
    ``rest_framework`` or ``django_filters`` when ``django_taskqueue.api`` serves a URL; E026
    names a missing ``drf_spectacular`` when one of its schema views is routed.
    """
    if not getattr(settings, "ROOT_URLCONF", None):
        return []
    try:
        modules = set(_routed_views(get_resolver().url_patterns))
    except Exception:  # a URLconf that does not load is for Django's own URL checks
        return []
    errors: list[CheckMessage] = []
    if any(m.startswith("django_taskqueue.api") for m in modules):
        for app, what in _API_APPS:
            if not apps.is_installed(app):
                errors.append(
                    _error(
                        25,
                        f"The URLconf routes django_taskqueue.api, but {app!r} is not in "
                        f"INSTALLED_APPS: {what} fails with a 500 (its templates are missing).",
                        hint=f'Add "{app}" to INSTALLED_APPS (it comes with the drf extra).',
                    )
                )
    if any(m.startswith("drf_spectacular.") for m in modules) and not apps.is_installed(
        "drf_spectacular"
    ):
        errors.append(
            _error(
                26,
                "The URLconf routes a drf-spectacular view (the API's schema or docs), but "
                "'drf_spectacular' is not in INSTALLED_APPS: /api/docs/ and /api/redoc/ fail "
                "with a 500 (their templates are missing).",
                hint='Add "drf_spectacular" to INSTALLED_APPS (it comes with the drf extra).',
            )
        )
    return errors


def _project_package() -> str:
    """The package of the settings module (``proj`` of ``proj.settings``), or ``proj``."""
    module = str(getattr(settings, "SETTINGS_MODULE", "") or "")
    package = module.rpartition(".")[0]
    return package.replace(".", "/") or "proj"


def check_celery_app(**kwargs: Any) -> list[CheckMessage]:
    """Warn when this process has no Celery app of the project, or the app has no broker.

    W012: Celery's fallback app is current (no ``Celery()`` was created: the
    project's ``celery.py`` is missing or ``__init__.py`` does not import it),
    so ``.delay()`` sends to Celery's default broker and no ``CELERY_*``
    setting applies. W013: the project's app has no ``broker_url``.
    """
    from celery import current_app
    from celery.loaders.default import Loader as FallbackLoader

    package = _project_package()
    # Celery documents the default loader as the one "used when no custom app has been
    # initialized"; the fallback app it makes is called "default".
    if current_app.main == "default" and isinstance(current_app.loader, FallbackLoader):
        return [
            _warning(
                12,
                "No Celery app of the project is loaded: Celery's default app is current, "
                "so tasks are sent to its default broker (amqp://guest@localhost//) and no "
                "CELERY_* setting applies.",
                hint=f'Create {package}/celery.py with app = Celery("{package}"), '
                'app.config_from_object("django.conf:settings", namespace="CELERY") and '
                f"app.autodiscover_tasks(), and load it in {package}/__init__.py with "
                '"from .celery import app as celery_app" and __all__ = ("celery_app",).',
            )
        ]
    app_conf = current_app.conf
    if app_conf.broker_url or app_conf.task_always_eager:
        return []
    if getattr(settings, "CELERY_BROKER_URL", None):
        hint = (
            "settings.CELERY_BROKER_URL is set, but the app does not read it: call "
            'app.config_from_object("django.conf:settings", namespace="CELERY") in '
            f"{package}/celery.py."
        )
    else:
        hint = (
            'Set CELERY_BROKER_URL in your settings (for example "redis://localhost:6379/0"), '
            'read by app.config_from_object("django.conf:settings", namespace="CELERY").'
        )
    return [
        _warning(
            13,
            f"The Celery app {current_app.main!r} has no broker_url: tasks are sent to "
            "Celery's default broker (amqp://guest@localhost//).",
            hint=hint,
        )
    ]


def log_checks() -> list[CheckMessage]:
    """Run the package's checks (tag :data:`TAG`) and log what they find; return it.

    For a process that does not run ``manage.py check`` itself: a Celery worker
    (see :mod:`django_taskqueue.receivers`). Errors go out at ``ERROR``, warnings
    at ``WARNING``, each with its id and hint; silenced ids are left out. A
    check that crashes is logged, never raised: a worker must still start.
    """
    from django.core.checks import run_checks

    try:
        messages = [m for m in run_checks(tags=[TAG]) if not m.is_silenced()]
    except Exception:
        logger.exception("django_taskqueue: the system checks could not run")
        return []
    for message in messages:
        level = logging.ERROR if message.is_serious() else max(message.level, logging.DEBUG)
        hint = f" HINT: {message.hint}" if message.hint else ""
        logger.log(level, "System check %s: %s%s", message.id, message.msg, hint)
    return messages


def register() -> None:
    """Register the checks (called from ``AppConfig.ready``)."""
    register_check(Tags.compatibility, TAG)(check_settings)
    register_check(Tags.compatibility, TAG)(check_task_types)
    register_check(Tags.compatibility, TAG)(check_setup)
    register_check(Tags.compatibility, TAG)(check_publish_waits)
    register_check(Tags.compatibility, TAG)(check_celery_app)
    register_check(Tags.urls, TAG)(check_api_apps)
