"""Stuck tasks: detection, the fail-or-requeue policy, heartbeats, the check command."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test.utils import override_settings
from django.utils import timezone

from django_taskqueue import heartbeat, housekeeping, lifecycle
from django_taskqueue.models import TaskLog
from tests import factories
from tests.live import wait_for

# The sample tasks registered with the test project's (current) Celery app.
pytestmark = pytest.mark.usefixtures("celery_app")


@pytest.mark.django_db
def test_a_silent_running_task_is_failed_as_worker_lost_with_an_event() -> None:
    stuck = factories.task("processing", worker="gone@host", heartbeat_at=factories.ago(hours=1))
    alive = factories.task("processing", heartbeat_at=factories.ago(minutes=1))

    result = housekeeping.mark_stale_tasks()

    assert result.failed == [stuck.celery_task_id]
    stuck.refresh_from_db()
    assert stuck.status == "failed"
    assert stuck.error_code == "worker_lost"
    assert stuck.completed_at is not None
    assert "no heartbeat from gone@host" in stuck.error_message
    event = stuck.events.get(event_type="stale")
    assert event.metadata["error_code"] == "worker_lost"
    assert event.metadata["threshold_seconds"] == 900.0
    alive.refresh_from_db()
    assert alive.status == "processing"


@pytest.mark.django_db
def test_the_task_class_stale_after_wins_over_the_setting() -> None:
    # tests.stuck_sleeper has stale_after=1; tests.add goes by STALE_AFTER=900 s.
    silent = factories.ago(seconds=5)
    quick = factories.task("processing", task_name="tests.stuck_sleeper", heartbeat_at=silent)
    slow = factories.task("processing", task_name="tests.add", heartbeat_at=silent)
    assert housekeeping.mark_stale_tasks().failed == [quick.celery_task_id]
    slow.refresh_from_db()
    assert slow.status == "processing"


@pytest.mark.django_db
@override_settings(DJANGO_TASKQUEUE={"STALE_AFTER": 30})
def test_the_setting_is_read_live() -> None:
    stuck = factories.task("processing", heartbeat_at=factories.ago(seconds=60))
    assert housekeeping.mark_stale_tasks().failed == [stuck.celery_task_id]


@pytest.mark.django_db
def test_a_heartbeat_landing_after_the_query_wins() -> None:
    log = factories.task("processing", heartbeat_at=factories.ago(hours=1))
    cutoff = timezone.now() - timedelta(minutes=15)
    lifecycle.touch(pk=log.pk)  # the task shows a sign of life in between

    outcome = lifecycle.mark_stale(log.pk, cutoff=cutoff, error_message="worker lost")

    assert not outcome.applied
    log.refresh_from_db()
    assert log.status == "processing"
    assert factories.events(log)[-1] == "ignored"


@pytest.mark.django_db
def test_dry_run_finds_without_marking() -> None:
    log = factories.task("processing", heartbeat_at=factories.ago(hours=1))
    result = housekeeping.mark_stale_tasks(dry_run=True)
    assert result.found == [log.celery_task_id]
    assert result.failed == []
    log.refresh_from_db()
    assert log.status == "processing"


@pytest.mark.django_db
def test_requeue_needs_acks_late_idempotent_stored_args_and_retry_budget() -> None:
    from celery import current_app

    task = current_app.tasks["tests.idempotent_sleeper"]
    plain = current_app.tasks["tests.stuck_sleeper"]
    log = factories.task(
        "processing",
        task_name="tests.idempotent_sleeper",
        heartbeat_at=factories.ago(hours=1),
    )
    assert housekeeping.requeue_allowed(log, task)
    assert not housekeeping.requeue_allowed(log, plain)  # neither acks_late nor idempotent
    assert not housekeeping.requeue_allowed(log, None)  # not registered here
    log.args_redacted = True
    assert not housekeeping.requeue_allowed(log, task)
    log.args_redacted = False
    log.attempt = 2  # max_retries=2: the budget is spent
    assert not housekeeping.requeue_allowed(log, task)
    with override_settings(DJANGO_TASKQUEUE={"STORE_ARGS": False}):
        log.attempt = 0
        assert not housekeeping.requeue_allowed(log, task)


@pytest.mark.worker
def test_an_idempotent_acks_late_task_is_requeued_under_its_id_and_runs_again(worker: Any) -> None:
    log = factories.task(
        "processing",
        task_name="tests.idempotent_sleeper",
        heartbeat_at=factories.ago(seconds=10),
        args=[0.1],
    )

    result = housekeeping.mark_stale_tasks()

    assert result.requeued == [log.celery_task_id]
    requeued = log.events.get(event_type="requeued")
    assert requeued.metadata["attempt"] == 1
    assert requeued.metadata["error_code"] == "worker_lost"
    # The in-process worker runs the new attempt under the same Celery id and row.
    wait_for(
        lambda: TaskLog.objects.filter(pk=log.pk, status="completed").exists(),
        timeout=20,
        what="the re-queued attempt to complete",
    )
    log.refresh_from_db()
    assert log.attempt == 1
    assert log.retry_count == 1
    assert log.result == 1  # the task returns its attempt number
    kinds = factories.events(log)
    assert kinds.index("requeued") < len(kinds) - 2
    assert kinds[kinds.index("requeued") + 1 :] == ["started", "completed"]


@pytest.mark.worker
@override_settings(DJANGO_TASKQUEUE={"HEARTBEAT_INTERVAL": 0.2, "PROGRESS_MIN_INTERVAL": 0.0})
def test_a_running_task_without_progress_keeps_a_fresh_heartbeat(worker: Any) -> None:
    from tests.tasks import sleepy

    result = sleepy.delay(2.0)
    log = wait_for(
        lambda: TaskLog.objects.filter(celery_task_id=result.id, status="processing").first(),
        what="the task to start",
    )
    started = log.heartbeat_at
    wait_for(
        lambda: TaskLog.objects.get(pk=log.pk).heartbeat_at > started + timedelta(seconds=0.5),
        timeout=5,
        what="a heartbeat while the task sleeps",
    )
    # While heartbeats flow, a short threshold does not call the task stuck.
    assert housekeeping.find_stale(limit=10) == []
    result.get(timeout=10)
    wait_for(lambda: result.id not in heartbeat.running(), timeout=5, what="heartbeat stop")


@pytest.mark.django_db
def test_beat_once_touches_registered_running_tasks_only() -> None:
    log = factories.task("processing", heartbeat_at=factories.ago(hours=1))
    done = factories.task("completed", completed_at=factories.ago(days=100))
    heartbeat.start(log.celery_task_id, log.pk)
    heartbeat.start(done.celery_task_id, done.pk)
    try:
        assert heartbeat.beat_once() == 1
    finally:
        heartbeat.stop(log.celery_task_id)
        heartbeat.stop(done.celery_task_id)
    log.refresh_from_db()
    assert log.heartbeat_at is not None
    assert timezone.now() - log.heartbeat_at < timedelta(seconds=5)
    assert heartbeat.beat_once() == 0


@pytest.mark.django_db
def test_check_stuck_command_exits_non_zero_and_fixes() -> None:
    out = StringIO()
    call_command("taskqueue_check_stuck", stdout=out)
    assert "No stuck tasks." in out.getvalue()

    log = factories.task("processing", heartbeat_at=factories.ago(hours=2))
    out = StringIO()
    with pytest.raises(CommandError, match="1 stuck task") as raised:
        call_command("taskqueue_check_stuck", stdout=out)
    assert raised.value.returncode == 1
    assert log.celery_task_id in out.getvalue()
    log.refresh_from_db()
    assert log.status == "processing"

    out = StringIO()
    with pytest.raises(CommandError):
        call_command("taskqueue_check_stuck", "--fix", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["stuck"][0]["celery_task_id"] == log.celery_task_id
    assert data["fixed"]["failed"] == [log.celery_task_id]
    log.refresh_from_db()
    assert log.status == "failed"


def test_heartbeat_thread_is_per_process() -> None:
    # Started lazily; a second start in the same process reuses the thread.
    heartbeat._ensure_thread()
    first = heartbeat._thread
    heartbeat._ensure_thread()
    assert heartbeat._thread is first
    assert first is not None
    assert first.daemon
