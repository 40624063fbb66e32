"""Publishing a bulk run: the children of a parent row, as a Celery group or one by one.

:func:`~django_taskqueue.lifecycle.create_bulk` records the rows; this module
turns them into messages. Each child's signature is immutable (a sequential run
does not pass results along) and carries the Celery id of its row, so what the workers
record lands on the rows that exist.

A sequential run is not a Celery ``chain``: a chain's first message carries
every later step, each with its own copy of the keyword arguments, so its size
grows with the run (3.3 MB for 300 files with 8 KB of metadata). Instead only
the first child is published; each child carries a success callback (``link``)
to :func:`django_taskqueue.tasks.continue_bulk`, which publishes the next child
with the same callback. Every message then holds one file's arguments, and the
shared keyword arguments for the task and once more for the callback, however
many files the run has. The keyword arguments travel in the messages rather
than being read back from the database because what is stored may be redacted
(or not stored at all, ``STORE_ARGS``).

A group is one message per child, which for a thousand files takes longer than
a web request should: the API publishes a single
:func:`django_taskqueue.tasks.publish_bulk` message instead, and a worker
publishes the group.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery import current_app, group
from celery.canvas import Signature
from django.db import transaction
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import TaskStatus

if TYPE_CHECKING:
    from django_taskqueue.tracked import TrackedTask

#: The name of :func:`django_taskqueue.tasks.continue_bulk`, the success callback of
#: each child of a sequential run.
CONTINUE_BULK = "django_taskqueue.continue_bulk"


def check_children(
    task: TrackedTask, files: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]
) -> None:
    """Refuse a bulk run whose children's messages the task would refuse, before any row.

    Each child runs ``task(file_path, **kwargs)``; the messages differ only in
    the path, so the one with the longest path is checked
    (:meth:`TrackedTask.check_message <django_taskqueue.TrackedTask.check_message>`).
    Call it before :func:`~django_taskqueue.lifecycle.create_bulk`.

    Raises:
        MessageRefused: as :meth:`~django_taskqueue.TrackedTask.check_message`.
    """
    if not files:
        return
    longest = max((str(item["file_path"]) for item in files), key=len)
    task.check_message((longest,), kwargs)


def child_signature(
    task_name: str, celery_task_id: str, file_path: str, kwargs: Mapping[str, Any]
) -> Signature[Any]:
    """The immutable signature ``task(file_path, **kwargs)`` of one child, under its Celery id."""
    return current_app.tasks[task_name].signature(
        (file_path,),
        dict(kwargs),
        immutable=True,
        task_id=celery_task_id,
        # The rows exist already: publish without recording them again.
        taskqueue_recorded=True,
    )


def child_signatures(
    task_name: str, children: Iterable[tuple[str, str]], kwargs: Mapping[str, Any]
) -> list[Signature[Any]]:
    """Immutable signatures ``task(file_path, **kwargs)`` under the given ``(celery_id, path)``."""
    return [
        child_signature(task_name, celery_task_id, file_path, kwargs)
        for celery_task_id, file_path in children
    ]


def chain_step(
    task_name: str,
    parent_id: uuid.UUID,
    celery_task_id: str,
    file_path: str,
    kwargs: Mapping[str, Any],
) -> Signature[Any]:
    """One child of a sequential run, linked to the step that publishes the next child."""
    signature = child_signature(task_name, celery_task_id, file_path, kwargs)
    # Called when the child succeeds, as a chain's next step would be. Named, not
    # imported: the task module calls this one (see django_taskqueue.tasks).
    step = current_app.signature(
        CONTINUE_BULK, args=(str(parent_id), celery_task_id, dict(kwargs)), immutable=True
    )
    signature.link(step)
    return signature


def publish_chain(
    parent: TaskLog, children: Sequence[TaskLog], kwargs: Mapping[str, Any], **options: Any
) -> None:
    """Start a sequential run: publish its first child (one message of constant size).

    The others follow one by one through :func:`publish_next`, in the order of
    ``children`` (:func:`~django_taskqueue.lifecycle.create_bulk` records
    that order in their ``created_at``).
    """
    if not children:
        return
    first = children[0]
    task_name = parent.metadata["bulk"]["task_name"]
    step = chain_step(task_name, parent.pk, first.celery_task_id, first.file_path, kwargs)
    step.apply_async(**options)


def publish_next(
    parent_id: uuid.UUID, after: str, kwargs: Mapping[str, Any], **options: Any
) -> str | None:
    """Publish the child that follows ``after`` in a sequential run, if it is still pending.

    Called by :func:`~django_taskqueue.tasks.continue_bulk` on a worker once
    the child ``after`` succeeded. Nothing is published when the parent has
    ended or the next child is not ``pending`` any more (cancelled: a broken
    chain stops, as a Celery chain does). The next child is claimed under a
    lock on the parent (its ``heartbeat_at`` is set: its message is out), so
    a duplicate call publishes nothing. If publishing fails, the parent and
    its pending children are failed (``publish_failed``) and the error is raised.

    Returns:
        The Celery id of the child published, or ``None``.
    """
    with transaction.atomic():
        parent = (
            TaskLog.objects.select_for_update()
            .filter(pk=parent_id)
            .values_list("status", "metadata")
            .first()
        )
        if parent is None or parent[0] != TaskStatus.PROCESSING:
            return None
        # The run's own children, in their order (re-runs of a child do not continue it).
        children = TaskLog.objects.filter(parent_id=parent_id, retry_of__isnull=True)
        previous = children.filter(celery_task_id=after).values_list("created_at", flat=True)
        row = (
            children.filter(created_at__gt=previous[:1])
            .order_by("created_at", "pk")
            .values_list("pk", "celery_task_id", "file_path", "status")
            .first()
        )
        if row is None or row[3] != TaskStatus.PENDING:
            return None
        pk, celery_task_id, file_path, _ = row
        claimed = TaskLog.objects.filter(
            pk=pk, status=TaskStatus.PENDING, heartbeat_at__isnull=True
        ).update(heartbeat_at=timezone.now())
        if not claimed:
            return None
    try:
        task_name = parent[1]["bulk"]["task_name"]
        chain_step(task_name, parent_id, celery_task_id, file_path, kwargs).apply_async(**options)
    except Exception as exc:
        lifecycle.fail_bulk(
            parent_id,
            error_message=f"could not publish the next task: {error_message_for(exc)}",
            error_code="publish_failed",
        )
        raise
    return str(celery_task_id)


def publish_group(parent_id: uuid.UUID, kwargs: Mapping[str, Any], **options: Any) -> int:
    """Publish the parent's pending children as a group whose id is the parent's Celery id.

    Called by the :func:`~django_taskqueue.tasks.publish_bulk` task on a worker.
    If publishing fails, the parent and its pending children are failed
    (``publish_failed``) and the error is raised.

    Returns:
        How many children were published.
    """
    parent = TaskLog.objects.only("celery_task_id", "metadata", "status").get(pk=parent_id)
    if parent.status != TaskStatus.PROCESSING:
        return 0  # cancelled (or failed) before its children went out
    pairs = list(
        TaskLog.objects.filter(parent_id=parent_id, status=TaskStatus.PENDING)
        .order_by("file_path")
        .values_list("celery_task_id", "file_path")
    )
    if not pairs:
        return 0
    try:
        signatures = child_signatures(parent.metadata["bulk"]["task_name"], pairs, kwargs)
        group(signatures).apply_async(task_id=parent.celery_task_id, **options)
    except Exception as exc:
        lifecycle.fail_bulk(
            parent_id,
            error_message=f"could not publish the tasks: {error_message_for(exc)}",
            error_code="publish_failed",
        )
        raise
    return len(pairs)
