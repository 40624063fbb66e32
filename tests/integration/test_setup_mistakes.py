"""Setup mistakes on a real ``celery worker``: a wrong setting, tables not migrated.

Each says once what to do, and neither fails the user's tasks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from django_taskqueue.models import TaskLog
from tests import tasks
from tests.celery_app import app
from tests.live import wait_finished, worker_env, worker_process

pytestmark = pytest.mark.integration

# A worker's log line, as Celery formats it: "[time: LEVEL/ProcessName] message".
_LINE = re.compile(r"^\[[^]]*: (?P<level>[A-Z]+)/(?P<process>[^]]+)\] (?P<message>.*)$")


def log_lines(log: str) -> list[tuple[str, str, str]]:
    """(level, process, message) of each of the worker's formatted log lines."""
    found = (_LINE.match(line) for line in log.splitlines())
    return [(m["level"], m["process"], m["message"]) for m in found if m]


def test_a_wrong_setting_is_logged_at_start_and_tasks_are_recorded_with_the_default(
    transactional_db: Any, tmp_path: Path
) -> None:
    """PROGRESS_MIN_INTERVAL="fast": before, the worker started silently and every
    tracked task failed in before_start (ValueError) before its body ran."""
    wrong = json.dumps({"PROGRESS_MIN_INTERVAL": "fast"})
    env = worker_env(TASKQUEUE_TEST_TASKQUEUE_SETTINGS=wrong)
    with worker_process(tmp_path, env=env, concurrency=1) as worker:
        results = [tasks.progress.delay(steps=4) for _ in range(5)]
        assert [r.get(timeout=30) for r in results] == [4] * 5
        logs = [wait_finished(r.id) for r in results]
    lines = log_lines(worker.log)
    startup = [
        (level, process)
        for level, process, message in lines
        if message.startswith("System check django_taskqueue.E004: ")
        and "PROGRESS_MIN_INTERVAL" in message
        and "checks.html#e004" in message
    ]
    assert startup == [("ERROR", "MainProcess")], worker.log
    # Recorded, with the default interval instead of the wrong value.
    assert {(log.status, log.progress, log.result) for log in logs} == {("completed", 100, 4)}
    fallback = [m for _, _, m in lines if "Got 'fast'" in m]
    assert len(fallback) == 1, worker.log  # once in the one pool process, not once per task
    assert "the default, 0.5," in fallback[0]
    assert "Traceback" not in worker.log


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A PostgreSQL database without any table: the package installed, ``migrate`` not run."""
    name = os.environ.get("TASKQUEUE_TEST_DB_NAME", "test_django_taskqueue") + "_unmigrated"
    options: dict[str, Any] = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**options) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(**options) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_missing_tables_say_run_migrate_once_per_process(
    empty_database: str, tmp_path: Path
) -> None:
    """Before: a traceback for the first write of each kind, then reminders, none saying
    what to do. Now one line per process that names ``manage.py migrate``."""
    env = worker_env(TASKQUEUE_WORKER_DB_NAME=empty_database)
    with worker_process(tmp_path, env=env, concurrency=2) as worker:
        # send_task: this process records nothing (its database has the tables).
        results = [
            app.send_task("tests.progress", kwargs={"steps": 3, "sleep": 0.01}) for _ in range(8)
        ]
        # The tasks themselves run and succeed: recording never fails them.
        assert [r.get(timeout=30) for r in results] == [3] * 8
    lines = log_lines(worker.log)
    advice = [(level, process) for level, process, m in lines if "manage.py migrate" in m]
    processes = [process for _, process in advice]
    assert advice, worker.log
    assert len(processes) == len(set(processes)), worker.log  # one line per process
    assert {level for level, _ in advice} == {"ERROR"}
    assert all(process.startswith("ForkPoolWorker") for process in processes), advice
    message = next(m for _, _, m in lines if "manage.py migrate" in m)
    assert TaskLog._meta.db_table in message
    # Nothing else about recording: no tracebacks, no per-kind lines, no reminders.
    assert "Traceback" not in worker.log, worker.log
    assert not [m for _, _, m in lines if "could not record" in m], worker.log
