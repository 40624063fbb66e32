"""TrackedTask run by an in-process worker on the memory:// transport."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.db import connection

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog, TaskProgress
from django_taskqueue.signals import task_status_changed
from django_taskqueue.status import TaskStatus
from tests import tasks
from tests.helpers import events, finished, make_user
from tests.live import wait_for

pytestmark = pytest.mark.worker


def test_delay_records_the_whole_life(worker: Any) -> None:
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    log = finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert (log.task_name, log.task_type) == ("tests.add", "sample")
    assert (log.args, log.kwargs, log.result) == ([2, 3], {}, 5)
    # The in-process test worker reports its host name without the node prefix.
    assert log.worker
    assert log.worker in worker.hostname
    assert log.started_at is not None
    assert log.completed_at is not None
    assert log.completed_at >= log.started_at >= log.created_at
    assert events(log) == ["created", "started", "completed"]


def test_secret_kwargs_are_redacted(worker: Any) -> None:
    result = tasks.echo.delay("x", password="hunter2", api_token="t", keep="me")
    assert result.get(timeout=10)["kwargs"]["password"] == "hunter2"  # the task got the real value
    log = finished(result.id)
    assert log.kwargs == {"password": "********", "api_token": "********", "keep": "me"}
    assert log.args_redacted


def test_submit_records_owner_tags_metadata_and_file(worker: Any, tmp_path: Path) -> None:
    user = make_user("alice")
    upload = tmp_path / "photo.jpg"
    upload.write_bytes(b"x" * 2048)
    log = tasks.echo.submit(
        args=(str(upload),),
        owner=user,
        tags=["upload"],
        metadata={"quality": "high"},
        file_path=str(upload),
        task_type="image",
    )
    assert log.status == TaskStatus.PENDING
    done = finished(log.celery_task_id)
    assert done.pk == log.pk
    assert (done.owner, done.tags, done.metadata) == (user, ["upload"], {"quality": "high"})
    assert (done.file_name, done.file_size, done.file_path) == ("photo.jpg", 2048, str(upload))
    assert done.task_type == "image"
    assert done.status == TaskStatus.COMPLETED


def test_class_based_task_is_registered_and_tracked(worker: Any) -> None:
    task = current_app.tasks["tests.import_csv"]
    assert isinstance(task, tasks.ImportCSV)
    log = task.submit(args=(4,))
    done = finished(log.celery_task_id)
    assert (done.status, done.task_type, done.result) == ("completed", "document", 4)
    assert list(done.progress_history.values_list("message", flat=True)) == [
        "row 1",
        "row 2",
        "row 3",
        "row 4",
    ]


def test_plain_send_task_is_recorded_by_the_worker(worker: Any) -> None:
    result = current_app.send_task("tests.add", args=(1, 1))
    assert result.get(timeout=10) == 2
    log = finished(result.id)
    assert events(log) == ["created", "started", "completed"]
    assert log.events.order_by("id")[0].metadata == {"source": "worker"}


def test_untracked_task_leaves_no_row(worker: Any) -> None:
    assert tasks.untracked.delay(1).get(timeout=10) == 1
    assert not TaskLog.objects.exists()


def test_tracking_can_be_switched_off(worker: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {"ENABLED": False}
    assert tasks.add.delay(1, 1).get(timeout=10) == 2
    assert not TaskLog.objects.exists()


def test_failure_records_message_code_and_traceback(worker: Any) -> None:
    result = tasks.boom.delay("kaput")
    with pytest.raises(ValueError, match="kaput"):
        result.get(timeout=10)
    log = finished(result.id)
    assert (log.status, log.error_code, log.error_message) == ("failed", "ValueError", "kaput")
    assert "raise ValueError(message)" in log.traceback
    assert events(log) == ["created", "started", "failed"]


def test_unserializable_result_is_stored_as_a_marked_repr(worker: Any) -> None:
    result = tasks.unserializable_result.delay()
    log = finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert log.result is not None
    assert log.result["type"] == "object"
    assert log.result["repr"].startswith("<object object at")


def test_retry_records_count_reason_and_eta(worker: Any) -> None:
    result = tasks.flaky.delay(2)
    assert result.get(timeout=20) == 2
    log = finished(result.id)
    assert (log.status, log.retry_count, log.attempt) == ("completed", 2, 2)
    assert events(log) == [
        "created",
        "started",
        "retried",
        "started",
        "retried",
        "started",
        "completed",
    ]
    retried = log.events.filter(event_type="retried").order_by("id")
    assert [e.metadata["attempt"] for e in retried] == [1, 2]
    assert [e.message for e in retried] == ["attempt 0 failed", "attempt 1 failed"]
    assert all(e.metadata["eta"] for e in retried)


def test_autoretry_with_backoff_ends_failed(worker: Any) -> None:
    result = tasks.autoretry.delay()
    with pytest.raises(ConnectionError):
        result.get(timeout=20)
    log = finished(result.id)
    assert (log.status, log.error_code, log.retry_count) == ("failed", "ConnectionError", 2)
    assert log.events.filter(event_type="retried").count() == 2


def test_many_progress_calls_cause_few_writes_and_the_last_value_lands(
    worker: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {"PROGRESS_MIN_INTERVAL": 0.5, "PROGRESS_HISTORY_STEP": 5}
    result = tasks.progress.delay(5000, 0, "item {i}")
    assert result.get(timeout=30) == 5000
    log = finished(result.id)
    history = list(log.progress_history.order_by("id"))
    assert 1 <= len(history) <= 5
    assert (history[-1].progress, history[-1].message) == (100, "item 5000")
    assert log.progress == 100


def test_progress_with_step_history(worker: Any) -> None:
    # The test settings write every call (interval 0): the step rule alone decides history.
    result = tasks.progress.delay(100)
    result.get(timeout=10)
    log = finished(result.id)
    history = list(log.progress_history.values_list("progress", flat=True))
    assert history == [*range(1, 101, 5), 100]


def test_bad_progress_arguments_do_not_fail_the_task(worker: Any, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="django_taskqueue"):
        result = tasks.bad_progress.delay()
        assert result.get(timeout=10) == "still fine"
    assert "Ignoring update_progress" in caplog.text


def test_cancel_stops_a_running_task_at_its_next_check(worker: Any) -> None:
    result = tasks.wait_for_cancel.delay(10)
    log = wait_for(
        lambda: TaskLog.objects.filter(celery_task_id=result.id, status="processing").first()
    )
    lifecycle.cancel(log, reason="user cancelled")
    done = finished(result.id)
    assert done.status == TaskStatus.CANCELLED
    assert done.result is None
    wait_for(
        lambda: done.events.filter(event_type="revoked", message__contains="cancel check").exists()
    )
    assert "completed" not in events(done)


def test_cancel_before_start_is_never_run(celery_app: Any, transactional_db: Any) -> None:
    from celery.contrib.testing.worker import start_worker

    marker = "never-" + str(time.time())
    result = tasks.echo.delay(marker)
    log = TaskLog.objects.get(celery_task_id=result.id)
    # No worker is up: the revoke reaches nobody; the record alone must stop the run.
    lifecycle.cancel(log, reason="changed my mind")
    with start_worker(celery_app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
        wait_for(lambda: log.events.filter(event_type="ignored").exists(), what="the skip")
    log.refresh_from_db()
    assert log.status == TaskStatus.CANCELLED
    assert log.started_at is None
    assert log.result is None
    assert events(log) == ["created", "cancelled", "ignored"]


def test_a_task_marked_lost_whose_message_comes_back_runs_and_is_recorded(
    celery_app: Any, transactional_db: Any
) -> None:
    from datetime import timedelta

    from celery.contrib.testing.worker import start_worker
    from django.utils import timezone

    result = tasks.add.delay(20, 22)
    log = TaskLog.objects.get(celery_task_id=result.id)
    # No worker is up yet: housekeeping presumes the message lost...
    assert lifecycle.mark_lost(
        log.pk, created_before=timezone.now() + timedelta(seconds=1), error_message="lost"
    ).applied
    # ...but the broker still had it, and delivers it once a worker comes.
    with start_worker(celery_app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
        assert result.get(timeout=10) == 42
        log = finished(result.id)
    assert (log.status, log.result, log.error_code) == (TaskStatus.COMPLETED, 42, "")
    assert events(log) == ["created", "stale", "reopened", "started", "completed"]


def test_revoke_of_a_waiting_task_is_recorded(worker: Any) -> None:
    result = tasks.add.apply_async((1, 2), countdown=2)
    wait_for(lambda: TaskLog.objects.filter(celery_task_id=result.id).exists())
    current_app.control.revoke(result.id)
    log = finished(result.id)
    assert log.status == TaskStatus.CANCELLED
    assert events(log)[-1] == "revoked"


def test_database_error_while_recording_does_not_fail_the_task(worker: Any, caplog: Any) -> None:
    # A real database error: a trigger makes every event insert fail.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER tq_fail_events BEFORE INSERT ON django_taskqueue_taskeventlog "
            "BEGIN SELECT RAISE(ABORT, 'event table is broken'); END;"
        )
    try:
        with caplog.at_level(logging.ERROR, logger="django_taskqueue"):
            result = tasks.add.delay(20, 22)
            assert result.get(timeout=10) == 42
            assert result.status == "SUCCESS"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER tq_fail_events")
    assert "could not record" in caplog.text
    assert "event table is broken" in caplog.text


def test_status_signal_reaches_receivers_in_the_worker(worker: Any) -> None:
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def receiver(task_log: TaskLog, status: str, **kwargs: Any) -> None:
        with lock:
            seen.append((task_log.celery_task_id, status))

    task_status_changed.connect(receiver)
    try:
        result = tasks.add.delay(1, 2)
        result.get(timeout=10)
        wait_for(lambda: len(seen) >= 2)
    finally:
        task_status_changed.disconnect(receiver)
    assert seen == [(result.id, "processing"), (result.id, "completed")]


def test_progress_writes_are_not_per_call(worker: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {"PROGRESS_MIN_INTERVAL": 60}
    result = tasks.progress.delay(1000)
    result.get(timeout=20)
    log = finished(result.id)
    # The first call is written, then nothing until the final flush.
    assert TaskProgress.objects.filter(task=log).count() == 2
