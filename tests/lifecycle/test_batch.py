"""Marks written in batches (lifecycle.write_marks): the outcome of each alone, fewer statements."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.signals import task_status_changed
from django_taskqueue.status import TaskStatus
from tests import factories

# Part of the lifecycle contract: SQLite here, PostgreSQL and PgBouncer in their envs.
pytestmark = [pytest.mark.django_db, pytest.mark.backends]

#: The columns an end writes, compared between the twin rows.
COLUMNS = (
    "status",
    "result",
    "error_message",
    "error_code",
    "traceback",
    "progress",
    "progress_message",
    "next_retry_at",
)


def _processing() -> TaskLog:
    return factories.task(TaskStatus.PROCESSING)


def _pending() -> TaskLog:
    return factories.task()


def _cancelled() -> TaskLog:
    return factories.task(TaskStatus.CANCELLED)


def _lost() -> TaskLog:
    log = factories.task(created_at=factories.ago(hours=2))
    lifecycle.mark_lost(log.pk, created_before=timezone.now(), error_message="lost: gone")
    return log


def _ended_by_another_run() -> TaskLog:
    log = factories.task()
    lifecycle.mark_started(log.celery_task_id, worker="w", run="first")
    lifecycle.mark_started(log.celery_task_id, worker="w", run="second")
    lifecycle.mark_completed(log.celery_task_id, result="first", run="first")
    return log


def _success(log: TaskLog, **extra: Any) -> lifecycle.Mark:
    return lifecycle.completion(
        log.celery_task_id, result={"n": log.celery_task_id[:4]}, evidence=True, **extra
    )


def _failure(log: TaskLog, **extra: Any) -> lifecycle.Mark:
    return lifecycle.failure(
        log.celery_task_id,
        error_message="ValueError: no",
        error_code="ValueError",
        traceback="Traceback...",
        evidence=True,
        **extra,
    )


SCENARIOS: dict[str, tuple[Callable[[], TaskLog], Callable[[TaskLog], lifecycle.Mark]]] = {
    "processing completes": (_processing, _success),
    "processing fails": (_processing, _failure),
    "processing completes with progress": (
        _processing,
        lambda log: _success(log, progress=ProgressWrite(80, "almost", {"k": 1}, True)),
    ),
    "pending completes (start never recorded)": (_pending, _success),
    "cancelled: the end is ignored": (_cancelled, _success),
    "presumed lost: the end supersedes it": (_lost, _success),
    "ended by another run: recorded after it": (
        _ended_by_another_run,
        lambda log: _failure(log, run="second"),
    ),
}


def _state(log: TaskLog) -> tuple[Any, ...]:
    log.refresh_from_db()
    return (*(getattr(log, c) for c in COLUMNS), factories.events(log))


def _comparable(state: tuple[Any, ...], log: TaskLog) -> tuple[Any, ...]:
    """A twin's state with its own id (in its result) made the same as the other's."""
    result = state[1]
    if isinstance(result, dict) and result.get("n") == log.celery_task_id[:4]:
        result = {"n": "id"}
    return (state[0], result, *state[2:])


def test_a_batch_records_what_each_end_would_record_alone() -> None:
    alone: dict[str, tuple[Any, ...]] = {}
    for name, (make, end) in SCENARIOS.items():
        log = make()
        end(log).write()
        alone[name] = _comparable(_state(log), log)
    twins = {name: make() for name, (make, _) in SCENARIOS.items()}
    marks = [end(twins[name]) for name, (_, end) in SCENARIOS.items()]
    outcomes = lifecycle.write_marks(marks)
    batched = {name: _comparable(_state(log), log) for name, log in twins.items()}
    assert batched == alone
    applied = [o.applied for o in outcomes]
    assert applied == [True, True, True, True, False, True, True]


def test_an_end_without_a_row_and_a_second_end_of_one_task() -> None:
    log = _processing()
    first = _success(log)
    again = _failure(log)
    nowhere = lifecycle.completion("no-such-task", result=1)
    outcomes = lifecycle.write_marks([first, nowhere, again])
    assert [(o.applied, o.status) for o in outcomes] == [
        (True, TaskStatus.COMPLETED),
        (False, None),
        (False, TaskStatus.COMPLETED),
    ]
    assert factories.events(log) == ["created", "started", "completed", "ignored"]


def test_the_time_of_each_end_is_kept() -> None:
    logs = [_processing() for _ in range(3)]
    marks = []
    for n, log in enumerate(logs):
        with lifecycle.recorded_at(timezone.now() - timedelta(seconds=10 - n)):
            marks.append(_success(log))
    lifecycle.write_marks(marks)
    for log, mark in zip(logs, marks, strict=True):
        log.refresh_from_db()
        assert log.completed_at == mark.at
        assert log.events.get(event_type="completed").created_at == mark.at


def test_a_batch_of_many_ends_takes_a_few_statements() -> None:
    logs = [_processing() for _ in range(30)]
    marks = [(_success if n % 3 else _failure)(log) for n, log in enumerate(logs)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = lifecycle.write_marks(marks)
    assert all(o.applied for o in outcomes)
    # BEGIN/SAVEPOINT, SET LOCAL on PostgreSQL, the SELECT ... FOR UPDATE, one UPDATE
    # per kind of end, the events' INSERT, COMMIT/RELEASE: the same for 3 or 300 ends.
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) <= 8, statements
    assert TaskLog.objects.filter(status=TaskStatus.COMPLETED).count() == 20
    assert TaskLog.objects.filter(status=TaskStatus.FAILED).count() == 10


def test_signals_and_the_bulk_parent_as_for_single_ends(
    django_capture_on_commit_callbacks: Any,
) -> None:
    parent, children = lifecycle.create_bulk(
        "tests.process_file", [{"file_path": "/tmp/a"}, {"file_path": "/tmp/b"}], task_type="file"
    )
    for child in children:
        lifecycle.mark_started(child.celery_task_id, worker="w")
    seen: list[tuple[str, str]] = []

    def receiver(task_log: TaskLog, status: str, **kwargs: Any) -> None:
        seen.append((task_log.celery_task_id, status))

    task_status_changed.connect(receiver, sender=TaskLog)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            lifecycle.write_marks([_success(child) for child in children])
    finally:
        task_status_changed.disconnect(receiver, sender=TaskLog)
    assert sorted(seen) == sorted(
        [(c.celery_task_id, TaskStatus.COMPLETED) for c in children]
        + [(parent.celery_task_id, TaskStatus.COMPLETED)]
    )
    parent.refresh_from_db()
    assert parent.status == TaskStatus.COMPLETED


def test_starts_and_ends_in_one_batch_as_one_by_one() -> None:
    """A short task's start and end in one batch; a cancelled one's start refused; no row."""

    def marks_of(log: TaskLog, n: int) -> list[lifecycle.Mark]:
        start = lifecycle.starting(
            log.celery_task_id, worker="w@h", attempt=0, defaults={"queue": "q"}, run=f"r{n}"
        )
        return [start, _success(log, run=f"r{n}")]

    makers = [_pending, _pending, _cancelled, _lost]
    alone_logs = [make() for make in makers]
    for n, log in enumerate(alone_logs):
        for mark in marks_of(log, n):
            mark.write()
    twins = [make() for make in makers]
    marks = [mark for n, log in enumerate(twins) for mark in marks_of(log, n)]
    missing = lifecycle.starting("not-recorded-yet", worker="w@h", defaults={"task_name": "x.y"})
    outcomes = lifecycle.write_marks([*marks, missing])
    for log, twin in zip(alone_logs, twins, strict=True):
        assert _comparable(_state(twin), twin) == _comparable(_state(log), log)
        assert twin.queue == log.queue
    assert twins[0].queue == "q"
    assert [o.applied for o in outcomes] == [True, True, True, True, False, False, True, True, True]
    created = TaskLog.objects.get(celery_task_id="not-recorded-yet")
    assert (created.status, created.task_name) == (TaskStatus.PROCESSING, "x.y")


def test_row_state_is_what_a_worker_reads_before_the_body() -> None:
    parent, children = lifecycle.create_bulk(
        "tests.process_file", [{"file_path": "/tmp/a"}], task_type="file"
    )
    child = children[0]
    assert lifecycle.row_state(celery_task_id=child.celery_task_id) == lifecycle.RowState(
        child.pk, TaskStatus.PENDING, parent.pk
    )
    assert lifecycle.row_state(pk=parent.pk) == lifecycle.RowState(parent.pk, parent.status, None)
    assert lifecycle.row_state(celery_task_id="no-such-task") is None


def test_marks_keyed_by_pk_look_no_row_up_by_celery_id() -> None:
    """A worker's start and end carry the pk it read (row_state): the batch needs no look-up."""
    logs = [_pending() for _ in range(5)]
    marks = [
        mark
        for n, log in enumerate(logs)
        for mark in (
            lifecycle.starting(log.celery_task_id, worker="w@h", run=f"r{n}", pk=log.pk),
            _success(log, run=f"r{n}", pk=log.pk),
        )
    ]
    with CaptureQueriesContext(connection) as queries:
        outcomes = lifecycle.write_marks(marks)
    assert all(o.applied for o in outcomes)
    column = connection.ops.quote_name("celery_task_id")
    lookups = [q["sql"] for q in queries.captured_queries if column in q["sql"]]
    assert lookups == []
    assert TaskLog.objects.filter(status=TaskStatus.COMPLETED).count() == 5
