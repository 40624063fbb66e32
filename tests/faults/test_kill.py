"""kill -9 of a worker with prefetched messages, while housekeeping runs.

A worker fetches ahead (prefetch): on Redis those messages wait in the
transport's ``unacked`` hash until the visibility timeout, then come back to the
queue. Housekeeping (``reconcile_lost`` and ``mark_stale``, every half second,
``LOST_AFTER`` one second) must not call them lost, none may be skipped when it
comes back, and every body that completed must be recorded completed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import tasks
from tests.faults import settings
from tests.faults.experiment import Counts, tally, wait_until_settled
from tests.faults.housekeeper import housekeeper, runs
from tests.faults.ledger import Ledger
from tests.live import wait_for, worker_process

pytestmark = pytest.mark.faults

TASKS = 60
SECONDS = 0.4  # per task body: 60 tasks on 2 processes take about 12 s


@pytest.mark.parametrize("acks_late", [False, True], ids=["plain", "acks_late"])
@pytest.mark.parametrize("kill", ["pool_child", "whole_worker"])
def test_kill_9_a_worker_with_housekeeping_running(
    servers: Any, tmp_path: Path, report: list[Counts], kill: str, acks_late: bool
) -> None:
    task = tasks.ledger_late if acks_late else tasks.ledger
    ledger = Ledger(tmp_path / "ledger")
    name = f"kill -9 {kill.replace('_', ' ')}, {'acks_late' if acks_late else 'plain'}"
    with housekeeper(tmp_path, interval=0.5, lost_after=1.0, inspect_timeout=0.5) as log:
        with worker_process(tmp_path, concurrency=2) as first:
            ids = [task.delay(str(ledger.path), SECONDS).id for _ in range(TASKS)]
            if kill == "pool_child":
                # A child busy with a body it began a moment ago (not one about to
                # return: that would leave a body done but never recorded), and not
                # just now: the end of its previous task, written by the child's
                # recorder within about 10 ms, is stored (an early-acknowledged task's
                # end queued and not yet written dies with the child, by design).
                def busy_child() -> Any:
                    now = time.time()
                    return ledger.running(first.child_pids(), since=now - 0.25, until=now - 0.05)

                victim = wait_for(busy_child, timeout=30, interval=0.02, what="a busy child")
                first.kill_child(victim.pid)
                settled = wait_until_settled(ids, timeout=90)
            else:
                wait_for(lambda: len(ledger.completed()) >= 12, timeout=30, what="12 bodies")

                # Every child inside a body: none between an early acknowledgement and
                # its body (a message Celery itself gives up), none between a body's
                # return and its record (a kill -9 there is not a tracking fault).
                def every_child_busy() -> bool:
                    now = time.time()
                    return ledger.all_running(
                        first.child_pids(), begun_after=now - 0.25, begun_before=now - 0.03
                    )

                wait_for(every_child_busy, timeout=30, interval=0.01, what="every child busy")
                first.kill_all()
                with worker_process(tmp_path, concurrency=2):
                    # The prefetched messages come back after the visibility timeout.
                    settled = wait_until_settled(ids, timeout=settings.VISIBILITY_TIMEOUT + 90)
        housekeeping_runs = len(runs(log))

    counts = tally(name, ids, ledger, settled=settled, housekeeping_runs=housekeeping_runs)
    report.append(counts)

    assert counts.marked_lost_then_delivered == 0, "a task the broker still held was called lost"
    assert counts.lost == 0, "nothing was lost: every message was still in Redis"
    assert counts.skipped == 0
    assert counts.completed_not_recorded == []
    assert settled, "some tasks never reached a final status"
    recorded = counts.recorded
    if acks_late and kill == "whole_worker":
        # Every message, prefetched or running, comes back: all of them complete.
        assert recorded["completed"] == TASKS
    else:
        # The body that was killed (or those running when the whole worker died,
        # whose messages were already acknowledged) failed as worker_lost;
        # everything else completed.
        assert recorded["completed"] + counts.worker_lost == TASKS
        assert 1 <= counts.worker_lost <= 2
        assert counts.body_completed == recorded["completed"]
