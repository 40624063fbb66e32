"""Finding a TrackedTask by its Celery name in any process, the web process included.

Celery's Django guide has the host call ``app.autodiscover_tasks()`` in its
Celery module. That call is lazy: the installed apps' ``tasks`` modules are
imported when a worker starts, not in the web process, which then knows no task
that the host did not import itself. The API, the admin and the system checks
start or re-run tasks by name in exactly that process.

:func:`find_task` looks in ``current_app.tasks``; for a name that is not
there it runs the discovery now, once per process: Celery's
``app.autodiscover_tasks(packages, force=True)`` over the installed apps, and
the modules of Celery's ``imports`` and ``include`` settings, as a worker
would. A name that ``TASK_TYPES`` lists is then looked for in the module part
of its dotted name too (``"shop.tasks.resize"``: ``shop.tasks``).

It does not call ``app.loader.import_default_modules()``: under Django, the
``import_modules`` signal it sends makes Celery's Django fix-up run
``django.setup()`` again (which configures logging again) and every system
check, in the middle of a request.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from django_taskqueue.conf import conf

if TYPE_CHECKING:
    from celery import Task

    from django_taskqueue.tracked import TrackedTask

logger = logging.getLogger("django_taskqueue")

_lock = threading.RLock()
#: Set once the discovery ran in this process (it is not run again).
_discovered = threading.Event()


def _modules(value: Any) -> list[str]:
    """Celery's ``imports``/``include``: a module name, or a sequence of them."""
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(name) for name in value]


def discover_tasks() -> None:
    """Import what a worker imports to find its tasks, once per process.

    The ``tasks`` module of every installed app (Celery's autodiscovery, run
    now with ``force=True``), then the modules of Celery's ``imports`` and
    ``include`` settings. A module that fails to import is logged and skipped:
    the others are still imported.
    """
    from celery import current_app
    from django.apps import apps

    with _lock:
        if _discovered.is_set():
            return
        # Set first: a tasks module that looks for a task while it is imported
        # (same thread, the lock is re-entrant) does not start the discovery again.
        _discovered.set()
        app = current_app
        for package in [config.name for config in apps.get_app_configs()]:
            try:
                app.autodiscover_tasks([package], force=True)
            except Exception:
                logger.warning("Could not import the tasks of the app %s", package, exc_info=True)
        for module in _modules(app.conf.imports) + _modules(app.conf.include):
            try:
                importlib.import_module(module)
            except Exception:
                logger.warning("Could not import the task module %s", module, exc_info=True)


def _find(name: str) -> tuple[Task[Any, Any] | None, str | None, str | None]:
    """The task, the module imported for it (or None) and why that import failed (or None)."""
    from celery import current_app

    tasks = current_app.tasks
    task = tasks.get(name)
    if task is not None:
        return task, None, None
    discover_tasks()
    task = tasks.get(name)
    module = name.rpartition(".")[0]
    # Only a name the host wrote in its settings has its module imported: the name
    # of a stored task is not reason enough to run a module's code.
    if task is not None or not module or name not in set(conf.TASK_TYPES.values()):
        return task, None, None
    with _lock:
        try:
            importlib.import_module(module)
        except Exception as exc:
            return tasks.get(name), module, f"{type(exc).__name__}: {exc}"
    return tasks.get(name), module, None


def find_task(name: str) -> Task[Any, Any] | None:
    """The Celery task registered as ``name`` in the current app, discovering it if need be.

    Looks in ``current_app.tasks``; then runs :func:`discover_tasks` (once per
    process); then, for a name that ``TASK_TYPES`` lists, imports the module
    part of the name. None when none of this defines it.
    """
    return _find(name)[0]


def tracked_task(name: str) -> TrackedTask:
    """The registered :class:`~django_taskqueue.TrackedTask` named ``name`` (see :func:`find_task`).

    Raises:
        ValidationError: ``code="not_registered"``, no Celery task of that
            name could be found; ``code="not_tracked"``, it is a Celery task
            but not a TrackedTask. The message says what to do.
    """
    from django_taskqueue.tracked import TrackedTask

    task, module, failure = _find(name)
    if isinstance(task, TrackedTask):
        return task
    if task is not None:
        raise ValidationError(
            "%(name)r is a Celery task but not a registered TrackedTask in this process: "
            "give it base=TrackedTask (@shared_task(base=TrackedTask, bind=True)) or make it "
            "a subclass of TrackedTask.",
            code="not_tracked",
            params={"name": name},
        )
    if failure:
        why = f"importing {module!r} failed ({failure})"
    else:
        why = "no installed app's tasks module defines it" + (
            f", nor does {module!r}" if module else ""
        )
    raise ValidationError(
        "%(name)r is not a registered TrackedTask in this process: %(why)s. Define it with "
        "@shared_task(base=TrackedTask, bind=True) in the tasks.py of an installed app, or "
        "correct the name (a task's name is module.function unless it sets name=).",
        code="not_registered",
        params={"name": name, "why": why},
    )
