"""TrackedTask run by an in-process worker on the memory:// transport."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.db import connection

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import MessageRefused
from django_taskqueue.models import TaskLog, TaskProgress
from django_taskqueue.signals import task_status_changed
from django_taskqueue.status import TaskStatus
from tests import factories, tasks
from tests.live import wait_finished, wait_for

pytestmark = pytest.mark.worker

# Two tests break the database with SQLite triggers; on PostgreSQL (tox -e pgbouncer runs
# this module there too) tests/integration/test_database_faults.py does the same.
sqlite_triggers = pytest.mark.skipif(
    os.environ.get("TASKQUEUE_TEST_DB") == "postgres", reason="SQLite triggers"
)


def test_delay_records_the_whole_life(worker: Any) -> None:
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=10) == 5
    log = wait_finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert (log.task_name, log.task_type) == ("tests.add", "sample")
    assert (log.args, log.kwargs, log.result) == ([2, 3], {}, 5)
    # The in-process test worker reports its host name without the node prefix.
    assert log.worker
    assert log.worker in worker.hostname
    assert log.started_at is not None
    assert log.completed_at is not None
    assert log.completed_at >= log.started_at >= log.created_at
    assert factories.events(log) == ["created", "started", "completed"]


def test_secret_kwargs_are_redacted(worker: Any) -> None:
    result = tasks.echo.delay("x", password="hunter2", api_token="t", keep="me")
    assert result.get(timeout=10)["kwargs"]["password"] == "hunter2"  # the task got the real value
    log = wait_finished(result.id)
    assert log.kwargs == {"password": "********", "api_token": "********", "keep": "me"}
    assert log.args_redacted


def test_submit_records_owner_tags_metadata_and_file(worker: Any, tmp_path: Path) -> None:
    user = factories.user("alice")
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
    done = wait_finished(log.celery_task_id)
    assert done.pk == log.pk
    assert (done.owner, done.tags, done.metadata) == (user, ["upload"], {"quality": "high"})
    assert (done.file_name, done.file_size, done.file_path) == ("photo.jpg", 2048, str(upload))
    assert done.task_type == "image"
    assert done.status == TaskStatus.COMPLETED


def test_class_based_task_is_registered_and_tracked(worker: Any) -> None:
    task = current_app.tasks["tests.import_csv"]
    assert isinstance(task, tasks.ImportCSV)
    log = task.submit(args=(4,))
    done = wait_finished(log.celery_task_id)
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
    log = wait_finished(result.id)
    assert factories.events(log) == ["created", "started", "completed"]
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
    log = wait_finished(result.id)
    assert (log.status, log.error_code, log.error_message) == ("failed", "ValueError", "kaput")
    assert "raise ValueError(message)" in log.traceback
    assert factories.events(log) == ["created", "started", "failed"]


def test_unserializable_result_is_stored_as_a_marked_repr(worker: Any) -> None:
    result = tasks.unserializable_result.delay()
    log = wait_finished(result.id)
    assert log.status == TaskStatus.COMPLETED
    assert log.result is not None
    assert log.result["type"] == "object"
    assert log.result["repr"].startswith("<object object at")


def test_retry_records_count_reason_and_eta(worker: Any) -> None:
    result = tasks.flaky.delay(2)
    assert result.get(timeout=20) == 2
    log = wait_finished(result.id)
    assert (log.status, log.retry_count, log.attempt) == ("completed", 2, 2)
    assert factories.events(log) == [
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
    log = wait_finished(result.id)
    assert (log.status, log.error_code, log.retry_count) == ("failed", "ConnectionError", 2)
    assert log.events.filter(event_type="retried").count() == 2


def test_many_progress_calls_cause_few_writes_and_the_last_value_lands(
    worker: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {"PROGRESS_MIN_INTERVAL": 0.5, "PROGRESS_HISTORY_STEP": 5}
    result = tasks.progress.delay(5000, 0, "item {i}")
    assert result.get(timeout=30) == 5000
    log = wait_finished(result.id)
    history = list(log.progress_history.order_by("id"))
    assert 1 <= len(history) <= 5
    assert (history[-1].progress, history[-1].message) == (100, "item 5000")
    assert log.progress == 100


def test_progress_with_step_history(worker: Any) -> None:
    # The test settings write every call (interval 0): the step rule alone decides history.
    result = tasks.progress.delay(100)
    result.get(timeout=10)
    log = wait_finished(result.id)
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
    actions.cancel(log, reason="user cancelled")
    done = wait_finished(result.id)
    assert done.status == TaskStatus.CANCELLED
    assert done.result is None
    wait_for(
        lambda: done.events.filter(event_type="revoked", message__contains="cancel check").exists()
    )
    assert "completed" not in factories.events(done)


def test_cancel_before_start_is_never_run(celery_app: Any, transactional_db: Any) -> None:
    from celery.contrib.testing.worker import start_worker

    marker = "never-" + str(time.time())
    result = tasks.echo.delay(marker)
    log = TaskLog.objects.get(celery_task_id=result.id)
    # No worker is up: the revoke reaches nobody; the record alone must stop the run.
    actions.cancel(log, reason="changed my mind")
    with start_worker(celery_app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
        wait_for(lambda: log.events.filter(event_type="revoked").exists(), what="the revoke")
        # Revoked the way Celery revokes: a caller waiting on the result is answered.
        assert str(result.state) == "REVOKED"
    log.refresh_from_db()
    assert log.status == TaskStatus.CANCELLED
    assert log.started_at is None
    assert log.result is None
    assert factories.events(log) == ["created", "cancelled", "ignored", "revoked"]


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
        # The row is final (lost) before the worker's marks land: wait for them.
        rows = TaskLog.objects.filter(pk=log.pk, status=TaskStatus.COMPLETED)
        wait_for(rows.exists, what="the worker's end, recorded after the presumption")
        log = wait_finished(result.id)
    assert (log.status, log.result, log.error_code) == (TaskStatus.COMPLETED, 42, "")
    assert factories.events(log) == ["created", "stale", "reopened", "started", "completed"]


def test_revoke_of_a_waiting_task_is_recorded(worker: Any) -> None:
    result = tasks.add.apply_async((1, 2), countdown=2)
    wait_for(lambda: TaskLog.objects.filter(celery_task_id=result.id).exists())
    current_app.control.revoke(result.id)
    log = wait_finished(result.id)
    assert log.status == TaskStatus.CANCELLED
    assert factories.events(log)[-1] == "revoked"


@sqlite_triggers
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


@sqlite_triggers
def test_an_outage_is_logged_once_per_kind_with_a_summary(
    worker: Any, settings: Any, caplog: Any
) -> None:
    """A write that fails a hundred times: one line and a summary, not a traceback per call."""
    # Every progress write gets a history row, and every history row fails.
    settings.DJANGO_TASKQUEUE = {"PROGRESS_MIN_INTERVAL": 0, "PROGRESS_HISTORY_STEP": 0.001}
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER tq_fail_progress BEFORE INSERT ON django_taskqueue_taskprogress "
            "BEGIN SELECT RAISE(ABORT, 'progress table is broken'); END;"
        )
    try:
        with caplog.at_level(logging.WARNING, logger="django_taskqueue"):
            result = tasks.progress.delay(100)
            assert result.get(timeout=30) == 100
            # The end writes no progress row: it records, and ends the outage.
            assert wait_finished(result.id).status == TaskStatus.COMPLETED
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER tq_fail_progress")
    records = [r for r in caplog.records if r.name == "django_taskqueue"]
    failures = [r.getMessage() for r in records if "could not record" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].startswith(
        f"django_taskqueue could not record progress for task {result.id}"
    )
    assert "progress table is broken" in failures[0]
    assert sum(r.exc_info is not None for r in records) == 1
    summaries = [r.getMessage() for r in records if "recovered" in r.getMessage()]
    assert len(summaries) == 1
    assert "100 writes failed: 100 progress (99 repeats not logged)" in summaries[0]


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
    log = wait_finished(result.id)
    # The first call is written, then nothing until the final flush.
    assert TaskProgress.objects.filter(task=log).count() == 2


# --- what a tracked task refuses to publish (poison messages) ---------------------------


@pytest.fixture
def published(celery_app: Any) -> Iterator[list[str]]:
    """The Celery ids of the messages published meanwhile (Celery's ``before_task_publish``).

    Nothing consumes them here: the queue is purged afterwards, so that no
    later test's worker runs them.
    """
    from celery.signals import before_task_publish

    sent: list[str] = []

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        sent.append(headers["id"])

    before_task_publish.connect(receiver, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(receiver)
        celery_app.control.purge()


def refused(call: Any, code: str) -> MessageRefused:
    with pytest.raises(MessageRefused) as caught:
        call()
    assert caught.value.code == code, caught.value.messages
    return caught.value


@pytest.mark.django_db
def test_deep_arguments_are_refused_before_anything_is_recorded_or_published(
    published: list[str],
) -> None:
    # The worker's main process pickles every message for its pool, recursively:
    # nested a few hundred levels deep, it died (see tests/integration/test_poison.py).
    for call in (
        lambda: tasks.echo.delay(tasks.nested(65)),
        lambda: tasks.echo.apply_async(kwargs={"x": tasks.nested(300)}),
        lambda: tasks.echo.delay([tasks.nested(100_000)]),  # json.dumps itself recurses out
        lambda: tasks.echo.submit(kwargs={"x": tasks.nested(900)}, owner=None),
    ):
        error = refused(call, "too_deep")
        assert "the limit is 64 (MESSAGE_MAX_DEPTH)" in error.messages[0]
    assert not TaskLog.objects.exists()
    assert published == []
    # The limit itself is allowed.
    result = tasks.echo.delay(tasks.nested(64))
    assert published == [result.id]
    assert TaskLog.objects.filter(celery_task_id=result.id).exists()


@pytest.mark.django_db
def test_the_depth_and_size_limits_are_settings(published: list[str], settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "MESSAGE_MAX_DEPTH": 3,
        "MESSAGE_MAX_BYTES": 2048,
    }
    refused(lambda: tasks.echo.delay(x=[[[{"a": 1}]]]), "too_deep")
    error = refused(lambda: tasks.echo.delay("x" * 3000), "too_large")
    assert "the limit is 2048 (MESSAGE_MAX_BYTES)" in error.messages[0]
    assert not TaskLog.objects.exists()
    assert published == []
    tasks.echo.delay(x=[[1]], y="x" * 1000)
    assert len(published) == 1


@pytest.mark.django_db
def test_a_huge_message_is_refused_by_default(published: list[str]) -> None:
    error = refused(lambda: tasks.echo.delay("x" * 2**20), "too_large")
    assert "the limit is 1048576 (MESSAGE_MAX_BYTES)" in error.messages[0]
    assert (TaskLog.objects.count(), published) == (0, [])


@pytest.mark.django_db
def test_arguments_the_serializer_cannot_encode_leave_no_row(published: list[str]) -> None:
    # Before, the row was written, then publishing raised EncodeError and the
    # row stayed behind as failed (publish_failed).
    error = refused(lambda: tasks.echo.delay(object()), "unserializable")
    assert "with 'json'" in error.messages[0]
    refused(lambda: tasks.pickled.delay(threading.Lock()), "unserializable")
    assert (TaskLog.objects.count(), published) == (0, [])


class _Node:
    def __init__(self, child: Any) -> None:
        self.child = child


@pytest.mark.django_db
def test_pickled_objects_are_measured_through_their_state(published: list[str]) -> None:
    # pickle recurses into each object's __dict__: two levels per object.
    chain: Any = None
    for _ in range(40):
        chain = _Node(chain)
    refused(lambda: tasks.pickled.delay(chain), "too_deep")
    assert (TaskLog.objects.count(), published) == (0, [])
    tasks.pickled.delay(_Node(_Node(None)))
    assert len(published) == 1


@pytest.mark.django_db
def test_arguments_the_task_cannot_take_leave_no_row(published: list[str]) -> None:
    # Celery checks decorated tasks' arguments when publishing, which was after
    # the row was written (left failed, publish_failed); a class-based task was
    # not checked at all and failed on the worker.
    for call, message in (
        (lambda: tasks.add.delay(1, 2, quality="high"), "unexpected keyword argument 'quality'"),
        (lambda: tasks.add.delay(1), "missing 1 required positional argument: 'y'"),
        (lambda: tasks.process_file.delay("/f", file_path="/g"), "multiple values"),
        (lambda: tasks.process_file.apply_async(("/f",), {"self": 1}), "multiple values"),
        (lambda: tasks.ImportCSV().delay(bogus=1), "unexpected keyword argument 'bogus'"),
        (lambda: tasks.ImportCSV().apply_async(kwargs={"self": 1}), "multiple values"),
        (lambda: tasks.add.submit(args=(1,), kwargs={"z": 3}), "unexpected keyword"),
    ):
        error = refused(call, "arguments")
        assert message in error.messages[0], error.messages
    assert (TaskLog.objects.count(), published) == (0, [])
    tasks.process_file.delay("/f", quality="high")
    tasks.ImportCSV().delay(rows=2)
    assert len(published) == 2


@pytest.mark.django_db
def test_submit_refuses_metadata_and_tags_no_database_can_store(published: list[str]) -> None:
    # PostgreSQL refuses NUL in text and jsonb, and a lone surrogate is not
    # UTF-8: the row could not be written (a DataError), or not read back.
    for kwargs, where in (
        ({"metadata": {"a": ["ok", "b\x00"]}}, "metadata['a'][1]"),
        ({"metadata": {"k\x00": 1}}, "key 'k\\x00'"),
        ({"metadata": {"x": {"y": "\ud800"}}}, "U+D800"),
        ({"tags": ["fine", "\udfff"]}, "tags[1]"),
    ):
        error = refused(lambda kwargs=kwargs: tasks.add.submit(args=(1, 2), **kwargs), "text")
        assert where in error.messages[0], error.messages
    assert (TaskLog.objects.count(), published) == (0, [])


def test_a_result_nested_thousands_deep_is_recorded(worker: Any) -> None:
    # Encoding it raised RecursionError out of on_success: the task stayed
    # "processing" for ever. Without a result backend (ignore_result) nothing
    # else fails it.
    log = wait_finished(tasks.deep_result.apply_async((5000,), ignore_result=True).id, timeout=15)
    assert log.status == TaskStatus.COMPLETED
    assert log.result is not None
    assert log.result["truncated"] is True
    assert log.result["repr"].startswith("{'a': {'a': {")


def test_a_deep_result_is_stored_as_a_marked_repr(worker: Any) -> None:
    # 100 levels encode fine, but the admin's pretty-printing (and other readers)
    # recurse once per level: a stored result is at most 32 levels deep.
    log = wait_finished(tasks.deep_result.delay(100).id)
    assert log.status == TaskStatus.COMPLETED
    assert log.result is not None
    assert log.result["truncated"] is True
    shallow = wait_finished(tasks.deep_result.delay(32).id)
    assert shallow.result == tasks.nested(32)
