"""Celery canvases (chain, group, chord, replace) recorded with their lineage.

An in-process worker on the memory:// transport runs the canvases; the
integration tier runs them on a real worker (tests/integration/test_canvas_live.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain, chord, group

from django_taskqueue import canvas
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories, tasks
from tests.live import wait_finished, wait_for

pytestmark = pytest.mark.worker


def rows(*celery_ids: str) -> list[TaskLog]:
    by_id = {
        log.celery_task_id: log for log in TaskLog.objects.filter(celery_task_id__in=celery_ids)
    }
    return [by_id[celery_id] for celery_id in celery_ids]


def chain_ids(result: Any) -> list[str]:
    """The Celery ids of a chain's steps, first to last, from its last result."""
    ids = []
    while result is not None:
        ids.append(result.id)
        result = result.parent
    return ids[::-1]


def row_of(celery_task_id: str) -> TaskLog:
    """Wait for the task's row (whatever its status)."""
    log: TaskLog = wait_for(
        lambda: TaskLog.objects.filter(celery_task_id=celery_task_id).first(),
        10,
        what=f"the row of {celery_task_id}",
    )
    return log


def test_a_chain_records_parent_and_root(worker: Any) -> None:
    result: Any = chain(tasks.add.s(1, 1), tasks.add.s(2), tasks.add.s(3)).apply_async()
    assert result.get(timeout=10) == 7
    first, middle, last = chain_ids(result)
    for step in (first, middle, last):
        wait_finished(step)
    first_log, middle_log, last_log = rows(first, middle, last)
    assert {log.celery_root_id for log in (first_log, middle_log, last_log)} == {first}
    assert first_log.celery_parent_id == ""
    assert middle_log.celery_parent_id == first
    assert last_log.celery_parent_id == middle
    # The bulk parent is another thing: a canvas leaves it alone.
    assert all(log.parent_id is None for log in (first_log, middle_log, last_log))
    walked = TaskLog.objects.canvas(last_log).order_by("created_at")
    assert [log.celery_task_id for log in walked] == [first, middle, last]


def test_a_group_records_its_group_id(worker: Any) -> None:
    result: Any = group(tasks.add.s(1, 1), tasks.add.s(2, 2), tasks.echo.s("x")).apply_async()
    result.get(timeout=10)
    logs = [wait_finished(child.id) for child in result.results]
    assert {log.celery_group_id for log in logs} == {result.id}
    members = TaskLog.objects.filter(celery_group_id=result.id)
    assert sorted(members.values_list("celery_task_id", flat=True)) == sorted(
        child.id for child in result.results
    )


def test_a_chord_records_header_group_body_and_root(worker: Any) -> None:
    header = [tasks.add.s(1, 1), tasks.add.s(2, 2)]
    result: Any = chord(header, tasks.total.s()).apply_async()
    assert result.get(timeout=10) == 6
    body = wait_finished(result.id)
    header_ids = [child.id for child in result.parent.results]
    header_logs = [wait_finished(task_id) for task_id in header_ids]
    assert {log.celery_group_id for log in header_logs} == {result.parent.id}
    # A chord sent from outside any task: each header member is its own root
    # (Celery's ids), and the body was sent by the member that returned last.
    assert {log.celery_root_id for log in header_logs} == set(header_ids)
    assert body.celery_parent_id in header_ids
    assert body.celery_root_id == body.celery_parent_id
    # The walk joins them through the header's group.
    for log in (body, *header_logs):
        walked = set(TaskLog.objects.canvas(log).values_list("celery_task_id", flat=True))
        assert walked == {body.celery_task_id, *header_ids}


def test_a_failed_chain_records_the_steps_it_never_published(worker: Any) -> None:
    steps = chain(
        tasks.add.s(1, 1),
        tasks.boom.si("step two"),
        tasks.add.s(3),
        tasks.untracked.si(1),
        tasks.echo.si("last"),
    )
    result: Any = steps.apply_async()
    with pytest.raises(ValueError, match="step two"):
        result.get(timeout=10)
    first_id, boom_id, add_id, untracked_id, echo_id = chain_ids(result)
    boom_log = wait_finished(boom_id)
    assert boom_log.status == TaskStatus.FAILED
    add_log, echo_log = row_of(add_id), row_of(echo_id)
    for log in (add_log, echo_log):
        assert log.status == TaskStatus.FAILED
        assert log.error_code == canvas.UPSTREAM_FAILED
        assert f"tests.boom[{boom_id}]" in log.error_message
        assert "ValueError: step two" in log.error_message
        assert (log.celery_parent_id, log.celery_root_id) == (boom_id, first_id)
        assert factories.events(log) == ["created", "failed"]
        assert log.started_at is None
        assert log.completed_at is not None
    assert (add_log.task_name, add_log.args, add_log.task_type) == ("tests.add", [3], "sample")
    assert echo_log.args == ["last"]
    # An untracked task gets no row, as when it runs.
    assert not TaskLog.objects.filter(celery_task_id=untracked_id).exists()
    assert TaskLog.objects.canvas(boom_log).count() == 4


def test_a_failed_chord_header_records_the_body(worker: Any) -> None:
    result: Any = chord([tasks.add.s(1, 1), tasks.boom.si("member")], tasks.total.s()).apply_async()
    with pytest.raises(Exception, match="member"):
        result.get(timeout=10)
    body = wait_finished(result.id)
    assert (body.status, body.error_code, body.task_name) == (
        TaskStatus.FAILED,
        canvas.UPSTREAM_FAILED,
        "tests.total",
    )
    boom_id = next(child.id for child in result.parent.results if child.state == "FAILURE")
    assert body.celery_parent_id == boom_id
    assert body.celery_root_id == wait_finished(boom_id).celery_root_id != ""


def test_recording_never_overwrites_a_row(worker: Any) -> None:
    """A step that somehow has a row keeps it as it is."""
    from django_taskqueue import lifecycle

    log = lifecycle.create_task_log("existing-step", task_name="tests.add")
    step = canvas.Step("existing-step", "tests.add", (1,), {})
    fresh = canvas.Step("fresh-step", "tests.add", (2,), {})
    written = lifecycle.record_unpublished(
        [step, fresh], upstream_id="up", upstream_name="tests.boom", root_id="root", reason="x"
    )
    assert [row.celery_task_id for row in written] == ["fresh-step"]
    log.refresh_from_db()
    assert (log.status, log.error_code) == (TaskStatus.PENDING, "")
    again = lifecycle.record_unpublished(
        [fresh], upstream_id="up", upstream_name="tests.boom", root_id="root", reason="x"
    )
    assert again == []
    assert TaskLog.objects.filter(celery_task_id="fresh-step").count() == 1


def test_a_replaced_task_keeps_its_canvas(worker: Any) -> None:
    result = tasks.replaced_by_chain.delay(5)
    assert result.get(timeout=10) == 16
    replaced = TaskLog.objects.get(celery_task_id=result.id)
    # The replacement chain's first step was sent from the replaced task's body.
    first = wait_for(
        lambda: TaskLog.objects.filter(celery_parent_id=result.id, task_name="tests.add").first(),
        10,
        what="the replacement's first step",
    )
    assert first.celery_root_id == result.id
    wait_finished(first.celery_task_id)
    assert first.args == [5, 1]
    walked = set(TaskLog.objects.canvas(replaced).values_list("celery_task_id", flat=True))
    assert walked == {result.id, first.celery_task_id}


def test_a_task_sent_from_a_task_records_who_sent_it(worker: Any) -> None:
    result = tasks.sends_add.delay(4)
    child_id = result.get(timeout=10)
    child = wait_finished(child_id)
    assert (child.celery_parent_id, child.celery_root_id) == (result.id, result.id)
    root = wait_finished(result.id)
    assert (root.celery_parent_id, root.celery_root_id) == ("", result.id)
    # Recorded by the producer, before the worker ran it.
    created = child.events.order_by("created_at", "id").first()
    assert created is not None
    assert created.metadata.get("source") != "worker"


def test_the_worker_fills_lineage_the_producer_could_not_know(worker: Any) -> None:
    """A canvas step sent untracked (send_task) gets its lineage from the message."""
    from celery import current_app

    result = current_app.send_task(
        "tests.add", args=(1, 2), root_id="the-root", parent_id="the-parent", group_id="g"
    )
    assert result.get(timeout=10) == 3
    log = wait_finished(result.id)
    assert (log.celery_root_id, log.celery_parent_id, log.celery_group_id) == (
        "the-root",
        "the-parent",
        "g",
    )


def test_a_failed_chain_descends_into_a_chord_step_body(worker: Any) -> None:
    """As Celery does: a chord step of the failed chain fails through its body."""
    body = tasks.total.s()
    steps = chain(
        tasks.boom.si("first"),
        chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], body),
        tasks.echo.s("after"),
    )
    result: Any = steps.apply_async()
    with pytest.raises(ValueError, match="first"):
        result.get(timeout=10)
    boom_log = wait_finished(chain_ids(result)[0])
    not_run = TaskLog.objects.filter(
        celery_parent_id=boom_log.celery_task_id, error_code=canvas.UPSTREAM_FAILED
    )
    # Written by the failed step's on_failure just after its own end.
    wait_for(lambda: not_run.count() == 2, what="the steps that never ran")
    recorded = {log.task_name: log for log in not_run}
    # The chord's body and the step after it; the header tasks are never published,
    # and Celery does not fail them (they stay pending in its backend): no rows.
    assert set(recorded) == {"tests.total", "tests.echo"}
    assert recorded["tests.echo"].celery_task_id == result.id
    assert TaskLog.objects.canvas(boom_log).count() == 3


def test_a_failed_chord_header_records_a_group_body(worker: Any) -> None:
    result: Any = chord(
        [tasks.boom.si("member"), tasks.add.s(1, 1)],
        group(tasks.echo.s("a"), tasks.echo.s("b")),
    ).apply_async()
    members = [child.id for child in result.results]
    logs = [wait_finished(task_id) for task_id in members]
    assert {(log.status, log.error_code) for log in logs} == {
        (TaskStatus.FAILED, canvas.UPSTREAM_FAILED)
    }
    assert {log.celery_group_id for log in logs} == {result.id}


def test_a_chord_in_a_group_body_is_recorded_through_its_body(worker: Any) -> None:
    """Celery fails a chord member of a group body through its body's result."""
    inner = chord([tasks.add.si(2, 2)], tasks.total.s())
    result: Any = chord(
        [tasks.boom.si("member"), tasks.add.s(1, 1)], group(inner, tasks.total.s())
    ).apply_async()
    members = [child.id for child in result.results]
    logs = [wait_finished(task_id) for task_id in members]
    assert {(log.task_name, log.error_code) for log in logs} == {
        ("tests.total", canvas.UPSTREAM_FAILED)
    }
