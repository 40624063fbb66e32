"""Small helpers shared by the tests: published messages, the side queue, a worker's start.

The rows the tests start from come from :mod:`tests.factories`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog


@dataclass
class Published:
    """One message as Celery is about to publish it (``before_task_publish``)."""

    task: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    routing_key: str
    body: Any

    @property
    def size(self) -> int:
        """Bytes of the body and headers, serialized as the broker gets them (JSON)."""
        from kombu.serialization import dumps

        _, _, body = dumps(self.body, serializer="json")
        _, _, headers = dumps(self.headers, serializer="json")
        return len(body) + len(headers)


@contextmanager
def published() -> Iterator[list[Published]]:
    """Collect every message published in this process (any thread) while the block runs."""
    from celery.signals import before_task_publish

    sent: list[Published] = []

    def receive(
        sender: str | None = None,
        body: Any = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        routing_key: str = "",
        **_: Any,
    ) -> None:
        sent.append(
            Published(str(sender), dict(headers or {}), dict(properties or {}), routing_key, body)
        )

    before_task_publish.connect(receive, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(receive)


#: A queue no worker of the tests consumes: what is published there stays until purged.
SIDE_QUEUE = "taskqueue-tests-side"


def purge_queue(app: Any, name: str = SIDE_QUEUE) -> None:
    """Drop what waits in a queue of the broker (so that no later worker gets it)."""
    import contextlib

    with app.connection_for_write() as conn, contextlib.suppress(Exception):
        conn.default_channel.queue_purge(name)


def started(log: TaskLog, attempt: int = 0, worker: str = "w1@host") -> lifecycle.Outcome:
    """Record ``log``'s start as its worker would (the lifecycle tests' first step)."""
    return lifecycle.mark_started(log.celery_task_id, attempt=attempt, worker=worker)
