"""System checks for the ``DJANGO_TASKQUEUE`` settings and unsafe setups.

The settings' own check (:func:`check_settings`, :func:`setting_errors`) lives in
:mod:`django_taskqueue.setting_checks`, which reads values only, so that
:mod:`django_taskqueue.conf` can run it without importing this module's checks of
the environment (Celery, the registry, the URLconf); it is re-exported here.

Every id is listed in ``docs/checks.md``, where it has an anchor of its own
(``#e004``) that its hint links to. The checks carry the tag :data:`TAG` too, so
``manage.py check --tag django_taskqueue`` runs the package's checks alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from numbers import Real
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Tags
from django.core.checks import register as register_check
from django.db import router
from django.urls import URLPattern, URLResolver, get_resolver

from django_taskqueue.defaults import DEFAULTS, DOCS_URL, docs_url
from django_taskqueue.setting_checks import (
    MAX_MESSAGE_DEPTH,
    check_settings,
    error,
    setting_errors,
    warning,
)

__all__ = [
    "MAX_MESSAGE_DEPTH",
    "TAG",
    "check_api_apps",
    "check_celery_app",
    "check_publish_waits",
    "check_settings",
    "check_setup",
    "check_task_types",
    "docs_url",
    "log_checks",
    "register",
    "setting_errors",
]

logger = logging.getLogger("django_taskqueue")

#: The tag of the package's checks (besides Django's ``compatibility``).
TAG = "django_taskqueue"


def check_setup(**kwargs: Any) -> list[CheckMessage]:
    """Warn about setups that work but hurt."""
    warnings: list[CheckMessage] = []
    if getattr(settings, "CELERY_DB_REUSE_MAX", None) is None:
        warnings.append(
            warning(
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
                warning(
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
            warning(
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
        warning(
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
        warning(
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
                error(
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
                    error(
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
            error(
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
            warning(
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
        warning(
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
