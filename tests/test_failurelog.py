"""FailureLog: an outage is one line per kind and a summary, not a line per failure."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest
from django.db import connection

from django_taskqueue import heartbeat
from django_taskqueue.failurelog import FailureLog, recording_failures
from tests import factories

LOGGER = "tests.failurelog"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Down(Exception):
    """Stands for the database's connection error."""


class Broken(Exception):
    """Another sort of error."""


def raised(exc: Exception) -> Exception:
    """``exc`` with a traceback, as a caller's ``except`` block has it."""
    try:
        raise exc
    except Exception as caught:
        return caught


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(clock: Clock) -> FailureLog:
    return FailureLog(logging.getLogger(LOGGER), clock=clock)


def lines(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def fail(log: FailureLog, kind: str, exc: Exception | None = None, task: str = "t1") -> None:
    log.failed(
        kind, exc or raised(Down("connection refused")), "could not record %s for %s", kind, task
    )


def test_an_outage_is_one_line_and_one_summary(log: FailureLog, clock: Clock, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(370):
        fail(log, "progress")
        clock.now += 0.05
    for _ in range(11):
        fail(log, "success")
    clock.now += 1.0
    assert log.failing
    first, second = lines(caplog)
    assert first.levelno == logging.ERROR
    assert first.getMessage() == (
        "could not record progress for t1: Down: connection refused "
        "(repeats are counted, not logged, until recording works again)"
    )
    assert first.exc_info is not None  # the first traceback is kept
    assert second.getMessage().startswith("could not record success for t1: Down:")
    assert second.exc_info is None  # the same exception class: no second traceback

    log.succeeded()
    log.succeeded()
    summary = lines(caplog)[2:]
    assert [r.getMessage() for r in summary] == [
        "django_taskqueue: recording recovered after 19.5 s; 381 writes failed: "
        "370 progress, 11 success (379 repeats not logged)"
    ]
    assert summary[0].levelno == logging.WARNING
    assert not log.failing


def test_success_without_failures_logs_nothing(log: FailureLog, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    log.succeeded()
    assert lines(caplog) == []
    assert not log.failing


def test_a_new_exception_class_is_reported_with_its_traceback(log: FailureLog, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fail(log, "progress")
    fail(log, "progress", raised(Broken("value too long")))
    fail(log, "progress", raised(Broken("value too long")))
    records = lines(caplog)
    assert [r.getMessage().split(": ")[1] for r in records] == ["Down", "Broken"]
    assert all(r.exc_info is not None for r in records)


def test_a_long_outage_is_reminded_with_its_counts(
    log: FailureLog, clock: Clock, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(600):  # five minutes, a failure every half second
        fail(log, "heartbeat")
        clock.now += 0.5
    reminders = [r.getMessage() for r in lines(caplog)[1:]]
    assert len(reminders) == 4  # at 60, 120, 180 and 240 s
    assert reminders[0] == (
        "django_taskqueue: recording still failing after 60.0 s; 121 writes failed: "
        "121 heartbeat (120 repeats not logged)"
    )


def test_the_next_outage_is_reported_again(log: FailureLog, clock: Clock, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fail(log, "start")
    log.succeeded()
    clock.now += 300
    fail(log, "start", task="t2")
    records = lines(caplog)
    assert len(records) == 3
    assert records[2].getMessage().startswith("could not record start for t2")
    assert records[2].exc_info is not None  # minutes later: the traceback again


def test_a_write_failing_between_successes_costs_a_few_lines_a_minute(
    log: FailureLog, clock: Clock, caplog: Any
) -> None:
    """One task's bad data fails its writes while every other write succeeds."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for _ in range(240):  # two minutes, twice a second
        fail(log, "progress", raised(Broken("bad data")))
        clock.now += 0.25
        log.succeeded()
        clock.now += 0.25
    messages = [r.getMessage() for r in lines(caplog)]
    # A failure line and a summary at the start and after each minute, no more.
    assert len(messages) <= 6, messages
    assert sum("could not record" in m for m in messages) == 2
    assert sum(r.exc_info is not None for r in lines(caplog)) == 2
    # Every failure is counted in a summary once the failures stop.
    clock.now += 60
    log.succeeded()
    summaries = [r.getMessage() for r in lines(caplog) if "recovered" in r.getMessage()]
    counted = sum(int(m.split("; ")[1].split()[0]) for m in summaries)
    assert counted == 240
    assert not log.failing


def test_a_summary_within_the_quiet_time_waits_and_keeps_the_recovery_time(
    log: FailureLog, clock: Clock, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fail(log, "start")
    log.succeeded()  # the first summary
    clock.now += 10
    fail(log, "start")  # counted: "start" was logged 10 s ago
    clock.now += 5
    log.succeeded()  # recovered here, 5 s after the failure, but 15 s after the last summary
    assert log.failing
    clock.now += 50
    log.succeeded()
    assert lines(caplog)[-1].getMessage() == (
        "django_taskqueue: recording recovered after 5.0 s; 1 writes failed: 1 start "
        "(1 repeats not logged)"
    )


def test_threads_report_each_kind_once_and_count_every_failure(
    log: FailureLog, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    barrier = threading.Barrier(8)

    def hammer(kind: str) -> None:
        barrier.wait()
        for _ in range(500):
            fail(log, kind)

    threads = [
        threading.Thread(target=hammer, args=("progress" if i % 2 else "heartbeat",))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.succeeded()
    messages = [r.getMessage() for r in lines(caplog)]
    assert sorted(m.split(" for ")[0] for m in messages[:2]) == [
        "could not record heartbeat",
        "could not record progress",
    ]
    assert sum(r.exc_info is not None for r in lines(caplog)) == 1
    assert len(messages) == 3
    assert "4000 writes failed: 2000 " in messages[2]
    assert "(3998 repeats not logged)" in messages[2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_a_clean_log() -> None:
    try:
        fail(recording_failures, "progress")
        assert recording_failures.failing
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running pytest's exit
            os._exit(0 if not recording_failures.failing else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert recording_failures.failing  # the parent's state is its own
    finally:
        recording_failures.reset()


@pytest.mark.django_db(transaction=True)  # each failed write ends its own transaction
def test_failing_heartbeats_are_reported_once_then_summarised(caplog: Any) -> None:
    log = factories.task()
    heartbeat.start(log.celery_task_id, log.pk)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TRIGGER tq_fail_touch BEFORE UPDATE ON django_taskqueue_tasklog "
            "BEGIN SELECT RAISE(ABORT, 'task table is broken'); END;"
        )
    try:
        with caplog.at_level(logging.WARNING, logger="django_taskqueue"):
            for _ in range(5):
                heartbeat._tick()
            with connection.cursor() as cursor:
                cursor.execute("DROP TRIGGER tq_fail_touch")
            heartbeat._tick()
    finally:
        heartbeat.stop(log.celery_task_id)
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS tq_fail_touch")
    messages = [r.getMessage() for r in caplog.records if r.name == "django_taskqueue"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("django_taskqueue could not refresh heartbeats: ")
    assert "task table is broken" in messages[0]
    assert "5 writes failed: 5 heartbeat (4 repeats not logged)" in messages[1]
