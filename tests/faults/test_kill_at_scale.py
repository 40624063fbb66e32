"""kill -9 in the middle of 2,000 ``acks_late`` tasks, while housekeeping runs.

The kill experiments of ``test_kill.py`` at scale: 2,000 short tasks on a
prefork worker of two processes, one of them a longer body (the victim) so the
kill lands inside a body at a known moment. Either the worker's main process is
SIGKILLed, or the pool child running the victim is.

What happens to the pool when its main process dies: Celery's prefork pool sets
``PR_SET_PDEATHSIG`` to SIGKILL in every child it starts
(``celery.concurrency.prefork.process_initializer``), so the kernel kills the
children as soon as the main process is gone; none is left running a body as an
orphan. The test measures it (``orphans``: children alive two seconds after the
kill) and then kills the process group anyway, so that a pool which did leave
orphans could not go on writing the ledger behind the counts.

With ``acks_late`` nothing the dead worker held is acknowledged: its running and
prefetched messages come back from Redis's unacked hash after the visibility
timeout, to a new worker, and every task completes; the bodies that were running
start twice (expected of ``acks_late``: they are delivered again). A killed pool
child is different: its main process sees it die and fails its task
``worker_lost`` (``task_reject_on_worker_lost`` is off), acknowledging it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests import tasks
from tests.faults import settings
from tests.faults.experiment import Counts, tally, wait_until_settled
from tests.faults.housekeeper import housekeeper, runs
from tests.faults.ledger import Entry, Ledger
from tests.live import wait_for, worker_process

pytestmark = pytest.mark.faults

TASKS = 2_000
SECONDS = 0.005  # per body: the bookkeeping, not the body, is what takes the time
VICTIM = 1_000  # the position of the longer body among the tasks
VICTIM_SECONDS = 3.0


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The state follows the command name, which is in parentheses.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _started(ledger: Ledger, task_id: str) -> Entry | None:
    return next((e for e in ledger.entries() if e.event == "start" and e.task_id == task_id), None)


@pytest.mark.parametrize("kill", ["main_process", "pool_child"])
def test_kill_9_among_2000_acks_late_tasks(
    servers: Any, tmp_path: Path, report: list[Counts], kill: str
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    path = str(ledger.path)
    name = f"kill -9 of the {kill.replace('_', ' ')} among {TASKS} tasks, acks_late"
    began = time.monotonic()
    extra: dict[str, Any] = {}
    with housekeeper(tmp_path, interval=0.5, lost_after=1.0, inspect_timeout=0.5) as log:
        with worker_process(tmp_path, concurrency=2) as first:
            ids: list[str] = []

            def kill_in_the_victim() -> Entry | None:
                """Kill once the victim's body has run a moment; ``None`` before it starts."""
                entry = _started(ledger, ids[VICTIM])
                if entry is None:
                    return None
                time.sleep(max(0.0, entry.at + 0.2 - time.time()))
                # Its child is inside it for seconds yet (else the kill hits another task).
                assert ids[VICTIM] not in ledger.completed(), "the victim ended before the kill"
                extra["published_at_kill"] = len(ids)
                extra["completed_at_kill"] = len(ledger.completed())
                children = first.child_pids()
                assert entry.pid in children, "the victim runs in a pool child"
                if kill == "pool_child":
                    first.kill_child(entry.pid)
                    return entry
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait(10)
                deadline = time.monotonic() + 2
                while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
                    time.sleep(0.05)
                extra["orphans"] = sum(1 for pid in children if _alive(pid))
                # Whatever the pool did, nothing of the dead worker runs on.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(first.process.pid, signal.SIGKILL)
                return entry

            killed = None
            for n in range(TASKS):
                seconds = VICTIM_SECONDS if n == VICTIM else SECONDS
                ids.append(tasks.ledger_late.delay(path, seconds).id)
                # The worker keeps pace with the publishing: watch for the victim
                # meanwhile, so the kill falls while it runs, mid-run.
                if killed is None and n > VICTIM and n % 10 == 0:
                    killed = kill_in_the_victim()
            extra["published_in"] = f"{time.monotonic() - began:.1f}s"
            if killed is None:
                wait_for(kill_in_the_victim, timeout=60, interval=0.02, what="the victim")
            if kill == "pool_child":
                settled = wait_until_settled(ids, timeout=90)
            else:
                with worker_process(tmp_path, concurrency=2):
                    # The dead worker's messages come back after the visibility timeout.
                    settled = wait_until_settled(ids, timeout=settings.VISIBILITY_TIMEOUT + 90)
        housekeeping_runs = len(runs(log))
    extra["took"] = f"{time.monotonic() - began:.0f}s"

    counts = tally(name, ids, ledger, settled=settled, housekeeping_runs=housekeeping_runs, **extra)
    report.append(counts)

    assert counts.completed_not_recorded == [], "a body that completed is recorded otherwise"
    assert counts.lost == 0, "nothing was lost: every message was still in Redis"
    assert counts.marked_lost == 0
    assert counts.skipped == 0
    assert settled, "some tasks never reached a final status"
    recorded = counts.recorded
    assert recorded["processing"] == recorded["pending"] == recorded["no row"] == 0
    if kill == "main_process":
        assert extra["orphans"] == 0, "a pool child outlived its main process"
        # Every message the dead worker held comes back: all of them complete.
        assert recorded["completed"] == TASKS
        assert counts.worker_lost == 0
        # At least the victim ran twice: it was running when the worker died.
        assert counts.body_started_twice >= 1
    else:
        # The victim is failed worker_lost by the main process; all else completes.
        assert counts.worker_lost == 1
        assert recorded["failed"] == 1
        assert recorded["completed"] == TASKS - 1
        assert counts.body_completed == TASKS - 1
