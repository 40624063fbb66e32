"""Bulk runs: a parent row and its children, written before they are published.

How a child's end updates its parent is part of the transitions
(:func:`~django_taskqueue.lifecycle.transitions.update_parent`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction

from django_taskqueue.lifecycle.creation import create_task_log
from django_taskqueue.lifecycle.records import BATCH, Outcome, record_time, stored_arguments
from django_taskqueue.lifecycle.transitions import end_children, mark_failed
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import BULK_TASK_NAME, EventType, TaskStatus


def create_bulk(
    task_name: str,
    files: Sequence[Mapping[str, Any]],
    *,
    task_type: str = "",
    kwargs: Mapping[str, Any] | None = None,
    parallel: bool = True,
    owner: Any = None,
    parent_task_id: str | None = None,
    tags: Sequence[str] | None = None,
    max_retries: int | None = None,
    queue: str = "",
    event_metadata: Mapping[str, Any] | None = None,
) -> tuple[TaskLog, list[TaskLog]]:
    """Record a bulk run: one parent row and one ``pending`` child per file, in one transaction.

    The children (and their ``created`` events) are written with
    ``bulk_create``, so a thousand files cost a handful of queries. The caller
    publishes the children with the Celery ids of the returned rows (a group or
    a chain) and, if that fails, calls :func:`fail_bulk`.

    The parent starts ``processing`` (``started_at`` now); its ``metadata["bulk"]``
    holds ``parallel``, ``files_count`` and the children's task name. The
    children's ``created_at`` are a microsecond apart, in the order of
    ``files``: the order a sequential run follows. When a child ends,
    :func:`~django_taskqueue.lifecycle.transitions.update_parent` updates the
    parent: see :doc:`/api` for the aggregation rule.

    Args:
        task_name: the Celery task each child runs (with the file path as its
            only positional argument).
        files: one mapping per child with ``file_path`` and optionally
            ``file_name`` and ``file_size``.
        task_type: recorded on the parent and the children.
        kwargs: keyword arguments of every child.
        parallel: a group (``True``) or a chain (``False``).
        owner: the user the rows belong to.
        parent_task_id: the parent's Celery id (the group id); a new UUID by default.
        tags: labels of every row.
        max_retries: the children's Celery ``max_retries``.
        queue: the queue the children are sent to.
        event_metadata: metadata of the parent's ``created`` event.

    Returns:
        ``(parent, children)``, the children in the order of ``files``.
    """
    now = record_time()
    tag_list = list(tags or [])
    parent_id = parent_task_id or str(uuid.uuid4())
    with transaction.atomic():
        parent = create_task_log(
            parent_id,
            task_name=BULK_TASK_NAME,
            status=TaskStatus.PROCESSING,
            event_message=f"bulk of {len(files)} {task_name} tasks, "
            + ("in parallel" if parallel else "in a chain"),
            event_metadata=event_metadata,
            owner=owner,
            task_type=task_type,
            tags=tag_list,
            metadata={
                "bulk": {"parallel": parallel, "files_count": len(files), "task_name": task_name}
            },
            started_at=now,
            heartbeat_at=now,
            queue=queue,
        )
        children = []
        # The keyword arguments are the same for every child: store them once.
        _, stored_kwargs, kwargs_redacted = stored_arguments(None, kwargs)
        for index, item in enumerate(files):
            path = str(item["file_path"])
            args, _, args_redacted = stored_arguments([path], None)
            redacted = args_redacted or kwargs_redacted
            children.append(
                TaskLog(
                    celery_task_id=str(uuid.uuid4()),
                    task_name=task_name,
                    task_type=task_type,
                    status=TaskStatus.PENDING,
                    queue=queue,
                    file_path=path,
                    file_name=str(item.get("file_name") or os.path.basename(path)),
                    file_size=item.get("file_size"),
                    owner=owner,
                    tags=tag_list,
                    args=args,
                    kwargs=stored_kwargs,
                    args_redacted=redacted,
                    max_retries=max_retries,
                    parent=parent,
                    # A microsecond apart: the run's order, which a sequential run follows.
                    created_at=now + timedelta(microseconds=index),
                )
            )
        TaskLog.objects.bulk_create(children, batch_size=BATCH)
        TaskEventLog.objects.bulk_create(
            [
                TaskEventLog(
                    task_id=child.pk,
                    event_type=EventType.CREATED,
                    message=f"part of the bulk task {parent.pk}",
                    metadata={"parent": str(parent.pk), "redacted": True}
                    if child.args_redacted
                    else {"parent": str(parent.pk)},
                    created_at=now,
                )
                for child in children
            ],
            batch_size=BATCH,
        )
    return parent, children


def fail_bulk(parent_pk: uuid.UUID, *, error_message: str, error_code: str) -> Outcome:
    """Fail a bulk run that could not be published: the parent and its pending children."""
    end_children(
        parent_pk,
        TaskStatus.FAILED,
        from_statuses={TaskStatus.PENDING},
        message=error_message,
        error_code=error_code,
        metadata={"parent": parent_pk},
    )
    return mark_failed(pk=parent_pk, error_message=error_message, error_code=error_code)
