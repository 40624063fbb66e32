"""What the HTTP API may start, cancel and run again: the host's allow-lists decide.

Over HTTP a user starts only the task types the host lists in ``TASK_TYPES``
(:func:`startable_task`), each on one file inside ``ALLOWED_FILE_ROOTS``
(``task(file_path, **metadata)``).
Running again over HTTP obeys the same lists, so the API never starts what it
could not have started: a task the host starts itself for a user (with an
owner, so that the user can follow it) can be followed and cancelled by that
user over HTTP, but not run again.
The admin (with its permissions), the management commands and the host's own
code are not bound by these rules.

This is core policy: it raises Django's
:class:`~django.core.exceptions.ValidationError`, which the API answers with
a 400 (starting) or a 409 (running again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError

from django_taskqueue import registry
from django_taskqueue.conf import conf
from django_taskqueue.models import TaskLog
from django_taskqueue.status import BULK_TASK_NAME

if TYPE_CHECKING:
    from django_taskqueue.tracked import TrackedTask


def startable_task(task_type: str) -> TrackedTask:
    """The TrackedTask that ``TASK_TYPES`` maps ``task_type`` to, found as a worker finds it.

    The task's module need not have been imported in this process: see
    :func:`django_taskqueue.registry.find_task`.

    Raises:
        ValidationError: ``code="unknown_task_type"``, ``TASK_TYPES`` has no
            such key; ``code="not_registered"`` or ``"not_tracked"``, its
            Celery task cannot be found or is not a TrackedTask (system check
            ``django_taskqueue.E019``/``E020`` reports this at startup).
    """
    name = conf.TASK_TYPES.get(task_type)
    if name is None:
        known = ", ".join(sorted(conf.TASK_TYPES)) or "none are configured"
        raise ValidationError(
            "%(type)r is not a task type that can be started here; the types are: %(known)s.",
            code="unknown_task_type",
            params={"type": task_type, "known": known},
        )
    try:
        return registry.tracked_task(name)
    except ValidationError as exc:
        raise ValidationError(
            "The task type %(type)r cannot be started: %(message)s",
            code=exc.code,
            params={"type": task_type, "message": " ".join(exc.messages)},
        ) from None


def started_task_name(task_log: TaskLog) -> str:
    """The Celery task a row runs; for a bulk parent, the one its children run."""
    if task_log.task_name == BULK_TASK_NAME:
        bulk = task_log.metadata.get("bulk") if isinstance(task_log.metadata, dict) else None
        return str(bulk.get("task_name") or "") if isinstance(bulk, dict) else ""
    return task_log.task_name


def check_http_rerun(task_log: TaskLog) -> None:
    """Refuse to run again over HTTP a task the API could not have started.

    Raises:
        ValidationError: (``code="not_startable"``) no ``TASK_TYPES`` entry
            names the task's Celery task.
    """
    name = started_task_name(task_log)
    if not name or name not in set(conf.TASK_TYPES.values()):
        raise ValidationError(
            "the task's Celery task %(name)r is not one of the task types that can be "
            "started over HTTP (TASK_TYPES), so it cannot be run again here",
            code="not_startable",
            params={"name": name},
        )


def http_rerun_file(task_log: TaskLog) -> str:
    """The file path an HTTP re-run works on: the task's one positional argument.

    The caller re-resolves the path inside ``ALLOWED_FILE_ROOTS`` before the
    re-run: since the first run the file may have moved, been replaced by a
    symlink that leaves the roots, or the roots may have changed.

    Raises:
        ValidationError: (``code="not_replayable"``) the recorded positional
            arguments are not exactly one file path, as the API starts tasks.
    """
    args = task_log.args
    if not (isinstance(args, list) and len(args) == 1 and isinstance(args[0], str) and args[0]):
        raise ValidationError(
            "the task was not started with a single file path, as the API starts tasks, "
            "so it cannot be run again over HTTP",
            code="not_replayable",
        )
    return args[0]
