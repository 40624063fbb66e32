"""Celery canvases on a real ``celery worker`` process, Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain, chord

from django_taskqueue import canvas
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import tasks
from tests.live import wait_finished

pytestmark = pytest.mark.integration


def test_a_failed_chain_on_a_real_worker(live_worker: Any) -> None:
    result: Any = chain(
        tasks.add.s(1, 1), tasks.boom.si("second"), tasks.add.s(3), tasks.echo.si("last")
    ).apply_async()
    with pytest.raises(ValueError, match="second"):
        result.get(timeout=30)
    echo_id = result.id
    add_id = result.parent.id
    boom_id = result.parent.parent.id
    first_id = result.parent.parent.parent.id
    boom = wait_finished(boom_id)
    assert (boom.celery_root_id, boom.celery_parent_id) == (first_id, first_id)
    never_run = [wait_finished(add_id), wait_finished(echo_id)]
    for log in never_run:
        assert (log.status, log.error_code) == (TaskStatus.FAILED, canvas.UPSTREAM_FAILED)
        assert (log.celery_root_id, log.celery_parent_id) == (first_id, boom_id)
        assert log.worker == ""
    walked = TaskLog.objects.canvas(boom).order_by("created_at")
    assert [log.celery_task_id for log in walked] == [first_id, boom_id, add_id, echo_id]


def test_a_chord_on_a_real_worker(live_worker: Any) -> None:
    result: Any = chord([tasks.add.s(i, i) for i in range(3)], tasks.total.s()).apply_async()
    assert result.get(timeout=30) == 6
    body = wait_finished(result.id)
    header_ids = [child.id for child in result.parent.results]
    for task_id in header_ids:
        member = wait_finished(task_id)
        assert member.celery_group_id == result.parent.id
    assert body.celery_parent_id in header_ids
    # Celery sends a chord's body with its header's group id.
    assert body.celery_group_id == result.parent.id
    walked = set(TaskLog.objects.canvas(body).values_list("celery_task_id", flat=True))
    assert walked == {body.celery_task_id, *header_ids}

    failing: Any = chord([tasks.add.s(1, 1), tasks.boom.si("member")], tasks.total.s())
    failed = failing.apply_async()
    with pytest.raises(Exception, match="member"):
        failed.get(timeout=30)
    failed_body = wait_finished(failed.id)
    assert (failed_body.status, failed_body.error_code) == (
        TaskStatus.FAILED,
        canvas.UPSTREAM_FAILED,
    )
    assert failed_body.celery_group_id == failed.parent.id
    assert failed_body.celery_root_id != ""
