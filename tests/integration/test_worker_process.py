"""TrackedTask with a real ``celery worker`` process, Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from celery import current_app
from django.db import close_old_connections, connection, transaction

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories, tasks
from tests.live import wait_finished, wait_for

pytestmark = pytest.mark.integration


def running(celery_task_id: str) -> TaskLog:
    log: TaskLog = wait_for(
        lambda: TaskLog.objects.filter(celery_task_id=celery_task_id, status="processing").first(),
        what="the task to start",
    )
    return log


def test_whole_life_on_a_real_worker(live_worker: Any) -> None:
    result = tasks.add.delay(2, 40)
    assert result.get(timeout=30) == 42
    log = wait_finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert log.worker == live_worker.hostname
    assert log.result == 42
    assert factories.events(log) == ["created", "started", "completed"]


def test_retries_with_backoff(live_worker: Any) -> None:
    result = tasks.autoretry.delay()
    log = wait_finished(result.id)
    assert (log.status, log.error_code, log.retry_count) == ("failed", "ConnectionError", 2)
    assert factories.events(log) == [
        "created",
        "started",
        "retried",
        "started",
        "retried",
        "started",
        "failed",
    ]


def test_soft_time_limit_fails_the_task(live_worker: Any) -> None:
    log = wait_finished(tasks.soft_limited.delay().id)
    assert (log.status, log.error_code) == ("failed", "SoftTimeLimitExceeded")


def test_soft_time_limit_caught_by_the_task(live_worker: Any) -> None:
    log = wait_finished(tasks.catches_soft_limit.delay().id)
    assert (log.status, log.result) == ("completed", "cleaned up")


def test_hard_time_limit_is_recorded_by_the_main_process(live_worker: Any) -> None:
    log = wait_finished(tasks.hard_limited.delay().id)
    assert (log.status, log.error_code) == ("failed", "TimeLimitExceeded")
    assert "hard time limit" in log.error_message
    assert factories.events(log) == ["created", "started", "failed"]


def test_revoke_before_start(live_worker: Any) -> None:
    result = tasks.add.apply_async((1, 1), countdown=3)
    log = wait_for(lambda: TaskLog.objects.filter(celery_task_id=result.id).first())
    actions.cancel(log, reason="not needed")
    done = wait_finished(result.id)
    assert done.status == TaskStatus.CANCELLED
    wait_for(lambda: "revoked" in factories.events(done), what="the worker's revoke confirmation")
    assert done.started_at is None
    assert "started" not in factories.events(done)


def test_cancel_a_running_cooperative_task(live_worker: Any) -> None:
    result = tasks.wait_for_cancel.delay(20)
    log = running(result.id)
    actions.cancel(log, reason="stop")
    done = wait_finished(result.id)
    assert done.status == TaskStatus.CANCELLED
    wait_for(lambda: done.events.filter(message__contains="cancel check").exists())
    assert done.result is None


def test_terminate_a_running_task(live_worker: Any) -> None:
    result = tasks.sleepy.delay(30)
    log = running(result.id)
    actions.cancel(log, reason="kill it", terminate=True)
    wait_for(lambda: "revoked" in factories.events(log), what="the terminate confirmation")
    log.refresh_from_db()
    assert log.status == TaskStatus.CANCELLED
    assert log.events.filter(event_type="revoked").get().metadata["terminated"] is True


def test_worker_lost_marks_failed(live_worker: Any) -> None:
    result = tasks.sleepy.delay(30)
    running(result.id)
    for pid in live_worker.child_pids():
        os.kill(pid, signal.SIGKILL)
    done = wait_finished(result.id)
    assert (done.status, done.error_code) == ("failed", "worker_lost")


def test_producer_transaction_not_yet_committed(live_worker: Any) -> None:
    # The worker receives the message before the producer's transaction commits:
    # its insert waits on the unique celery_task_id, then it applies the transition.
    with transaction.atomic():
        result = tasks.add.delay(3, 4)
        time.sleep(1.0)
    log = wait_finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert factories.events(log) == ["created", "started", "completed"]


def test_database_error_while_recording_does_not_fail_the_task(live_worker: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION tq_fail() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'event table is broken'; END $$ LANGUAGE plpgsql"
        )
        cursor.execute(
            "CREATE TRIGGER tq_fail_events BEFORE INSERT ON django_taskqueue_taskeventlog "
            "FOR EACH ROW EXECUTE FUNCTION tq_fail()"
        )
    try:
        result = tasks.add.delay(20, 22)
        assert result.get(timeout=30) == 42
        assert result.status == "SUCCESS"
        # The worker's marks are written just after the task (by its recorder thread):
        # the table stays broken until their failure is logged.
        wait_for(lambda: "could not record" in live_worker.log, what="the logged recording error")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER tq_fail_events ON django_taskqueue_taskeventlog")
            cursor.execute("DROP FUNCTION tq_fail()")


def test_cancel_racing_completion_ends_in_one_state(live_worker: Any) -> None:
    """Threads on PostgreSQL: one final state per pair, both attempts on file."""
    outcomes: dict[str, list[str]] = {}
    for _ in range(25):
        log = factories.task()
        lifecycle.mark_started(log.celery_task_id, worker="w")
        barrier = threading.Barrier(2)
        applied: list[str] = []

        def complete(
            log: TaskLog = log, barrier: threading.Barrier = barrier, applied: list[str] = applied
        ) -> None:
            barrier.wait()
            try:
                if lifecycle.mark_completed(log.celery_task_id, result=1).applied:
                    applied.append("completed")
            finally:
                close_old_connections()

        def cancel(
            log: TaskLog = log, barrier: threading.Barrier = barrier, applied: list[str] = applied
        ) -> None:
            barrier.wait()
            try:
                actions.cancel(TaskLog.objects.get(pk=log.pk), revoke=False)
                applied.append("cancelled")
            except TransitionRefused:
                pass
            finally:
                close_old_connections()

        threads = [threading.Thread(target=complete), threading.Thread(target=cancel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        log.refresh_from_db()
        assert applied == [log.status], (applied, log.status)
        trail = factories.events(log)
        assert trail[:2] == ["created", "started"]
        assert sorted(trail[2:]) in (["completed", "ignored"], ["cancelled", "ignored"])
        outcomes.setdefault(log.status, []).append(log.celery_task_id)
    assert set(outcomes) <= {"completed", "cancelled"}


def test_a_second_delivery_of_a_finished_task_runs_and_is_recorded(live_worker: Any) -> None:
    result = tasks.add.delay(5, 5)
    log = wait_finished(result.id)
    # The same message again (a redelivery after a lost ack, a re-applied signature):
    # Celery runs it, so the record shows a second run, never "ignored".
    again = current_app.send_task("tests.add", args=(5, 5), task_id=result.id)
    wait_for(lambda: factories.events(log).count("completed") == 2, what="the second run to end")
    log.refresh_from_db()
    assert (log.status, log.result) == (TaskStatus.COMPLETED, 10)
    assert factories.events(log) == [
        "created",
        "started",
        "completed",
        "reopened",
        "started",
        "completed",
    ]
    assert again.id == result.id


def test_soft_time_limit_inside_a_progress_write_stops_the_task(live_worker: Any) -> None:
    log = wait_finished(tasks.busy_progress.delay(3.0).id)
    assert (log.status, log.error_code) == ("failed", "SoftTimeLimitExceeded")
    assert log.result is None
