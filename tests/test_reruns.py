"""Running a task again (``actions.rerun``): one active run per lineage, published alike."""

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
from tests.helpers import SIDE_QUEUE, published, purge_queue

# The lifecycle contract: on SQLite, and again on PostgreSQL (tox -e integration, -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


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
