"""Server-sent events of one task's progress and status, by polling the database.

Plain Django (a ``StreamingHttpResponse``), so it needs no Channels. The stream
is built for servers that many clients share:

- **No database connection is held between polls.** Each poll reads one row
  and gives the connection back (closed, or returned to the pool of Django's
  PostgreSQL backend): an open stream costs no connection while it waits.
- **A short life.** A stream ends after ``API_STREAM_MAX_SECONDS`` (25 by
  default) with a ``retry:`` hint; the client reconnects with the
  ``Last-Event-ID`` header and the stream resumes where it left off. Each
  event's id names what the client has seen, so nothing is sent twice and the
  current state is never missed.
- **A per-user cap.** One user (an address, when anonymous) holds at most
  ``API_STREAM_MAX_PER_USER`` streams at once: the slots are leases in
  Django's cache (:class:`StreamSlots`), so the cap holds across processes
  and machines when the cache is shared, and a slot left by a process that
  died expires by itself.
- **WSGI and ASGI.** Under WSGI the stream is a generator (it holds one server
  thread, or a whole sync worker, while it lasts); under ASGI it is an
  asynchronous generator that sleeps on the event loop between polls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, transaction
from django.http import StreamingHttpResponse

from django_taskqueue.api.serializers import hide_workers
from django_taskqueue.live import LIVE_FIELDS
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES

logger = logging.getLogger("django_taskqueue")

#: The columns one poll reads: what the progress widget (and the admin's status view) show.
STREAM_FIELDS = LIVE_FIELDS

#: Milliseconds a client waits before reconnecting a stream that dropped.
RECONNECT_MS = 3000

#: Seconds a stream's slot in the cache lives without being renewed. A running
#: stream renews it every third of this; the slot of a process that died
#: (``kill -9``, a lost machine) is free again after it.
LEASE_SECONDS = 30.0

#: The longest ``Last-Event-ID`` read; a longer (or malformed) one is ignored.
_MAX_EVENT_ID = 64


def sse_message(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event: its type, an id and a JSON ``data`` line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def sse_retry(milliseconds: int) -> bytes:
    """The ``retry:`` field: how long the client waits before it reconnects."""
    return f"retry: {milliseconds}\n\n".encode()


def fingerprint(state: tuple[Any, ...]) -> str:
    """A short digest of what a ``progress`` event shows (status, progress, message)."""
    raw = json.dumps(state, cls=DjangoJSONEncoder).encode()
    return hashlib.blake2s(raw, digest_size=4).hexdigest()


def parse_event_id(value: str | None) -> tuple[int, str] | None:
    """``(number, fingerprint)`` from a ``Last-Event-ID`` this stream sent, else ``None``.

    Event ids read ``<number>-<fingerprint>``. Anything else (a client's own
    value, garbage) is ignored: the stream then starts afresh, it never fails.
    """
    if not value or len(value) > _MAX_EVENT_ID:
        return None
    number, _, digest = value.strip().partition("-")
    if not number.isdigit() or len(digest) != 8:
        return None
    try:
        int(digest, 16)
    except ValueError:
        return None
    return int(number), digest


def release_connections() -> None:
    """Give back this thread's database connections (closed, or returned to the pool).

    A connection inside a transaction (an ``atomic`` block, or autocommit
    turned off by the caller) is left alone: closing it would break that
    transaction. That only happens when a caller consumes the stream inside
    one, as tests do.
    """
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and transaction.get_autocommit(using=conn.alias):
            conn.close()


class StreamLease:
    """One stream's slot in the cache: renewed while the stream runs, deleted when it ends."""

    def __init__(self, key: str, value: dict[str, Any], seconds: float) -> None:
        self.key = key
        self.value = value
        self.seconds = seconds
        self.renewed = time.monotonic()
        self.released = False

    def renew(self) -> bool:
        """Keep the slot; ``False`` when it was lost (it expired and another stream took it)."""
        now = time.monotonic()
        if self.released:
            return False
        if now - self.renewed < self.seconds / 3:
            return True
        try:
            # touch() is False when the key is gone (it expired): take the slot
            # again if it is still free.
            kept = cache.touch(self.key, self.seconds) or cache.add(
                self.key, self.value, self.seconds
            )
        except Exception:
            # The cache is unreachable: the stream goes on; the cap is the cache's.
            logger.warning("Could not renew the stream slot %s", self.key, exc_info=True)
            kept = True
        self.renewed = now
        return bool(kept)

    def release(self) -> None:
        """Free the slot (only if it is still this stream's). Idempotent, never raises."""
        if self.released:
            return
        self.released = True
        try:
            # Not atomic, but the slot can change hands in between only if it
            # had expired, which a running stream prevents by renewing it.
            if cache.get(self.key) == self.value:
                cache.delete(self.key)
        except Exception:
            logger.warning("Could not free the stream slot %s", self.key, exc_info=True)


class StreamSlots:
    """At most ``limit`` concurrent streams for one user, counted in Django's default cache.

    Each stream takes one of ``limit`` keys with ``cache.add`` (atomic on
    every backend Django ships), so the count is shared by every process that
    shares the cache. A slot is a lease of :data:`LEASE_SECONDS` that the
    stream renews: one left by a process that died frees itself.

    Args:
        ident: Who holds the streams (a user's pk, or an address).
        limit: How many streams ``ident`` may hold at once.
        poll_interval: The stream's poll interval (a lease outlives three polls).
    """

    def __init__(self, ident: str, limit: int, *, poll_interval: float = 1.0) -> None:
        digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
        self.keys = [f"django_taskqueue:stream:{digest}:{n}" for n in range(limit)]
        self.lease_seconds = max(LEASE_SECONDS, 3 * poll_interval)

    def acquire(self, ends_at: float) -> StreamLease | None:
        """Take a free slot until about ``ends_at`` (a ``time.time()``), or ``None``."""
        value = {"token": uuid.uuid4().hex, "ends_at": ends_at}
        try:
            # One read finds the free slots; add() settles a race for one of them.
            held = cache.get_many(self.keys)
            for key in self.keys:
                if key not in held and cache.add(key, value, self.lease_seconds):
                    return StreamLease(key, value, self.lease_seconds)
        except Exception:
            # An unreachable cache does not take the stream down with it: it is
            # served uncounted (its lease takes a slot once the cache is back).
            logger.warning("Could not count the open streams in the cache", exc_info=True)
            return StreamLease(self.keys[0], value, self.lease_seconds)
        return None

    def retry_after(self) -> int:
        """Whole seconds until the first held slot is due to be free (at least 1)."""
        now = time.time()
        ends = [
            min(float(value.get("ends_at", now)), now + self.lease_seconds)
            for value in cache.get_many(self.keys).values()
            if isinstance(value, dict)
        ]
        return max(1, math.ceil(min(ends, default=now) - now))


class TaskStream:
    """The state of one stream: what to send after each poll, and when to poll next.

    Both the WSGI generator (:func:`task_events`) and the ASGI one
    (:func:`atask_events`) drive it; a poll is :meth:`step`, which is
    synchronous (it reads the database).
    """

    def __init__(
        self,
        pk: uuid.UUID,
        *,
        poll_interval: float,
        heartbeat: float,
        max_seconds: float,
        last_event_id: str | None = None,
        lease: StreamLease | None = None,
        clock: Callable[[], float] = time.monotonic,
        hide_worker: bool = False,
    ) -> None:
        self.pk = pk
        self.hide_worker = hide_worker
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.max_seconds = max_seconds
        self.lease = lease
        self.clock = clock
        resumed = parse_event_id(last_event_id)
        #: The number of the last event, and the fingerprint of what it showed.
        self.number = resumed[0] if resumed else 0
        self.seen: str | None = resumed[1] if resumed else None
        self.started = self.last_write = clock()

    def opening(self) -> bytes:
        """The first bytes: how long a client waits before reconnecting a dropped stream."""
        return sse_retry(RECONNECT_MS)

    def closing(self) -> bytes:
        """The last bytes of a stream that reached its lifetime: reconnect after one poll."""
        return sse_retry(max(1, round(self.poll_interval * 1000)))

    def _event(self, kind: str, row: dict[str, Any], state: tuple[Any, ...]) -> bytes:
        self.number += 1
        self.seen = fingerprint(state)
        return sse_message(kind, {"id": str(self.pk), **row}, f"{self.number}-{self.seen}")

    def step(self) -> tuple[list[bytes], float | None]:
        """Poll once: the chunks to send, and the seconds to wait (``None``: the stream ends)."""
        if self.lease is not None and not self.lease.renew():
            # The slot was lost: end, and let the client come back through the cap.
            return [self.closing()], None
        try:
            fields = (*STREAM_FIELDS, "worker") if self.hide_worker else STREAM_FIELDS
            row = TaskLog.objects.filter(pk=self.pk).values(*fields).first()
        finally:
            # Nothing holds a connection between two polls.
            release_connections()
        if row is None:
            gone = {"status": None, "detail": "The task no longer exists."}
            return [sse_message("end", gone)], None
        if self.hide_worker:
            # As in the detail view: a message that names the worker (a stale
            # task's "no heartbeat from <host>") does not show it to non-staff.
            hostnames = [row.pop("worker")]
            for key in ("error_message", "progress_message"):
                if row[key]:
                    row[key] = hide_workers(row[key], hostnames)
        state = (row["status"], row["progress"], row["progress_message"])
        if row["status"] in TERMINAL_STATUSES:
            # The end is always sent, even to a client that saw it: it closes the stream.
            return [self._event("end", row, state)], None
        chunks = []
        now = self.clock()
        if fingerprint(state) != self.seen:
            chunks.append(self._event("progress", row, state))
            self.last_write = now
        remaining = self.started + self.max_seconds - now
        if remaining <= 0:
            chunks.append(self.closing())
            return chunks, None
        if now - self.last_write >= self.heartbeat:
            chunks.append(b": keep-alive\n\n")
            self.last_write = now
        return chunks, min(self.poll_interval, remaining)

    def release(self) -> None:
        """Free the stream's slot (if it has one)."""
        if self.lease is not None:
            self.lease.release()


def task_events(
    pk: uuid.UUID,
    *,
    poll_interval: float,
    heartbeat: float,
    max_seconds: float,
    last_event_id: str | None = None,
    lease: StreamLease | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    hide_worker: bool = False,
) -> Iterator[bytes]:
    """Yield the stream of one task (for WSGI servers).

    A ``progress`` event is sent first and whenever the status, the progress or
    its message changes; an ``end`` event (the final state) closes the stream
    once the task has ended. Between changes, a ``: keep-alive`` comment goes
    out every ``heartbeat`` seconds so proxies and load balancers keep the
    connection open. After ``max_seconds`` the stream ends with a ``retry:``
    hint of one poll interval; the client reconnects with ``Last-Event-ID``
    (``last_event_id``), and the new stream sends only what changed since.
    With ``hide_worker`` the worker's hostname is left out of the messages
    (for users who are not shown server details).
    """
    stream = TaskStream(
        pk,
        poll_interval=poll_interval,
        heartbeat=heartbeat,
        max_seconds=max_seconds,
        last_event_id=last_event_id,
        lease=lease,
        clock=clock,
        hide_worker=hide_worker,
    )
    try:
        yield stream.opening()
        while True:
            chunks, wait = stream.step()
            yield from chunks
            if wait is None:
                return
            sleep(wait)
    finally:
        stream.release()


async def atask_events(
    pk: uuid.UUID,
    *,
    poll_interval: float,
    heartbeat: float,
    max_seconds: float,
    last_event_id: str | None = None,
    lease: StreamLease | None = None,
    hide_worker: bool = False,
) -> AsyncIterator[bytes]:
    """:func:`task_events` for ASGI servers: it waits on the event loop, not in a thread.

    Each poll runs in the request's own thread (``sync_to_async``, as Django
    runs every synchronous part of a request), where the view's connection
    lives, and gives the connection back before the wait.
    """
    stream = TaskStream(
        pk,
        poll_interval=poll_interval,
        heartbeat=heartbeat,
        max_seconds=max_seconds,
        last_event_id=last_event_id,
        lease=lease,
        hide_worker=hide_worker,
    )
    try:
        yield stream.opening()
        while True:
            chunks, wait = await sync_to_async(stream.step)()
            for chunk in chunks:
                yield chunk
            if wait is None:
                return
            await asyncio.sleep(wait)
    finally:
        # Also on a client that went away: Django's ASGI handler then cancels
        # the response, and does not call its close().
        await sync_to_async(stream.release)()


class EventStreamResponse(StreamingHttpResponse):
    """A ``text/event-stream`` response that frees its stream slot when it is closed.

    The server closes the response when the stream ends or the client leaves;
    the slot is freed then even if the stream never started.
    """

    def __init__(
        self,
        streaming_content: Iterable[bytes] | AsyncIterator[bytes],
        *,
        lease: StreamLease | None = None,
    ) -> None:
        super().__init__(streaming_content, content_type="text/event-stream; charset=utf-8")
        self.lease = lease
        self["Cache-Control"] = "no-cache"
        # nginx buffers responses unless told not to.
        self["X-Accel-Buffering"] = "no"

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lease is not None:
                self.lease.release()
