"""The tasks each variant runs: the same body, only the tracking differs."""

from __future__ import annotations

import json
import os
import time
import weakref
from typing import Any

import redis
from celery import Task, shared_task
from celery.signals import task_postrun
from django.db import connection
from django.utils import timezone
from psycopg import pq

from django_taskqueue import TrackedTask

_redis: redis.Redis | None = None
COUNTER = "bench:done"
# When the first task of a batch finished (time.time()), for timing the worker alone.
FIRST_DONE = "bench:first"


@task_postrun.connect
def _done(sender: Any = None, **kwargs: Any) -> None:
    # Every variant counts finished tasks the same way, after the task's own
    # recording and result storing (task_postrun comes last), so the runner
    # knows when the last one was fully done without a result backend.
    global _redis  # noqa: PLW0603
    if not getattr(sender, "name", "").startswith("bench."):
        return
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/9"))
    if _redis.incr(COUNTER) == 1:
        _redis.set(FIRST_DONE, repr(time.time()))


@shared_task(name="bench.plain")
def plain(n: int) -> int:
    return n


@shared_task(name="bench.results", ignore_result=False)
def results(n: int) -> int:
    return n


@shared_task(name="bench.results_started", ignore_result=False, track_started=True)
def results_started(n: int) -> int:
    return n


@shared_task(base=TrackedTask, bind=True, name="bench.tracked")
def tracked(self: TrackedTask, n: int) -> int:
    return n


@shared_task(base=TrackedTask, bind=True, name="bench.tracked_progress")
def tracked_progress(self: TrackedTask, calls: int) -> float:
    start = time.perf_counter()
    for i in range(1, calls + 1):
        self.update_progress(current=i, total=calls, message="working")
    elapsed = time.perf_counter() - start
    return elapsed


@shared_task(bind=True, name="bench.update_state", ignore_result=False)
def update_state(self: Task[Any, Any], calls: int) -> float:
    start = time.perf_counter()
    for i in range(1, calls + 1):
        self.update_state(state="PROGRESS", meta={"current": i, "total": calls})
    elapsed = time.perf_counter() - start
    return elapsed


# --- the floor: what two synchronous writes per task cost at the least ---------------
#
# The start and the end the package records for a tracked task (the same columns,
# conditions and events, asynchronous commit), each hand-built as one statement, prepared
# once per connection and run by bare libpq calls with nothing around them: no Django, no
# lifecycle, no signals, no heartbeat, no fallbacks. (The package itself writes them
# through Django's ORM; this is a benchmark's yardstick, not a second write path.) No real
# tracker can be cheaper than this, so its ratio to plain Celery says what the two writes
# alone cost on the machine the benchmark runs on.

_FLOOR_START = b"""
WITH u AS (
    UPDATE django_taskqueue_tasklog
    SET status = 'processing', started_at = COALESCE(started_at, $2), heartbeat_at = $2,
        worker = $3, attempt = $4, next_retry_at = NULL,
        queue = CASE WHEN queue = '' THEN $5 ELSE queue END
    WHERE celery_task_id = $1 AND status IN ('pending', 'retrying') AND attempt <= $4
    RETURNING id, parent_id
), e AS (
    INSERT INTO django_taskqueue_taskeventlog (task_id, event_type, message, metadata, created_at)
    SELECT id, 'started', $6, $7, $2 FROM u
)
SELECT id, parent_id FROM u WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
"""
_FLOOR_END = b"""
WITH u AS (
    UPDATE django_taskqueue_tasklog
    SET status = 'completed', completed_at = $2, heartbeat_at = $2, progress = 100,
        result = $3, next_retry_at = NULL, error_message = '', error_code = ''
    WHERE id = $1 AND status IN ('pending', 'processing', 'retrying')
    RETURNING id, parent_id
), e AS (
    INSERT INTO django_taskqueue_taskeventlog (task_id, event_type, message, metadata, created_at)
    SELECT id, 'completed', 'completed', '{}', $2 FROM u
)
SELECT id, parent_id FROM u WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
"""
# Parameter type oids: unknown (0), timestamptz, int8, uuid, jsonb.
_FLOOR_TYPES = {b"floor_start": [0, 1184, 0, 20, 0, 0, 3802], b"floor_end": [2950, 1184, 3802]}
_floor_ready: weakref.WeakSet[Any] = weakref.WeakSet()


def _floor_run(name: bytes, params: list[bytes]) -> Any:
    """Run one of the floor's statements on Django's connection (autocommit)."""
    connection.ensure_connection()
    raw = connection.connection
    if raw not in _floor_ready:
        for statement, sql in ((b"floor_start", _FLOOR_START), (b"floor_end", _FLOOR_END)):
            raw.pgconn.prepare(statement, sql, _FLOOR_TYPES[statement])
        _floor_ready.add(raw)
    result = raw.pgconn.exec_prepared(name, params)
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise RuntimeError(result.error_message.decode())
    return result


class FloorTask(TrackedTask):
    """Created by TrackedTask's producer side; started and ended by the bare statements."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        now = timezone.now().isoformat().encode()
        host = str(self.request.hostname or "")
        attempt = int(self.request.retries or 0)
        meta = json.dumps({"attempt": attempt, "worker": host}).encode()
        queue = str((self.request.delivery_info or {}).get("routing_key") or "")
        params = [task_id.encode(), now, host.encode(), str(attempt).encode(), queue.encode()]
        result = _floor_run(b"floor_start", [*params, f"started on {host}".encode(), meta])
        self.request.floor_pk = result.get_value(0, 0)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        now = timezone.now().isoformat().encode()
        _floor_run(b"floor_end", [self.request.floor_pk, now, json.dumps(retval).encode()])


@shared_task(base=FloorTask, bind=True, name="bench.floor")
def floor(self: FloorTask, n: int) -> int:
    return n
