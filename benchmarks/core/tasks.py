"""The tasks each variant runs: the same body, only the tracking differs."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Task, shared_task
from celery.signals import task_postrun

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
