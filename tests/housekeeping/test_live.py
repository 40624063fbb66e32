"""Integration: a real beat, real workers, SIGKILL. Run with TASKQUEUE_TEST_DB=postgres."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from django_taskqueue import housekeeping
from django_taskqueue.models import TaskLog
from tests import factories
from tests.live import beat_process, wait_for, worker_process

pytestmark = pytest.mark.integration


def _status(log: TaskLog) -> tuple[str, str]:
    log.refresh_from_db()
    return log.status, log.error_code


def test_the_presets_fire_under_beat_with_the_database_scheduler(
    transactional_db: Any, celery_app: Celery, tmp_path: Path
) -> None:
    pytest.importorskip("django_celery_beat")
    from django_taskqueue.beat import beat_schedule
    from django_taskqueue.contrib.beat.sync import sync_schedule

    expired = factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    recent = factories.task("completed", completed_at=factories.ago(days=1), progress_rows=1)
    stuck = factories.task("processing", heartbeat_at=factories.ago(hours=2))
    # Its queue does not exist on the broker, so no message can be waiting there.
    lost = factories.task(created_at=factories.ago(days=2), queue="tq-house-nowhere")
    sync_schedule(
        beat_schedule(
            cleanup=2,
            mark_stale=1,
            reconcile_lost={"schedule": 2, "kwargs": {"inspect_timeout": 1.0}},
            report={"schedule": 2, "kwargs": {"window_hours": 1}},
        )
    )

    with worker_process(tmp_path) as worker, beat_process(tmp_path) as beat:
        wait_for(
            lambda: not TaskLog.objects.filter(pk=expired.pk).exists(),
            timeout=40,
            what="the cleanup preset to delete the expired task",
        )
        wait_for(
            lambda: _status(stuck) == ("failed", "worker_lost"),
            timeout=40,
            what="the mark_stale preset",
        )
        wait_for(lambda: _status(lost) == ("failed", "lost"), timeout=40, what="reconcile_lost")
        wait_for(
            lambda: re.search(r"Task django_taskqueue\.report\[[^\]]+\] succeeded", worker.log),
            timeout=40,
            what="the report preset to run",
        )
        beat_log = beat.log
    for name in ("cleanup", "mark_stale", "reconcile_lost", "report"):
        assert f"Sending due task django_taskqueue.{name}" in beat_log
    assert TaskLog.objects.filter(pk=recent.pk).exists()
    assert stuck.events.filter(event_type="stale").exists()
    assert lost.events.get(event_type="stale").metadata["error_code"] == "lost"


def test_a_task_whose_worker_was_killed_is_failed_by_the_preset(
    transactional_db: Any, celery_app: Celery, tmp_path: Path
) -> None:
    from tests.tasks import stuck_sleeper

    with worker_process(tmp_path, concurrency=1) as first:
        result = stuck_sleeper.delay(60)
        log = wait_for(
            lambda: TaskLog.objects.filter(celery_task_id=result.id, status="processing").first(),
            what="the task to start",
        )
        assert first.child_pids()
        first.kill_all()
    time.sleep(1.5)  # stale_after = 1 s
    assert _status(log) == ("processing", "")  # nothing else noticed: the worker is gone

    with worker_process(tmp_path, concurrency=1):
        outcome = celery_app.send_task("django_taskqueue.mark_stale").get(timeout=30)

    assert outcome["failed"] == [result.id]
    assert _status(log) == ("failed", "worker_lost")
    event = log.events.get(event_type="stale")
    assert event.metadata["error_code"] == "worker_lost"
    assert event.metadata["worker"] == first.hostname


def test_an_idempotent_task_whose_worker_was_killed_is_requeued_and_finishes(
    transactional_db: Any, celery_app: Celery, tmp_path: Path
) -> None:
    from tests.tasks import idempotent_sleeper

    with worker_process(tmp_path, concurrency=1) as first:
        result = idempotent_sleeper.delay(60)
        log = wait_for(
            lambda: TaskLog.objects.filter(celery_task_id=result.id, status="processing").first(),
            what="the task to start",
        )
        first.kill_all()
    time.sleep(1.5)

    with worker_process(tmp_path, concurrency=1):
        outcome = celery_app.send_task("django_taskqueue.mark_stale").get(timeout=30)
        assert outcome["requeued"] == [result.id]
        wait_for(lambda: _status(log)[0] == "completed", timeout=30, what="the second attempt")

    log.refresh_from_db()
    assert log.celery_task_id == result.id
    assert log.attempt == 1
    assert log.result == 1
    kinds = factories.events(log)
    assert kinds[kinds.index("requeued") :] == ["requeued", "started", "completed"]


_DIE_HOLDING = """
import os, sys
from kombu import Connection
with Connection(sys.argv[1]) as conn:
    channel = conn.channel()
    message = channel.basic_get(sys.argv[2], no_ack=False)
    assert message is not None, "nothing to fetch"
    print(message.headers["id"], flush=True)
    os._exit(0)  # like kill -9: no ack, no restore, the message stays unacknowledged
"""


def _fetched_by_a_dying_consumer(queue: str) -> str:
    """Fetch one message of ``queue`` without acknowledging it, from a process that dies."""
    import subprocess
    import sys

    from tests.live import BROKER_URL

    out = subprocess.run(
        [sys.executable, "-c", _DIE_HOLDING, BROKER_URL, queue],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def _forget_unacked(celery_app: Celery, task_id: str) -> None:
    """Drop the dead consumer's message from Redis's unacked hash (the test's own leftover)."""
    import json

    with celery_app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        with channel.conn_or_acquire() as client:
            for tag, raw in client.hscan_iter(channel.unacked_key):
                if json.loads(raw)[0]["headers"]["id"] == task_id:
                    client.hdel(channel.unacked_key, tag)
                    client.zrem(channel.unacked_index_key, tag)


def test_a_message_a_dead_worker_fetched_is_not_called_lost(
    live_worker: Any, celery_app: Celery
) -> None:
    """Redis keeps it in its unacked hash until the visibility timeout: it is not lost."""
    queue = f"tq-unacked-{uuid.uuid4().hex[:8]}"  # no worker consumes it: nothing restores it early
    log = factories.task(created_at=factories.ago(days=2), queue=queue)
    celery_app.send_task("tests.add", args=(1, 2), queue=queue, task_id=log.celery_task_id)
    assert _fetched_by_a_dying_consumer(queue) == log.celery_task_id
    # never published: really lost
    gone = factories.task(created_at=factories.ago(days=2), queue=queue)
    try:
        result = housekeeping.reconcile_lost(inspect_timeout=1.0, app=celery_app)
    finally:
        _forget_unacked(celery_app, log.celery_task_id)

    assert result.skipped_reason == ""
    assert log.celery_task_id in result.waiting
    assert result.marked == [gone.celery_task_id]
    assert _status(log) == ("pending", "")
    assert _status(gone) == ("failed", "lost")


def test_a_stuck_task_whose_message_the_broker_holds_is_left_to_the_redelivery(
    celery_app: Celery, transactional_db: Any
) -> None:
    """An acks_late task of a dead worker: Redis gives its message back after the timeout."""
    queue = f"tq-unacked-{uuid.uuid4().hex[:8]}"
    held = factories.task("processing", heartbeat_at=factories.ago(hours=2), queue=queue)
    celery_app.send_task("tests.add", args=(1, 2), queue=queue, task_id=held.celery_task_id)
    assert _fetched_by_a_dying_consumer(queue) == held.celery_task_id
    # acknowledged long ago
    gone = factories.task("processing", heartbeat_at=factories.ago(hours=2), queue=queue)
    try:
        result = housekeeping.mark_stale_tasks()
    finally:
        _forget_unacked(celery_app, held.celery_task_id)

    assert result.waiting == [held.celery_task_id]
    assert result.failed == [gone.celery_task_id]
    assert _status(held) == ("processing", "")
    assert _status(gone) == ("failed", "worker_lost")
