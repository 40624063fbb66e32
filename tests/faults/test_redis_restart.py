"""Redis, the broker, restarted in the middle of a run, while housekeeping runs.

With an append-only file (``appendfsync always``) Redis comes back with its
queues and its unacked hash: nothing is lost, and every task must complete.
Without persistence the restart empties it: the messages still waiting are
really gone, and housekeeping must say so (``lost``) of those and only those;
a task that a worker still runs or holds is not lost.
"""

from __future__ import annotations

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
SECONDS = 0.3


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no_persistence"])
def test_redis_restarted_mid_run(
    servers: Any, tmp_path: Path, report: list[Counts], persistent: bool
) -> None:
    redis = servers.redis
    if persistent:
        redis.persistent = True
        redis.restart()
    ledger = Ledger(tmp_path / "ledger")
    name = f"Redis restarted mid-run, {'append-only file' if persistent else 'no persistence'}"
    with (
        housekeeper(tmp_path, interval=0.5, lost_after=1.0, inspect_timeout=0.5) as log,
        worker_process(tmp_path, concurrency=2) as worker,
    ):
        ids = [tasks.ledger.delay(str(ledger.path), SECONDS).id for _ in range(TASKS)]
        wait_for(lambda: len(ledger.completed()) >= 12, timeout=30, what="12 bodies")
        redis.restart()
        settled = wait_until_settled(ids, timeout=settings.VISIBILITY_TIMEOUT + 90)
        reconnected = "Connected to redis://" in worker.log.split("Trying to re-establish", 1)[-1]
    housekeeping_runs = len(runs(log))

    counts = tally(
        name,
        ids,
        ledger,
        settled=settled,
        worker_reconnected=reconnected,
        housekeeping_runs=housekeeping_runs,
    )
    report.append(counts)

    assert counts.marked_lost_then_delivered == 0, "a task the broker still held was called lost"
    assert counts.skipped == 0
    assert counts.completed_not_recorded == []
    assert settled, "some tasks never reached a final status"
    recorded = counts.recorded
    if persistent:
        assert recorded["completed"] == TASKS
        assert counts.lost == 0
    else:
        # What Redis forgot never ran, and is recorded lost; the rest completed.
        assert counts.body_completed == recorded["completed"]
        assert recorded["completed"] + counts.lost == TASKS
        assert counts.lost == TASKS - counts.body_started
