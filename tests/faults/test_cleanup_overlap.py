"""Two retention runs at once: the beat task on a worker and the command, on PostgreSQL.

Their batches take turns on an advisory lock: both finish, nothing due is left,
and what each deleted adds up. When one of them is frozen (SIGSTOP) while it
holds its turn, the other waits at most its lock timeout and then fails,
saying how far it came, instead of reporting success.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from django_taskqueue import housekeeping
from django_taskqueue.models import TaskLog
from tests import factories
from tests.celery_app import app
from tests.live import spawn, wait_for, worker_env, worker_process

pytestmark = pytest.mark.faults

DUE = 50_000


def _command(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "cleanup-command.out"
    command = [
        sys.executable,
        "-m",
        "django",
        "taskqueue_cleanup",
        "--no-progress",
        "--batch-size",
        "500",
        *args,
    ]
    return spawn(command, out, worker_env()), out


def _deleted_by(text: str) -> int:
    for marker in ("Deleted ", "it deleted "):
        if marker in text:
            return int(text.split(marker, 1)[1].split(" ", 1)[0])
    return 0


def _due() -> int:
    return housekeeping.purge_finished(dry_run=True).total


def _holds_the_turn() -> bool:
    """Whether another session holds a retention batch's advisory lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid <> pg_backend_pid()"
        )
        return bool(cursor.fetchone()[0])


def test_the_beat_task_and_the_command_at_once(
    servers: Any, tmp_path: Path, report: list[Any]
) -> None:
    factories.many_finished(DUE)
    due = _due()
    with worker_process(tmp_path, concurrency=1):
        task = app.send_task("django_taskqueue.cleanup", kwargs={"batch_size": 500})
        command, out = _command(tmp_path)
        outcome = task.get(timeout=180, propagate=False)
        exit_code = command.wait(180)
    text = out.read_text()
    remaining = _due()
    by_task = outcome["total"] if isinstance(outcome, dict) else 0
    report.append(
        f"overlapping cleanups: due {due}; beat task {task.state} (deleted {by_task}, "
        f"complete {outcome.get('complete') if isinstance(outcome, dict) else outcome!r}); "
        f"command exit {exit_code} (deleted {_deleted_by(text)}); remaining due {remaining}"
    )

    assert task.state == "SUCCESS", outcome
    assert outcome["complete"] is True
    assert exit_code == 0, text
    assert remaining == 0
    assert by_task + _deleted_by(text) == due
    assert not TaskLog.objects.exists()


def test_a_run_frozen_in_its_turn_makes_the_other_fail_loudly(
    servers: Any, tmp_path: Path, report: list[Any]
) -> None:
    factories.many_finished(DUE)
    due = _due()
    with worker_process(tmp_path, concurrency=1):
        command, out = _command(tmp_path)
        wait_for(lambda: _due() < due, timeout=60, what="the command's first batches")
        # Freeze the command inside a batch, while its session holds the turn.
        deadline = time.monotonic() + 30
        while True:
            command.send_signal(signal.SIGSTOP)
            # A COMMIT sent just before the stop releases the lock a moment later.
            time.sleep(0.3)
            if _holds_the_turn():
                break
            command.send_signal(signal.SIGCONT)
            assert time.monotonic() < deadline, "never caught the command inside a batch"
            time.sleep(0.005)
        frozen_at = _due()
        try:
            task = app.send_task(
                "django_taskqueue.cleanup", kwargs={"batch_size": 500, "lock_timeout": 2}
            )
            outcome = task.get(timeout=60, propagate=False)
        finally:
            command.send_signal(signal.SIGCONT)
        exit_code = command.wait(180)
    text = out.read_text()
    remaining = _due()
    report.append(
        f"cleanup frozen in its turn (SIGSTOP) beside the beat task: due {due}; beat task "
        f"{task.state} ({str(outcome).splitlines()[0][:160]}); due when frozen {frozen_at}; "
        f"command after SIGCONT exit {exit_code} (deleted {_deleted_by(text)}); "
        f"remaining due {remaining}"
    )

    assert task.state == "FAILURE"
    assert "cleanup could not finish: a batch failed: LockNotAvailable" in str(outcome)
    assert "due tasks remain for the next run" in str(outcome)
    assert exit_code == 0, text
    assert remaining == 0
