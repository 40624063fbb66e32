"""The tasks each variant runs: the same body, only the tracking differs."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import redis
from celery import Task, shared_task
from celery.signals import task_postrun
from django.db import connection, transaction
from django.db.models import Case, DateTimeField, Field, JSONField, Value, When
from django.utils import timezone
from psycopg import pq

from django_taskqueue import TrackedTask
from django_taskqueue.models import TaskEventLog, TaskLog

_redis: redis.Redis | None = None
COUNTER = "bench:done"
# When the first task of a batch finished (time.time()), for timing the worker alone.
FIRST_DONE = "bench:first"


def _count_done(tasks: int) -> None:
    """Count ``tasks`` more as done (and note when the first one of a batch was)."""
    global _redis  # noqa: PLW0603
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/9"))
    if _redis.incrby(COUNTER, tasks) == tasks:
        _redis.set(FIRST_DONE, repr(time.time()))


@task_postrun.connect
def _done(sender: Any = None, **kwargs: Any) -> None:
    # Every variant counts finished tasks the same way, after the task's own
    # recording and result storing (task_postrun comes last), so the runner
    # knows when the last one was fully done without a result backend. The
    # batched variant counts its tasks when their records are stored instead.
    if getattr(sender, "name", "").startswith("bench.") and sender.name != batched.name:
        _count_done(1)


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


# --- batched: the same records, written off the task's path, many tasks per statement ----
#
# Each pool child queues its tasks' starts and ends; a thread of the child's own writes
# what has queued every FLUSH_SECONDS, through the ORM: one UPDATE per kind of change
# (started and ended, only started, only ended; the values that differ from row to row as
# CASE expressions), one SELECT of the rows' ids, one bulk INSERT of the events, in one
# transaction with an asynchronous commit. A task counts as done once its end is stored.
# Nothing else a tracker must do is here (guards beyond the status, cancellation,
# retries, failures, an outage, acks_late, heartbeats): it measures what writing in
# batches costs, as ``floor`` measures what two bare writes per task cost.

FLUSH_SECONDS = float(os.environ.get("BENCH_FLUSH_SECONDS", "0.02"))
_OPEN = ("pending", "retrying")


def _per_row(values: Mapping[str, Any], field: Field[Any, Any]) -> Case:
    """One column's value for each row of a batch, keyed by Celery id."""
    whens = [
        When(celery_task_id=key, then=Value(v, output_field=field)) for key, v in values.items()
    ]
    return Case(*whens, output_field=field)


class _Batch:
    """The starts and ends a pool child has queued, and the thread that stores them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: dict[str, tuple[Any, str, int]] = {}
        self.ends: dict[str, tuple[Any, Any]] = {}
        self.pid = 0

    def start_thread(self) -> None:
        # Pool children are forked from the worker: each starts a thread of its own.
        if self.pid != os.getpid():
            self.pid = os.getpid()
            threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.store()
            except Exception:
                # What failed is lost and the run never finishes: say why in the worker's log.
                logging.getLogger(__name__).exception("batched: could not store a batch")

    def store(self) -> None:
        with self.lock:
            starts, self.starts = self.starts, {}
            ends, self.ends = self.ends, {}
        if not starts and not ends:
            return
        ran = [key for key in ends if key in starts]
        started = [key for key in starts if key not in ends]
        ended = [key for key in ends if key not in starts]
        now = timezone.now()
        host = next(iter(starts.values()))[1] if starts else ""
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            if ran:
                TaskLog.objects.filter(celery_task_id__in=ran, status__in=_OPEN).update(
                    status="completed",
                    heartbeat_at=now,
                    worker=host,
                    attempt=0,
                    progress=100,
                    next_retry_at=None,
                    error_message="",
                    error_code="",
                    started_at=_per_row({k: starts[k][0] for k in ran}, DateTimeField()),
                    completed_at=_per_row({k: ends[k][0] for k in ran}, DateTimeField()),
                    result=_per_row({k: ends[k][1] for k in ran}, JSONField()),
                )
            if started:
                TaskLog.objects.filter(celery_task_id__in=started, status__in=_OPEN).update(
                    status="processing",
                    heartbeat_at=now,
                    worker=host,
                    attempt=0,
                    next_retry_at=None,
                    started_at=_per_row({k: starts[k][0] for k in started}, DateTimeField()),
                )
            if ended:
                TaskLog.objects.filter(celery_task_id__in=ended, status="processing").update(
                    status="completed",
                    heartbeat_at=now,
                    progress=100,
                    next_retry_at=None,
                    error_message="",
                    error_code="",
                    completed_at=_per_row({k: ends[k][0] for k in ended}, DateTimeField()),
                    result=_per_row({k: ends[k][1] for k in ended}, JSONField()),
                )
            ids = dict(
                TaskLog.objects.filter(celery_task_id__in=[*starts, *ended]).values_list(
                    "celery_task_id", "pk"
                )
            )
            events = [
                TaskEventLog(
                    task_id=ids[key],
                    event_type="started",
                    message=f"started on {worker}",
                    metadata={"attempt": attempt, "worker": worker},
                    created_at=at,
                )
                for key, (at, worker, attempt) in starts.items()
            ]
            events += [
                TaskEventLog(
                    task_id=ids[key], event_type="completed", message="completed", created_at=at
                )
                for key, (at, _result) in ends.items()
            ]
            TaskEventLog.objects.bulk_create(events)
        if ends:
            _count_done(len(ends))


_batch = _Batch()


class BatchedTask(TrackedTask):
    """Created by TrackedTask's producer side; started and ended by the child's batch."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        _batch.start_thread()
        start = (timezone.now(), str(self.request.hostname or ""), int(self.request.retries or 0))
        with _batch.lock:
            _batch.starts[task_id] = start

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        with _batch.lock:
            _batch.ends[task_id] = (timezone.now(), retval)


@shared_task(base=BatchedTask, bind=True, name="bench.batched")
def batched(self: BatchedTask, n: int) -> int:
    return n
