"""Records held through a database outage (django_taskqueue.holding).

The writes here are the lifecycle's real ones, on the test database; what
stands for the outage is a write that raises Django's ``OperationalError`` the
first times it is called, as a connection refused does. The whole path (a real
PostgreSQL stopped for 20 s under a real worker) is the fault suite's
``tests/faults/test_postgres_outage.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.holding import HeldWrites, held_writes
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from django_taskqueue.tracked import record_safely
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


class Flaky:
    """A write that fails as an unreachable database ``failures`` times, then makes ``write``."""

    def __init__(self, failures: int, write: Callable[[], Any] | None = None) -> None:
        self.failures = failures
        self.write = write
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("connection refused")
        return self.write() if self.write is not None else None


@pytest.fixture
def held() -> Iterator[HeldWrites]:
    writes = HeldWrites(first_retry=0.01, longest_retry=0.05)
    yield writes
    assert writes.drain(10), "the test left writes held"


def test_held_writes_are_stored_in_order_with_the_time_they_happened(held: HeldWrites) -> None:
    log = factories.task()
    # Held a while: the database comes back well after these moments.
    started = timezone.now() - timedelta(seconds=30)
    ended = started + timedelta(seconds=1)
    TaskLog.objects.filter(pk=log.pk).update(created_at=started - timedelta(seconds=1))
    order: list[str] = []

    def start() -> None:
        order.append("start")
        lifecycle.mark_started(log.celery_task_id, worker="w@host", run="r1")

    def end() -> None:
        order.append("end")
        lifecycle.mark_completed(log.celery_task_id, result=1, evidence=True, run="r1")

    held.hold("start", log.celery_task_id, Flaky(3, start), started)
    held.hold("success", log.celery_task_id, end, ended)
    assert held.holds(log.celery_task_id)
    assert held.wait_stored(log.celery_task_id, 10)

    assert order == ["start", "end"]
    log.refresh_from_db()
    assert log.status == TaskStatus.COMPLETED
    # The times the worker saw, not the time the database came back.
    assert (log.started_at, log.completed_at) == (started, ended)
    events = dict(log.events.values_list("event_type", "created_at"))
    assert (events["started"], events["completed"]) == (started, ended)
    assert not held.holds(log.celery_task_id)


def test_the_outage_is_said_once_and_its_end_once(
    held: HeldWrites, caplog: pytest.LogCaptureFixture
) -> None:
    database = Flaky(4)  # down for the first four attempts, whichever write makes them
    stored: list[int] = []

    def write(n: int) -> Callable[[], None]:
        def store() -> None:
            database()
            stored.append(n)

        return store

    with caplog.at_level(logging.WARNING, logger="django_taskqueue"):
        for n in range(5):
            held.hold("success", f"task-{n}", write(n), factories.ago(seconds=1))
        assert held.drain(10)
    said = [r.getMessage() for r in caplog.records]
    assert sum("cannot reach the database" in m for m in said) == 1
    assert sum("stored 5 held records" in m for m in said) == 1
    assert stored == [0, 1, 2, 3, 4]
    assert database.calls == 4 + 5  # the failed attempts were the oldest write's


def test_a_write_that_fails_for_another_reason_is_dropped_not_retried(
    held: HeldWrites, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise IntegrityError("a bug, not an outage")

    with caplog.at_level(logging.ERROR, logger="django_taskqueue"):
        held.hold("success", "t1", broken, factories.ago(seconds=1))
        held.hold("success", "t2", lambda: calls.append("next"), factories.ago(seconds=1))
        assert held.drain(10)
    assert calls == ["broken", "next"]
    said = [r.getMessage() for r in caplog.records]
    assert any("could not record success for task t1" in m for m in said)


def test_beyond_held_records_max_a_write_is_dropped_and_said_once(
    held: HeldWrites, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DJANGO_TASKQUEUE = {"HELD_RECORDS_MAX": 2}
    gate = threading.Event()

    def blocked() -> None:
        if not gate.is_set():
            raise OperationalError("connection refused")

    with caplog.at_level(logging.ERROR, logger="django_taskqueue"):
        kept = [held.hold("success", f"t{n}", blocked, factories.ago(seconds=1)) for n in range(4)]
        gate.set()
        assert held.drain(10)
    assert kept == [True, True, False, False]
    dropped = [r for r in caplog.records if "HELD_RECORDS_MAX" in r.getMessage()]
    assert len(dropped) == 1


def test_wait_stored_gives_up_after_its_timeout(held: HeldWrites) -> None:
    gate = threading.Event()

    def blocked() -> None:
        if not gate.is_set():
            raise OperationalError("connection refused")

    held.hold("success", "t1", blocked, factories.ago(seconds=1))
    assert not held.wait_stored("t1", 0.2)
    assert held.holds("t1")
    gate.set()
    assert held.wait_stored("t1", 10)


def test_record_safely_holds_a_task_s_writes_behind_the_first_held_one() -> None:
    """The start fails: the end is held behind it, untried; a progress write is skipped."""
    log = factories.task()
    task_id = log.celery_task_id
    start = Flaky(2, lambda: lifecycle.mark_started(task_id, worker="w", run="r"))
    progress_calls: list[int] = []
    try:
        assert record_safely("start", task_id, start, hold=True) is None
        assert held_writes.holds(task_id)
        assert record_safely("progress", task_id, progress_calls.append, 1) is None
        assert (
            record_safely(
                "success", task_id, lifecycle.mark_completed, task_id, result=2, run="r", hold=True
            )
            is None
        )
        assert held_writes.wait_stored(task_id, 10)
    finally:
        held_writes.drain(10)
    assert progress_calls == []  # out of order: a progress value is not worth holding
    log.refresh_from_db()
    assert (log.status, log.result) == (TaskStatus.COMPLETED, 2)
    assert factories.events(log) == ["created", "started", "completed"]
    assert log.completed_at is not None
    assert log.started_at is not None
    assert log.completed_at - log.started_at < timedelta(seconds=5)


def test_a_write_that_is_not_held_fails_as_before() -> None:
    """Without ``hold`` (a heartbeat, a progress value) an outage loses the write, as it did."""
    log = factories.task()
    assert record_safely("progress", log.celery_task_id, Flaky(1)) is None
    assert not held_writes.holds(log.celery_task_id)
    assert TaskLog.objects.get(pk=log.pk).status == TaskStatus.PENDING
