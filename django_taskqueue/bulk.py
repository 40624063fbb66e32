"""Publishing a bulk run: the children of a parent row as a Celery group or chain.

:func:`~django_taskqueue.lifecycle.create_bulk` records the rows; this module
turns them into messages. Each child's signature is immutable (a chain does not
pass results along) and carries the Celery id of its row, so what the workers
record lands on the rows that exist.

A chain is one message (Celery sends each next step when the previous one
returns), so it is published at once. A group is one message per child, which
for a thousand files takes longer than a web request should: the API publishes
a single :func:`django_taskqueue.tasks.publish_bulk` message instead, and a
worker publishes the group.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery import chain, current_app, group
from celery.canvas import Signature

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import TaskStatus

if TYPE_CHECKING:
    from django_taskqueue.tracked import TrackedTask


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


def child_signatures(
    task_name: str, children: Iterable[tuple[str, str]], kwargs: Mapping[str, Any]
) -> list[Signature[Any]]:
    """Immutable signatures ``task(file_path, **kwargs)`` under the given ``(celery_id, path)``."""
    task = current_app.tasks[task_name]
    return [
        task.signature(
            (file_path,),
            dict(kwargs),
            immutable=True,
            task_id=celery_task_id,
            # The rows exist already: publish without recording them again.
            taskqueue_recorded=True,
        )
        for celery_task_id, file_path in children
    ]


def publish_chain(
    parent: TaskLog, children: Iterable[TaskLog], kwargs: Mapping[str, Any], **options: Any
) -> None:
    """Publish the children, in order, as one chain (one message)."""
    task_name = parent.metadata["bulk"]["task_name"]
    pairs = [(child.celery_task_id, child.file_path) for child in children]
    chain(*child_signatures(task_name, pairs, kwargs)).apply_async(**options)


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
