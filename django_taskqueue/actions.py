"""What the API, the admin and the management commands ask for: the operations that reach Celery.

:mod:`django_taskqueue.lifecycle` writes the rows and imports no Celery; the
operations here write through it and then talk to Celery: :func:`cancel` (and
its revoke), :func:`rerun` (a new row, then its message), :func:`start` (one
task on a file) and :func:`start_bulk` (the rows of a bulk run, then its
messages). Each returns what its callers answer with, so the API, the admin
and the commands need not find it again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from django_taskqueue import bulk, lifecycle, publishing
from django_taskqueue.exceptions import PublishError, TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.registry import tracked_task
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import BULK_TASK_NAME, EventType, TaskStatus
from django_taskqueue.tasks import publish_bulk
from django_taskqueue.tracked import TrackedTask

logger = logging.getLogger(__name__)


def _actor(user: Any) -> dict[str, Any]:
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return {"by_user_id": user.pk, "by_username": user.get_username()}


# --- cancelling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    """What :func:`cancel` did.

    Attributes:
        outcome: the task's transition to ``cancelled``.
        children: the Celery ids of the bulk children cancelled with it.
    """

    outcome: lifecycle.Outcome
    children: tuple[str, ...] = ()


def cancel(
    task_log: TaskLog,
    *,
    reason: str = "",
    user: Any = None,
    terminate: bool = False,
    revoke: bool = True,
) -> Cancelled:
    """Cancel a task: record it at once, then revoke the Celery id.

    The ``cancelled`` status is written before the revoke is sent, so the
    record is right even when the broker is unreachable; a worker that
    later receives the message skips it (TrackedTask checks the row before
    running), and a running task stops at its next progress or cancel check.
    A bulk parent takes its unfinished children with it.

    Args:
        task_log: the task.
        reason: why; stored as the error message and in the event.
        user: who asked (recorded in the event).
        terminate: also kill a running task's process (Celery's
            ``revoke(terminate=True)``; prefork pool only).
        revoke: send Celery's revoke (off in tests of the record alone).

    Returns:
        The transition, and the bulk children cancelled with the task.

    Raises:
        TransitionRefused: the task already finished.
    """
    outcome, children = lifecycle.cancel_with_children(
        task_log.pk, reason=reason, metadata={**_actor(user), "terminate": terminate}
    )
    if not outcome.applied:
        raise TransitionRefused(
            f"the task is already {outcome.status} and cannot be cancelled",
            status=outcome.status or "",
        )
    if revoke:
        celery_task_ids = [task_log.celery_task_id, *children]
        transaction.on_commit(lambda: send_revoke(celery_task_ids, terminate=terminate))
    task_log.refresh_from_db()
    return Cancelled(outcome, tuple(children))


def send_revoke(celery_task_id: str | list[str], *, terminate: bool = False) -> bool:
    """Broadcast Celery's revoke for one id or a list; log (don't raise) if the broker is down."""
    try:
        current_app.control.revoke(celery_task_id, terminate=terminate)
    except Exception:
        logger.warning("Could not send the revoke for task %s", celery_task_id, exc_info=True)
        return False
    return True


# --- running again ------------------------------------------------------------------------


def check_rerun(task_log: TaskLog, *, force: bool = False) -> TrackedTask:
    """Refuse what can never be run again, without writing anything.

    :func:`rerun` calls it first (and checks the status again under its lock);
    a caller may call it before its own checks to answer with this reason.

    Returns:
        The registered :class:`~django_taskqueue.TrackedTask` that would run.

    Raises:
        TransitionRefused: the task is a bulk parent, completed, active
            without ``force``, its arguments were redacted or not stored, or
            its Celery task is not a registered TrackedTask in this process
            (once its module has been looked for as a worker would:
            :func:`django_taskqueue.registry.tracked_task`).
    """
    status = task_log.status
    if task_log.task_name == BULK_TASK_NAME:
        raise TransitionRefused(
            "a bulk task is not run again as a whole: retry its failed or cancelled children",
            status=status,
        )
    lifecycle.check_rerun_status(status, force)
    if task_log.args_redacted:
        raise TransitionRefused(
            "the task's arguments were redacted when stored, so it cannot be run again with them",
            status=status,
        )
    try:
        return tracked_task(task_log.task_name)
    except ValidationError as exc:
        raise TransitionRefused(" ".join(exc.messages), status=status) from None


def rerun_options(task_log: TaskLog, now: datetime | None = None) -> dict[str, Any]:
    """The publish options of a re-run: the original's queue, priority and ETA.

    The ETA is kept only while it is still ahead: a re-run never starts
    before the original was due, and one whose time has passed runs now.
    """
    now = now or timezone.now()
    options: dict[str, Any] = {}
    if task_log.queue:
        options["queue"] = task_log.queue
    if task_log.priority is not None:
        options["priority"] = task_log.priority
    if task_log.eta is not None and task_log.eta > now:
        options["eta"] = task_log.eta
    return options


def rerun(
    task_log: TaskLog,
    *,
    force: bool = False,
    user: Any = None,
    terminate: bool = False,
    file: Mapping[str, Any] | None = None,
    **publish: Any,
) -> TaskLog:
    """Run a failed or cancelled task again, with the same arguments.

    The new run is a new TaskLog (a new Celery id: a revoked id stays revoked
    in the workers) that starts in ``retrying``, points at the original through
    ``retry_of`` and counts ``retry_count = original.retry_count + 1``. The
    original keeps its final status; both rows get a ``rerun`` event. It is
    published like the original (:func:`rerun_options`: queue, priority, and
    the ETA while that is still ahead).

    One lineage (a task, its re-runs, their re-runs) has at most one active
    run: while one is pending, processing or retrying, a re-run of any of them
    is refused. The check and the new row are written under a lock on the
    lineage's first row, so two requests at once give one re-run and one
    refusal; the message is published once that transaction has committed.

    Args:
        task_log: the task to run again.
        force: also allow a task that is still ``pending``, ``processing`` or
            ``retrying`` (stuck after its worker died): it is first cancelled
            with ``error_code="superseded"`` and its Celery id revoked, so a
            worker that still holds it stops it (see ``terminate``).
        user: who asked (recorded in the events).
        terminate: with ``force``, revoke with ``terminate=True``: the worker
            kills the process running the superseded task (prefork pool).
            Otherwise it stops at its next progress report or cancel check.
        file: the file the new run works on instead of the recorded one, as
            ``{"file_path", "file_name", "file_size"}`` (the API passes the
            path it re-resolved inside ``ALLOWED_FILE_ROOTS``); it replaces the
            first positional argument and the file fields.
        **publish: more ``apply_async`` options (e.g. a retry policy).

    Raises:
        TransitionRefused: see :func:`check_rerun`; also when another run of
            the lineage is active, or a forced task completed meanwhile.
    """
    task = check_rerun(task_log, force=force)
    actor = _actor(user)
    args = list(task_log.args)
    file_fields = {
        "file_path": task_log.file_path,
        "file_name": task_log.file_name,
        "file_size": task_log.file_size,
    }
    if file is not None:
        args[:1] = [file["file_path"]]
        file_fields = {key: file[key] for key in file_fields}
    new_id = str(uuid.uuid4())
    options = rerun_options(task_log)
    new_log, superseded = lifecycle.create_rerun(
        task_log,
        celery_task_id=new_id,
        force=force,
        actor=actor,
        terminate=terminate,
        task_name=task.name,
        args=args,
        kwargs=task_log.kwargs,
        owner_id=task_log.owner_id,
        task_type=task_log.task_type,
        tags=task_log.tags,
        metadata=task_log.metadata,
        parent_id=task_log.parent_id,
        max_retries=task.max_retries,
        queue=task_log.queue,
        eta=options.get("eta"),
        priority=task_log.priority,
        **file_fields,
    )
    if superseded:
        old_id = task_log.celery_task_id
        transaction.on_commit(lambda: send_revoke(old_id, terminate=terminate))
    try:
        # The row is committed: a worker that takes the message at once finds it.
        task.apply_async(
            args, task_log.kwargs, task_id=new_id, taskqueue_recorded=True, **{**options, **publish}
        )
    except Exception as exc:
        message = f"could not publish the task: {error_message_for(exc)}"
        # A publish that timed out after the broker may have taken the message
        # (``PublishError.sent is None``) is not a failure: the re-run may run.
        if getattr(exc, "sent", False) is None:
            if lifecycle.mark_publish_unknown(new_log.pk, error_message=message):
                new_log.error_code = lifecycle.PUBLISH_UNKNOWN
        else:
            lifecycle.mark_publish_failed(new_log.pk, error_message=message)
            new_log.status, new_log.error_code = TaskStatus.FAILED, lifecycle.PUBLISH_FAILED
        raise
    task_log.refresh_from_db()
    return new_log


# --- starting a task ----------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """What :func:`start` did.

    Attributes:
        task_log: the task's row.
        replayed: an earlier start with the same idempotency key made this row;
            nothing was published now.
    """

    task_log: TaskLog
    replayed: bool


def start(
    task: TrackedTask,
    file: Mapping[str, Any],
    *,
    kwargs: Mapping[str, Any],
    celery_task_id: str,
    idempotency_key: str | None = None,
    **fields: Any,
) -> Started:
    """Start ``task(file_path, **kwargs)`` on one file, ``kwargs`` also stored as its metadata.

    Args:
        task: the task, e.g. from :func:`django_taskqueue.http_policy.startable_task`.
        file: ``{"file_path", "file_name", "file_size"}``.
        kwargs: the task's keyword arguments.
        celery_task_id: the new task's Celery id (the caller names it in its
            answer when publishing fails).
        idempotency_key: see :meth:`~django_taskqueue.TrackedTask.submit`.
        **fields: more TaskLog fields (``owner``, ``task_type``...).

    Raises:
        MessageRefused: the task would refuse the message; nothing is written.
        PublishError: as :meth:`~django_taskqueue.TrackedTask.submit`.
        ValidationError: the idempotency key was used for another task or file.
    """
    log = task.submit(
        args=(file["file_path"],),
        kwargs=kwargs,
        metadata=kwargs,
        file_path=file["file_path"],
        file_name=file["file_name"],
        file_size=file["file_size"],
        task_id=celery_task_id,
        idempotency_key=idempotency_key,
        **fields,
    )
    return Started(log, replayed=log.celery_task_id != celery_task_id)


# --- starting a bulk run ------------------------------------------------------------------


@dataclass(frozen=True)
class BulkStarted:
    """What :func:`start_bulk` recorded and published.

    Attributes:
        parent: the bulk parent row (its Celery id is the group's).
        children: the children's rows, in the order of the files.
    """

    parent: TaskLog
    children: list[TaskLog]


def start_bulk(
    task: TrackedTask,
    files: Sequence[Mapping[str, Any]],
    *,
    kwargs: Mapping[str, Any],
    parallel: bool,
    parent_task_id: str,
    **create: Any,
) -> BulkStarted:
    """Record a bulk run, then publish it: a group, or a chain one file after the other.

    Every child's message is checked before any row is written. A parallel run
    is one message: a worker publishes the group (:func:`django_taskqueue.tasks.publish_bulk`);
    a chain publishes its first child, and each child's success the next.

    Args:
        task: the task each child runs as ``task(file_path, **kwargs)``.
        files: one mapping per child, as :func:`~django_taskqueue.lifecycle.create_bulk` takes.
        kwargs: keyword arguments of every child.
        parallel: a group (``True``) or a chain (``False``).
        parent_task_id: the parent's Celery id (the caller names it in its answer
            when publishing fails).
        **create: more of :func:`~django_taskqueue.lifecycle.create_bulk`'s arguments
            (``task_type``, ``owner``, ``event_metadata``...).

    Raises:
        MessageRefused: a child's message would be refused; nothing is written.
        PublishError: the messages could not be sent within ``PUBLISH_TIMEOUT``;
            the run is failed (``publish_failed``), or, when the broker may have
            taken the message, left running with a ``publish_unknown`` event.
    """
    bulk.check_children(task, files, kwargs)
    parent, children = lifecycle.create_bulk(
        task.name,
        files,
        kwargs=kwargs,
        parallel=parallel,
        parent_task_id=parent_task_id,
        max_retries=task.max_retries,
        **create,
    )
    try:
        if parallel:
            # One message; a worker publishes the group (see django_taskqueue.bulk).
            publishing.send(publish_bulk.apply_async, (str(parent.pk),), {"task_kwargs": kwargs})
        else:
            publishing.send(bulk.publish_chain, parent, children, kwargs)
    except PublishError as exc:
        if exc.sent is None:
            lifecycle.record_event(
                EventType.PUBLISH_UNKNOWN,
                str(exc),
                {"error_code": lifecycle.PUBLISH_UNKNOWN},
                pk=parent.pk,
            )
        else:
            lifecycle.fail_bulk(
                parent.pk,
                error_message=f"could not publish the tasks: {exc}",
                error_code=lifecycle.PUBLISH_FAILED,
            )
        raise
    return BulkStarted(parent, children)
