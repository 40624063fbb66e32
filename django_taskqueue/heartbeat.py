"""Heartbeats for running tracked tasks.

A task that reports progress refreshes its heartbeat with every progress write.
A long task that reports nothing would look stuck to the ``mark_stale``
housekeeping task, so each worker process runs one daemon thread that refreshes
the heartbeat of every tracked task running in that process, every
``HEARTBEAT_INTERVAL`` seconds, in a single ``UPDATE``.

One thread per process (not per task) keeps the cost flat with the threads
pool; the thread is (re)started lazily in the process that runs the task, so a
prefork child, which does not inherit its parent's threads, gets its own. The
thread never raises: a failed heartbeat is reported to the recording failure log
(:mod:`django_taskqueue.failurelog`) and retried at the next tick.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connections

from django_taskqueue import lifecycle
from django_taskqueue.conf import conf
from django_taskqueue.failurelog import recording_failures

logger = logging.getLogger("django_taskqueue")

_lock = threading.Lock()
#: Celery id -> TaskLog pk (None while not known) of the tracked tasks running in this process.
_running: dict[str, uuid.UUID | None] = {}
_thread: threading.Thread | None = None
_thread_pid: int | None = None
_wake = threading.Event()


def running() -> dict[str, uuid.UUID | None]:
    """A copy of the tasks this process is keeping alive (Celery id -> TaskLog pk)."""
    with _lock:
        return dict(_running)


def start(celery_task_id: str, pk: uuid.UUID | None) -> None:
    """Keep the heartbeat of a task that just started in this process fresh.

    Never raises: the heartbeat is a convenience, not a reason to fail a task.
    """
    if not celery_task_id:
        return
    try:
        with _lock:
            _running[celery_task_id] = pk
        _ensure_thread()
    except SoftTimeLimitExceeded:
        raise  # the task's own limit, fired here: the task must stop
    except Exception:
        logger.exception("django_taskqueue could not start the heartbeat of %s", celery_task_id)


def stop(celery_task_id: str | None) -> None:
    """Stop refreshing a task's heartbeat (it finished, failed, retried or was ignored)."""
    if not celery_task_id:
        return
    with _lock:
        _running.pop(celery_task_id, None)


def beat_once() -> int:
    """Refresh the heartbeat of every task running in this process now; return how many rows."""
    return _touch(running())


def _touch(tasks: dict[str, uuid.UUID | None]) -> int:
    if not tasks:
        return 0
    pks = [pk for pk in tasks.values() if pk is not None]
    ids = [task_id for task_id, pk in tasks.items() if pk is None]
    return lifecycle.touch_many(pks, ids)


def _on_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    # task_postrun is sent for every outcome (success, failure, retry, ignore,
    # reject), unlike after_return, which Celery skips for retries and ignores.
    stop(task_id)


def _ensure_thread() -> None:
    global _thread, _thread_pid  # noqa: PLW0603 (one thread per process, by design)

    pid = os.getpid()
    with _lock:
        if _thread is not None and _thread_pid == pid and _thread.is_alive():
            return
        signals.task_postrun.connect(
            _on_task_postrun, weak=False, dispatch_uid="django_taskqueue.heartbeat"
        )
        _thread = threading.Thread(target=_loop, name="django-taskqueue-heartbeat", daemon=True)
        _thread_pid = pid
        _thread.start()


def _loop() -> None:
    while True:
        interval = _interval()
        _wake.wait(interval if interval is not None else 5.0)
        _wake.clear()
        if interval is None:
            continue  # heartbeats are off; look at the setting again later
        try:
            _tick()
        except Exception:  # the thread must outlive anything a tick can raise
            logger.warning("django_taskqueue could not refresh heartbeats", exc_info=True)
        finally:
            # A connection held between ticks would be one idle connection per
            # worker process; a heartbeat a minute can afford to reconnect.
            try:
                connections.close_all()
            except Exception:
                logger.debug("closing the heartbeat thread's connection failed", exc_info=True)


def _tick() -> None:
    """One heartbeat: refresh the running tasks' rows, reporting to the recording failure log."""
    tasks = running()
    if not tasks:
        return  # no query: nothing learnt about the database
    try:
        _touch(tasks)
    except Exception as exc:
        recording_failures.failed("heartbeat", exc, "django_taskqueue could not refresh heartbeats")
    else:
        recording_failures.succeeded()


def _interval() -> float | None:
    try:
        return conf.HEARTBEAT_INTERVAL
    except Exception:
        logger.warning("django_taskqueue: bad HEARTBEAT_INTERVAL; heartbeats paused", exc_info=True)
        return None
