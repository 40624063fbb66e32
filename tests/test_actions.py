"""The operations that reach Celery (django_taskqueue.actions): what they return."""

from __future__ import annotations

from typing import Any

import pytest

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories

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
