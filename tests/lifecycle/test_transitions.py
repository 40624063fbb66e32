"""Every status change (lifecycle/transitions.py): each transition, each refusal, no worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog, TaskProgress
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.status import TaskStatus, can_move
from tests import factories
from tests.helpers import started

# The lifecycle contract: on SQLite here, and again on PostgreSQL in the integration
# tier and behind PgBouncer (tox -e integration, tox -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


class TestStarted:
    def test_pending_to_processing(self) -> None:
        log = factories.task()
        outcome = started(log)
        assert (outcome.applied, outcome.status, outcome.pk) == (
            True,
            TaskStatus.PROCESSING,
            log.pk,
        )
        assert (outcome.parent_known, outcome.parent_id) == (True, None)
        log.refresh_from_db()
        assert log.status == TaskStatus.PROCESSING
        assert log.worker == "w1@host"
        assert log.started_at is not None
        assert log.heartbeat_at is not None
        assert factories.events(log) == ["created", "started"]

    def test_worker_creates_the_row_when_the_producer_did_not(self) -> None:
        outcome = lifecycle.mark_started(
            "sent-untracked",
            worker="w1",
            defaults={"task_name": "tests.add", "args": [1, 2], "kwargs": {"token": "x"}},
        )
        assert outcome.applied
        log = TaskLog.objects.get(celery_task_id="sent-untracked")
        assert log.status == TaskStatus.PROCESSING
        assert log.args == [1, 2]
        assert log.kwargs == {"token": "********"}
        assert factories.events(log) == ["created", "started"]
        assert log.events.order_by("id")[0].metadata == {"source": "worker"}

    def test_second_delivery_is_recorded_as_a_second_start(self) -> None:
        # The same message delivered twice runs twice: the record says so, never "ignored".
        log = factories.task()
        started(log)
        first_start = TaskLog.objects.get(pk=log.pk).started_at
        outcome = started(log, worker="w2@host")
        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        assert log.started_at == first_start
        assert log.worker == "w2@host"
        assert factories.events(log) == ["created", "started", "started"]
        again = log.events.order_by("-id")[0]
        assert again.metadata["again"] is True
        assert again.metadata["previous_worker"] == "w1@host"
        assert again.metadata["previous_status"] == "processing"
        assert again.message.endswith("again")

    def test_a_run_after_completed_reopens_the_task_and_keeps_the_outcome(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_completed(log.celery_task_id, result=3)
        outcome = started(log)
        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        assert (log.status, log.result, log.completed_at, log.progress) == (
            TaskStatus.PROCESSING,
            None,
            None,
            0,
        )
        assert factories.events(log) == ["created", "started", "completed", "reopened", "started"]
        reopened = log.events.get(event_type="reopened")
        assert reopened.metadata["previous_status"] == "completed"
        assert reopened.metadata["previous_completed_at"]
        assert lifecycle.mark_completed(log.celery_task_id, result=4).applied
        log.refresh_from_db()
        assert (log.status, log.result) == (TaskStatus.COMPLETED, 4)

    def test_a_late_start_of_an_older_attempt_is_recorded_and_keeps_the_newest_attempt(
        self,
    ) -> None:
        log = factories.task()
        started(log, attempt=0)
        lifecycle.mark_retrying(log.celery_task_id, next_attempt=1, reason="flaky")
        # attempt 0's message redelivered: its body runs, so its start is on file.
        outcome = started(log, attempt=0)
        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        assert log.attempt == 1
        assert factories.events(log)[-1] == "started"
        assert log.events.order_by("-id")[0].metadata["again"] is True
        assert started(log, attempt=1).applied
        log.refresh_from_db()
        assert (log.status, log.attempt, log.retry_count) == (TaskStatus.PROCESSING, 1, 1)

    def test_started_of_cancelled_task_reports_cancelled(self) -> None:
        log = factories.task()
        actions.cancel(log, reason="no longer needed", revoke=False)
        outcome = started(log)
        assert (outcome.applied, outcome.status) == (False, TaskStatus.CANCELLED)


class TestEnd:
    def test_completed(self) -> None:
        log = factories.task()
        started(log)
        outcome = lifecycle.mark_completed(log.celery_task_id, result={"width": 800})
        assert outcome.applied
        log.refresh_from_db()
        assert log.status == TaskStatus.COMPLETED
        assert log.result == {"width": 800}
        assert log.progress == 100
        assert log.completed_at is not None
        assert log.elapsed_time is not None
        assert log.elapsed_time >= 0

    def test_second_completion_is_ignored(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_completed(log.celery_task_id, result=1)
        done_at = TaskLog.objects.get(pk=log.pk).completed_at
        outcome = lifecycle.mark_completed(log.celery_task_id, result=2)
        assert not outcome.applied
        log.refresh_from_db()
        assert (log.result, log.completed_at) == (1, done_at)

    def test_failed_records_the_error(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_failed(
            log.celery_task_id,
            error_message="disk full",
            error_code="OSError",
            traceback="Traceback...\nOSError: disk full",
        )
        log.refresh_from_db()
        assert (log.status, log.error_code, log.error_message) == ("failed", "OSError", "disk full")
        assert "OSError" in log.traceback
        assert log.is_retryable
        assert not log.is_cancellable

    def test_failure_after_completion_is_ignored(self) -> None:
        log = factories.task()
        lifecycle.mark_completed(log.celery_task_id, result=1)
        assert not lifecycle.mark_failed(log.celery_task_id, error_message="late").applied
        assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.COMPLETED

    def test_final_progress_lands_with_the_final_status(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_completed(
            log.celery_task_id, result=None, progress=ProgressWrite(97, "last page", {"p": 9}, True)
        )
        log.refresh_from_db()
        last = log.progress_history.order_by("-id")[0]
        assert (last.progress, last.message, last.data) == (97, "last page", {"p": 9})
        assert log.progress_message == "last page"
        assert factories.events(log) == ["created", "started", "progress", "completed"]

    def test_unknown_task_is_no_row(self) -> None:
        assert lifecycle.mark_completed("nope", result=1) == lifecycle.Outcome(False, None, None)


class TestOverlappingRuns:
    """One message delivered twice while its first copy runs: two runs, two ends."""

    @staticmethod
    def two_runs(log: TaskLog) -> None:
        lifecycle.mark_started(log.celery_task_id, worker="w1@host", run="first")
        lifecycle.mark_started(log.celery_task_id, worker="w2@host", run="second")

    def test_the_end_that_arrives_last_is_the_outcome_and_none_is_ignored(self) -> None:
        log = factories.task()
        self.two_runs(log)
        first = lifecycle.mark_failed(
            log.celery_task_id, error_message="boom", error_code="ValueError", run="first"
        )
        second = lifecycle.mark_completed(log.celery_task_id, result=2, run="second")
        assert first.applied
        assert second.applied
        log.refresh_from_db()
        assert (log.status, log.result, log.error_code) == ("completed", 2, "")
        trail = factories.events(log)
        assert trail == ["created", "started", "started", "failed", "reopened", "completed"]
        reopened = log.events.get(event_type="reopened").metadata
        assert (reopened["previous_status"], reopened["previous_error_code"]) == (
            "failed",
            "ValueError",
        )

    def test_a_failure_that_arrives_last_wins_over_a_success(self) -> None:
        log = factories.task()
        self.two_runs(log)
        lifecycle.mark_completed(log.celery_task_id, result=1, run="second")
        assert lifecycle.mark_failed(log.celery_task_id, error_message="late", run="first").applied
        log.refresh_from_db()
        assert (log.status, log.error_message) == ("failed", "late")

    def test_the_same_run_reporting_its_end_twice_is_ignored(self) -> None:
        log = factories.task()
        lifecycle.mark_started(log.celery_task_id, run="only")
        lifecycle.mark_completed(log.celery_task_id, result=1, run="only")
        assert not lifecycle.mark_completed(log.celery_task_id, result=2, run="only").applied
        assert TaskLog.objects.get(pk=log.pk).result == 1
        assert factories.events(log)[-1] == "ignored"

    def test_an_end_of_a_run_never_started_here_is_ignored(self) -> None:
        log = factories.task()
        lifecycle.mark_started(log.celery_task_id, run="known")
        lifecycle.mark_completed(log.celery_task_id, result=1, run="known")
        assert not lifecycle.mark_failed(log.celery_task_id, error_message="x", run="other").applied
        assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.COMPLETED

    def test_an_end_of_an_older_attempt_than_the_task_is_ignored(self) -> None:
        log = factories.task()
        lifecycle.mark_started(log.celery_task_id, attempt=0, run="old")
        lifecycle.mark_retrying(log.celery_task_id, next_attempt=1, reason="again")
        lifecycle.mark_started(log.celery_task_id, attempt=1, run="new")
        lifecycle.mark_completed(log.celery_task_id, result="new", run="new")
        assert not lifecycle.mark_completed(log.celery_task_id, result="old", run="old").applied
        assert TaskLog.objects.get(pk=log.pk).result == "new"

    def test_an_end_never_replaces_a_cancel(self) -> None:
        log = factories.task()
        self.two_runs(log)
        lifecycle.mark_cancelled(log.celery_task_id, reason="stop")
        assert not lifecycle.mark_completed(log.celery_task_id, result=1, run="first").applied
        assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.CANCELLED

    def test_an_end_without_a_run_is_ignored_as_before(self) -> None:
        log = factories.task()
        self.two_runs(log)
        lifecycle.mark_completed(log.celery_task_id, result=1, run="first")
        assert not lifecycle.mark_completed(log.celery_task_id, result=2).applied


class TestCancel:
    def test_cancel_records_at_once(self) -> None:
        user = factories.user("alice")
        log = factories.task(owner=user)
        started(log)
        actions.cancel(log, reason="wrong file", user=user, revoke=False)
        assert log.status == TaskStatus.CANCELLED
        assert log.error_message == "wrong file"
        assert log.cancelled_at is not None
        assert log.completed_at == log.cancelled_at
        event = log.events.order_by("-id")[0]
        assert event.event_type == "cancelled"
        assert event.metadata["by_username"] == "alice"
        assert event.metadata["reason"] == "wrong file"

    def test_cancel_then_complete_keeps_cancelled(self) -> None:
        log = factories.task()
        started(log)
        actions.cancel(log, revoke=False)
        assert not lifecycle.mark_completed(log.celery_task_id, result=1).applied
        log.refresh_from_db()
        assert log.status == TaskStatus.CANCELLED
        assert log.result is None
        assert factories.events(log) == ["created", "started", "cancelled", "ignored"]

    def test_complete_then_cancel_is_refused(self) -> None:
        log = factories.task()
        lifecycle.mark_completed(log.celery_task_id, result=1)
        with pytest.raises(TransitionRefused, match="already completed") as info:
            actions.cancel(log, revoke=False)
        assert info.value.status == TaskStatus.COMPLETED
        assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.COMPLETED

    def test_revoke_after_cancel_adds_the_confirmation(self) -> None:
        log = factories.task()
        actions.cancel(log, revoke=False)
        outcome = lifecycle.record_revoked(log.celery_task_id, terminated=False, expired=False)
        assert outcome.status == TaskStatus.CANCELLED
        assert factories.events(log) == ["created", "cancelled", "revoked"]

    def test_revoke_without_cancel_cancels(self) -> None:
        log = factories.task()
        lifecycle.record_revoked(log.celery_task_id, terminated=True, expired=False, signum=15)
        log.refresh_from_db()
        assert log.status == TaskStatus.CANCELLED
        assert log.error_message == "terminated by a revoke"
        assert log.events.order_by("-id")[0].metadata["terminated"] is True

    def test_expired_message_fails(self) -> None:
        log = factories.task()
        lifecycle.record_revoked(log.celery_task_id, terminated=False, expired=True)
        log.refresh_from_db()
        assert (log.status, log.error_code) == (TaskStatus.FAILED, "expired")


class TestRetrying:
    def test_retry_counts_and_keeps_the_reason_and_eta(self) -> None:
        log = factories.task()
        started(log)
        eta = timezone.now() + timedelta(seconds=30)
        lifecycle.mark_retrying(
            log.celery_task_id, next_attempt=1, reason="timeout", error_code="TimeoutError", eta=eta
        )
        log.refresh_from_db()
        assert (log.status, log.retry_count, log.attempt) == (TaskStatus.RETRYING, 1, 1)
        assert log.next_retry_at == eta
        assert (log.error_message, log.error_code) == ("timeout", "TimeoutError")
        event = log.events.order_by("-id")[0]
        assert event.event_type == "retried"
        assert event.metadata["attempt"] == 1

    def test_the_same_retry_recorded_twice_counts_once(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_retrying(log.celery_task_id, next_attempt=1, reason="x")
        started(log, attempt=1)
        # A late duplicate of attempt 0's retry must not move attempt 1 back.
        assert not lifecycle.mark_retrying(log.celery_task_id, next_attempt=1, reason="x").applied
        log.refresh_from_db()
        assert (log.status, log.retry_count) == (TaskStatus.PROCESSING, 1)


class TestProgress:
    def test_progress_updates_and_history(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.record_progress(ProgressWrite(40, "resized", {"w": 1}, True), pk=log.pk)
        lifecycle.record_progress(ProgressWrite(41, "resized", None, False), pk=log.pk)
        log.refresh_from_db()
        assert (log.progress, log.progress_message) == (41, "resized")
        assert list(log.progress_history.values_list("progress", flat=True)) == [40]

    def test_progress_of_cancelled_task_reports_cancelled(self) -> None:
        log = factories.task()
        started(log)
        actions.cancel(log, revoke=False)
        outcome = lifecycle.record_progress(ProgressWrite(50, "", None, True), pk=log.pk)
        assert (outcome.applied, outcome.status) == (False, TaskStatus.CANCELLED)
        assert TaskProgress.objects.count() == 0

    def test_progress_is_constrained_to_0_100(self) -> None:
        from django.db import IntegrityError, transaction

        log = factories.task()
        with pytest.raises(IntegrityError), transaction.atomic():
            TaskLog.objects.filter(pk=log.pk).update(progress=101)


class TestPresumedFailures:
    """A failure housekeeping only presumed gives way to a worker's evidence."""

    @staticmethod
    def lost(log: TaskLog) -> None:
        outcome = lifecycle.mark_lost(
            log.pk,
            created_before=timezone.now() + timedelta(seconds=1),
            error_message="lost: nobody knows the message",
        )
        assert outcome.applied

    def test_a_delivery_reopens_a_task_marked_lost_and_it_completes(self) -> None:
        log = factories.task()
        self.lost(log)

        outcome = started(log)

        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        assert (log.status, log.error_code, log.error_message) == ("processing", "", "")
        assert log.completed_at is None
        assert factories.events(log) == ["created", "stale", "reopened", "started"]
        reopened = log.events.get(event_type="reopened")
        assert reopened.metadata["presumed_error_code"] == "lost"
        assert reopened.metadata["presumed_error_message"] == "lost: nobody knows the message"
        assert lifecycle.mark_completed(log.celery_task_id, result=3, evidence=True).applied
        log.refresh_from_db()
        assert (log.status, log.result) == (TaskStatus.COMPLETED, 3)
        assert factories.events(log)[-1] == "completed"

    def test_the_end_a_worker_reports_supersedes_worker_lost(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_stale(
            log.pk, cutoff=timezone.now() + timedelta(seconds=1), error_message="silent"
        )
        # The worker was frozen, not dead: its body returned afterwards.
        outcome = lifecycle.mark_completed(log.celery_task_id, result="late", evidence=True)
        assert (outcome.applied, outcome.status) == (True, TaskStatus.COMPLETED)
        log.refresh_from_db()
        assert (log.status, log.error_code, log.result) == ("completed", "", "late")
        assert factories.events(log) == ["created", "started", "stale", "reopened", "completed"]

    def test_a_failure_the_worker_reports_supersedes_it_too(self) -> None:
        log = factories.task()
        started(log)
        lifecycle.mark_failed(log.celery_task_id, error_message="lost", error_code="worker_lost")
        outcome = lifecycle.mark_failed(
            log.celery_task_id, error_message="boom", error_code="ValueError", evidence=True
        )
        assert outcome.applied
        log.refresh_from_db()
        assert (log.status, log.error_code, log.error_message) == ("failed", "ValueError", "boom")

    def test_without_evidence_a_presumed_failure_stays(self) -> None:
        log = factories.task()
        self.lost(log)
        assert not lifecycle.mark_completed(log.celery_task_id, result=1).applied
        assert not lifecycle.mark_failed(log.celery_task_id, error_message="again").applied
        log.refresh_from_db()
        assert (log.status, log.error_code) == ("failed", "lost")

    @pytest.mark.parametrize("code", ["ValueError", "publish_failed", "superseded", "expired"])
    def test_a_real_failure_run_again_is_reopened_as_a_new_run(self, code: str) -> None:
        log = factories.task()
        lifecycle.mark_failed(log.celery_task_id, error_message="it broke", error_code=code)
        outcome = started(log)
        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        assert (log.error_code, log.error_message) == ("", "")
        assert factories.events(log)[-2:] == ["reopened", "started"]
        reopened = log.events.get(event_type="reopened")
        assert (reopened.metadata["previous_status"], reopened.metadata["previous_error_code"]) == (
            "failed",
            code,
        )

    def test_a_task_run_again_meanwhile_still_records_the_old_message_running(
        self, celery_app: Any
    ) -> None:
        log = factories.task(task_name="tests.echo")
        self.lost(log)
        actions.rerun(TaskLog.objects.get(pk=log.pk))
        # The presumption is not superseded (the re-run is the new attempt), but
        # the old message's body does run, and the row says so.
        outcome = started(log)
        assert (outcome.applied, outcome.status) == (True, TaskStatus.PROCESSING)
        log.refresh_from_db()
        reopened = log.events.get(event_type="reopened")
        assert reopened.metadata["previous_error_code"] == "lost"

    def test_an_older_attempt_run_after_a_presumed_failure_keeps_the_newest_attempt(
        self,
    ) -> None:
        log = factories.task()
        started(log, attempt=0)
        lifecycle.mark_retrying(log.celery_task_id, next_attempt=1, reason="flaky")
        started(log, attempt=1)
        lifecycle.mark_failed(log.celery_task_id, error_message="x", error_code="worker_lost")
        assert started(log, attempt=0).applied
        log.refresh_from_db()
        assert (log.status, log.attempt) == (TaskStatus.PROCESSING, 0)
        assert started(log, attempt=1).applied
        log.refresh_from_db()
        assert log.attempt == 1

    def test_a_bulk_parent_failed_by_a_lost_child_is_reopened_and_completes(
        self, django_capture_on_commit_callbacks: Any
    ) -> None:
        parent, children = lifecycle.create_bulk(
            "tests.add", [{"file_path": "/a"}, {"file_path": "/b"}], parallel=True
        )
        first, second = children
        with django_capture_on_commit_callbacks(execute=True):
            started(first)
            lifecycle.mark_completed(first.celery_task_id, result=1)
        with django_capture_on_commit_callbacks(execute=True):
            self.lost(second)
        parent.refresh_from_db()
        assert (parent.status, parent.error_code) == ("failed", "children_failed")

        with django_capture_on_commit_callbacks(execute=True):
            started(second)
        parent.refresh_from_db()
        assert parent.status == TaskStatus.PROCESSING
        with django_capture_on_commit_callbacks(execute=True):
            lifecycle.mark_completed(second.celery_task_id, result=2, evidence=True)
        parent.refresh_from_db()
        assert parent.status == TaskStatus.COMPLETED
        assert "reopened" in factories.events(parent)

    def test_the_rule(self) -> None:
        failed, processing = TaskStatus.FAILED, TaskStatus.PROCESSING
        assert not can_move(failed, processing, error_code="lost")
        assert can_move(failed, processing, error_code="lost", evidence=True)
        assert can_move(failed, TaskStatus.COMPLETED, error_code="worker_lost", evidence=True)
        assert not can_move(failed, TaskStatus.RETRYING, error_code="lost", evidence=True)
        assert not can_move(failed, processing, error_code="ValueError", evidence=True)
        assert not can_move(TaskStatus.CANCELLED, processing, error_code="lost", evidence=True)


class TestQueue:
    def test_routed_queue_is_filled_in_at_start(self) -> None:
        log = factories.task()
        lifecycle.mark_started(log.celery_task_id, worker="w", defaults={"queue": "high"})
        assert TaskLog.objects.get(pk=log.pk).queue == "high"

    def test_named_queue_is_kept(self) -> None:
        log = factories.task(queue="low")
        lifecycle.mark_started(log.celery_task_id, worker="w", defaults={"queue": "other"})
        assert TaskLog.objects.get(pk=log.pk).queue == "low"
