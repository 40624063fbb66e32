"""Starting the example's tasks: one at a time, and as Celery canvas (chain, group, chord)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import chain, chord, group
from celery import current_app as celery_app
from celery.result import AsyncResult, GroupResult

from django_taskqueue import TrackedTask
from django_taskqueue.models import TaskLog
from jobs import tasks


def queue_for(task: TrackedTask) -> str:
    """The queue that ``CELERY_TASK_ROUTES`` sends ``task`` to."""
    route = celery_app.amqp.router.route({}, task.name)
    queue = route.get("queue")
    return str(getattr(queue, "name", queue) or celery_app.conf.task_default_queue)


def start(
    task: TrackedTask,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    owner: Any = None,
    file_path: str | Path = "",
    **options: Any,
) -> TaskLog:
    """Submit ``task`` for ``owner`` and return its TaskLog.

    The queue is looked up in the routes and passed on, so the TaskLog shows the queue
    the task went to (a route applied later, inside Celery, would not be recorded).
    """
    return task.submit(
        args=args,
        kwargs=kwargs,
        owner=owner,
        file_path=str(file_path),
        queue=queue_for(task),
        **options,
    )


def image_batch(paths: Iterable[str | Path], width: int = 400) -> GroupResult:
    """A group: thumbnail several images in parallel."""
    result: GroupResult = group(
        tasks.process_image.s(str(path), width=width) for path in paths
    ).apply_async()
    return result


def corpus_word_counts(paths: Iterable[str | Path]) -> AsyncResult:
    """A chord: count the words of each document in parallel, then merge the counts."""
    header = [tasks.count_words.s(str(path)) for path in paths]
    result: AsyncResult = chord(header)(tasks.merge_word_counts.s())
    return result


def document_then_notify(path: str | Path, user_id: int) -> AsyncResult:
    """A chain: summarise a document, then mail the summary to the user."""
    result: AsyncResult = chain(
        tasks.process_document.s(str(path)),
        tasks.send_completion_email.s(user_id=user_id, what=f"The summary of {Path(path).name}"),
    ).apply_async()
    return result


def task_ids(result: AsyncResult | GroupResult) -> list[str]:
    """Every Celery task id of a canvas result, first to last (a chord: header, then body)."""
    ids: list[str] = []
    node: Any = result
    while node is not None:
        if isinstance(node, GroupResult):
            ids[:0] = [child.id for child in node.results or []]
        else:
            ids.insert(0, node.id)
        node = node.parent
    return ids
