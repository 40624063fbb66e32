"""Server-sent events of one task's progress and status, by polling the database.

Plain Django (a ``StreamingHttpResponse``), so it needs no Channels: each open
stream holds one server worker (thread or process) and reads one row per
``API_STREAM_POLL_INTERVAL``. It ends when the task ends, or after
``API_STREAM_MAX_SECONDS`` (the browser's ``EventSource`` then reconnects).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES

#: The columns one poll reads.
STREAM_FIELDS = (
    "status",
    "progress",
    "progress_message",
    "error_message",
    "error_code",
    "started_at",
    "completed_at",
)

#: Milliseconds a browser waits before reconnecting a dropped stream.
RECONNECT_MS = 3000


def sse_message(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One server-sent event: its type, an id and a JSON ``data`` line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def task_events(
    pk: uuid.UUID,
    *,
    poll_interval: float,
    heartbeat: float,
    max_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """Yield the stream of one task.

    A ``progress`` event is sent first and whenever the status, the progress or
    its message changes; an ``end`` event (the final state) closes the stream
    once the task has ended. Between changes, a ``: keep-alive`` comment goes
    out every ``heartbeat`` seconds so proxies and load balancers keep the
    connection open.
    """
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    started = last_write = clock()
    last: tuple[Any, ...] | None = None
    event_id = 0
    while True:
        row = TaskLog.objects.filter(pk=pk).values(*STREAM_FIELDS).first()
        if row is None:
            yield sse_message("end", {"status": None, "detail": "The task no longer exists."})
            return
        state = (row["status"], row["progress"], row["progress_message"])
        if row["status"] in TERMINAL_STATUSES:
            event_id += 1
            yield sse_message("end", {"id": str(pk), **row}, event_id)
            return
        if state != last:
            event_id += 1
            yield sse_message("progress", {"id": str(pk), **row}, event_id)
            last = state
            last_write = clock()
        now = clock()
        if now - started >= max_seconds:
            return
        if now - last_write >= heartbeat:
            yield b": keep-alive\n\n"
            last_write = now
        sleep(poll_interval)
