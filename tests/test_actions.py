"""The operations that reach Celery (django_taskqueue.actions): what they return, and re-runs.

The re-run classes are marked ``backends``, the lifecycle contract (the re-run's row is
written under a lock on its lineage, ``lifecycle.create_rerun``): on SQLite here, and again
on PostgreSQL in the integration tier and behind PgBouncer (tox -e integration, tox -e
pgbouncer).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories
from tests.helpers import SIDE_QUEUE, published, purge_queue, started

pytestmark = pytest.mark.django_db


def test_cancel_returns_the_bulk_children_it_cancelled() -> None:
    parent, children = lifecycle.create_bulk(
        "tests.add", [{"file_path": f"/data/{n}.csv"} for n in range(3)]
    )
    lifecycle.mark_completed(children[0].celery_task_id, result=1)

    cancelled = actions.cancel(parent, reason="enough", revoke=False)

    assert cancelled.outcome.applied
    assert cancelled.outcome.status == TaskStatus.CANCELLED
    assert sorted(cancelled.children) == sorted(c.celery_task_id for c in children[1:])
    assert parent.status == TaskStatus.CANCELLED  # refreshed from the row
    statuses = TaskLog.objects.filter(parent=parent).values_list("status", flat=True)
    assert sorted(statuses) == ["cancelled", "cancelled", "completed"]


def test_cancel_of_a_finished_task_is_refused_and_writes_nothing_more() -> None:
    log = factories.task()
    lifecycle.mark_completed(log.celery_task_id, result=1)

    with pytest.raises(TransitionRefused) as refused:
        actions.cancel(log, revoke=False)

    assert refused.value.status == TaskStatus.COMPLETED
    assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.COMPLETED


def test_start_says_when_an_idempotency_key_replays_an_earlier_start(celery_app: Any) -> None:
    from tests.tasks import echo

    file = {"file_path": "/data/a.csv", "file_name": "a.csv", "file_size": 3}
    first = actions.start(
        echo, file, kwargs={"x": 1}, celery_task_id="first-id", idempotency_key="k"
    )
    again = actions.start(
        echo, file, kwargs={"x": 1}, celery_task_id="second-id", idempotency_key="k"
    )

    assert not first.replayed
    assert first.task_log.celery_task_id == "first-id"
    assert first.task_log.metadata == {"x": 1}
    assert again.replayed
    assert again.task_log.pk == first.task_log.pk
    assert not TaskLog.objects.filter(celery_task_id="second-id").exists()


# --- running again (actions.rerun): one active run per lineage, published alike -------------------


@pytest.mark.backends
class TestRerun:
    def test_failed_task_runs_again_with_the_same_arguments(self, celery_app: Any) -> None:
        user = factories.user("bob")
        log = factories.task(
            task_name="tests.echo", args=[1], kwargs={"x": 2}, owner=user, tags=["t"]
        )
        lifecycle.mark_failed(log.celery_task_id, error_message="boom", error_code="ValueError")
        new = actions.rerun(TaskLog.objects.get(pk=log.pk), user=user)
        assert new.pk != log.pk
        assert new.celery_task_id != log.celery_task_id
        new.refresh_from_db()
        assert new.status == TaskStatus.RETRYING
        assert (new.args, new.kwargs, new.owner, new.tags) == ([1], {"x": 2}, user, ["t"])
        assert new.retry_of_id == log.pk
        assert new.retry_count == 1
        assert factories.events(log)[-1] == "rerun"
        assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.FAILED

    def test_completed_task_is_refused(self, celery_app: Any) -> None:
        log = factories.task(task_name="tests.echo")
        lifecycle.mark_completed(log.celery_task_id, result=1)
        with pytest.raises(TransitionRefused, match="completed"):
            actions.rerun(TaskLog.objects.get(pk=log.pk))

    def test_active_task_needs_force(self, celery_app: Any) -> None:
        log = factories.task(task_name="tests.echo")
        started(log)
        with pytest.raises(TransitionRefused, match="force"):
            actions.rerun(TaskLog.objects.get(pk=log.pk))
        new = actions.rerun(TaskLog.objects.get(pk=log.pk), force=True)
        old = TaskLog.objects.get(pk=log.pk)
        assert (old.status, old.error_code) == (TaskStatus.CANCELLED, "superseded")
        assert new.retry_of_id == log.pk

    def test_redacted_arguments_are_refused(self, celery_app: Any) -> None:
        log = factories.task(task_name="tests.echo", kwargs={"password": "x"})
        lifecycle.mark_failed(log.celery_task_id, error_message="boom")
        with pytest.raises(TransitionRefused, match="redacted"):
            actions.rerun(TaskLog.objects.get(pk=log.pk))

    def test_unknown_task_is_refused(self, celery_app: Any) -> None:
        log = factories.task(task_name="not.registered")
        lifecycle.mark_failed(log.celery_task_id, error_message="boom")
        with pytest.raises(TransitionRefused, match="not a registered TrackedTask"):
            actions.rerun(TaskLog.objects.get(pk=log.pk))


@pytest.fixture
def side_queue(celery_app: Any) -> Iterator[str]:
    """A queue no worker consumes, emptied after the test."""
    yield SIDE_QUEUE
    purge_queue(celery_app)


def failed(**fields: Any) -> TaskLog:
    fields.setdefault("task_name", "tests.echo")
    fields.setdefault("queue", SIDE_QUEUE)
    log = factories.task(**fields)
    lifecycle.mark_failed(log.celery_task_id, error_message="boom", error_code="ValueError")
    return TaskLog.objects.get(pk=log.pk)


def end(log: TaskLog, status: str = TaskStatus.FAILED) -> None:
    lifecycle.mark_started(log.celery_task_id)
    if status == TaskStatus.FAILED:
        lifecycle.mark_failed(log.celery_task_id, error_message="again", error_code="ValueError")
    else:
        lifecycle.mark_completed(log.celery_task_id, result=1)


def fresh(log: TaskLog) -> TaskLog:
    return TaskLog.objects.get(pk=log.pk)


@pytest.mark.backends
class TestOneActiveRunPerLineage:
    def test_a_task_is_not_run_again_while_its_rerun_is_active(
        self, celery_app: Any, side_queue: str
    ) -> None:
        first = failed(args=[1])
        rerun = actions.rerun(first)
        for force in (False, True):
            with pytest.raises(TransitionRefused, match=f"still retrying \\({rerun.pk}\\)"):
                actions.rerun(fresh(first), force=force)
        assert TaskLog.objects.filter(retry_of=first).count() == 1
        end(rerun)
        second = actions.rerun(fresh(first))  # the first re-run has ended
        assert second.retry_of_id == first.pk

    def test_every_run_of_the_lineage_counts(self, celery_app: Any, side_queue: str) -> None:
        a = failed(args=[1])
        b = actions.rerun(a)
        end(b)
        c = actions.rerun(fresh(b))  # a -> b -> c
        for run in (a, b):
            with pytest.raises(TransitionRefused, match="still retrying"):
                actions.rerun(fresh(run))
        end(c, TaskStatus.COMPLETED)
        d = actions.rerun(fresh(a))
        assert (d.retry_of_id, d.retry_count) == (a.pk, 1)
        assert TaskLog.objects.count() == 4

    def test_force_cancels_the_run_it_supersedes(self, celery_app: Any, side_queue: str) -> None:
        stuck = factories.task(task_name="tests.echo", args=[1], queue=side_queue)
        lifecycle.mark_started(stuck.celery_task_id)
        new = actions.rerun(fresh(stuck), force=True, terminate=True)
        old = fresh(stuck)
        assert (old.status, old.error_code) == (TaskStatus.CANCELLED, "superseded")
        assert old.error_message == f"superseded: run again as {new.celery_task_id}"
        cancelled = old.events.get(event_type="cancelled")
        assert cancelled.metadata["terminate"] is True
        # The new run is the lineage's active run now: forcing the old one again is refused.
        with pytest.raises(TransitionRefused, match="still retrying"):
            actions.rerun(old, force=True)


@pytest.mark.backends
class TestPublishedLikeTheOriginal:
    def test_queue_priority_and_a_future_eta_are_kept(
        self, celery_app: Any, side_queue: str
    ) -> None:
        task = celery_app.tasks["tests.echo"]
        before = timezone.now()
        log = task.submit(args=[1], countdown=600, queue=side_queue, priority=3)
        log.refresh_from_db()
        assert log.eta is not None
        assert before + timedelta(seconds=600) <= log.eta <= timezone.now() + timedelta(seconds=600)
        assert (log.queue, log.priority) == (side_queue, 3)
        actions.cancel(log, revoke=False)  # cancelled while it waited for its time
        with published() as sent:
            new = actions.rerun(fresh(log))
        [message] = [m for m in sent if m.headers["id"] == new.celery_task_id]
        assert message.routing_key == side_queue
        assert message.properties["priority"] == 3
        # Not earlier than the original was due.
        assert datetime.fromisoformat(message.headers["eta"]) == log.eta
        new.refresh_from_db()
        assert (new.eta, new.queue, new.priority) == (log.eta, side_queue, 3)

    def test_an_eta_that_has_passed_is_dropped(self, celery_app: Any, side_queue: str) -> None:
        task = celery_app.tasks["tests.echo"]
        log = task.submit(args=[1], eta=timezone.now() - timedelta(hours=1), queue=side_queue)
        actions.cancel(log, revoke=False)
        with published() as sent:
            new = actions.rerun(fresh(log))
        [message] = [m for m in sent if m.headers["id"] == new.celery_task_id]
        assert message.headers["eta"] is None
        assert fresh(new).eta is None
