"""Small helpers shared by the tests (no factory library)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog


def make_log(**fields: Any) -> TaskLog:
    """Record a pending task through the lifecycle, as a producer would."""
    celery_task_id = fields.pop("celery_task_id", None) or str(uuid.uuid4())
    fields.setdefault("task_name", "tests.add")
    return lifecycle.create_task_log(celery_task_id, **fields)


def events(log: TaskLog) -> list[str]:
    """The task's event types, oldest first."""
    return list(log.events.order_by("created_at", "id").values_list("event_type", flat=True))


def finished(celery_task_id: str, timeout: float = 30.0) -> TaskLog:
    """Wait until the task's row reaches a terminal status; return it."""
    from tests.live import wait_for

    def get() -> TaskLog | None:
        return TaskLog.objects.filter(
            celery_task_id=celery_task_id, status__in=("completed", "failed", "cancelled")
        ).first()

    log: TaskLog = wait_for(get, timeout, what=f"task {celery_task_id} to finish")
    return log


def make_user(username: str, *, staff: bool = False) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, is_staff=staff
    )


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
