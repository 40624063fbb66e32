"""PostgreSQL stopped for 20 seconds in the middle of a run, while housekeeping runs.

400 tasks (a 0.2 s body each) are published while the database is up, so every
one has its producer's ``pending`` row; a prefork worker of two processes runs
them, and housekeeping (``reconcile_lost`` and ``mark_stale``, every half
second, ``LOST_AFTER`` one second) runs beside it. Once 80 bodies have
completed, the private PostgreSQL is stopped (a real shutdown: the clients'
connections break and new ones are refused) for 20 seconds, then started again
with its data; the worker runs on through the outage, about 200 bodies in it.

What is expected: the outage is the database's, not the tasks'. Every message
is still in Redis or in a worker, every body runs and completes (the ledger
says so), and the records must end saying the same: every task ``completed``,
none left ``pending`` or ``processing``, none failed ``lost`` (its message was
never gone, its body ran) and no body that completed recorded otherwise.
Housekeeping errors while the database is down, and must not, once it is back,
take a start or an end the worker could not write for a lost or stuck task.

Why: a write that fails during an outage is a record lost (docs/production.md,
"When the database goes away"), so a body that started or ended in the outage
leaves its row ``pending`` or ``processing``, and housekeeping then fails it
``lost`` or ``worker_lost`` although it completed. This experiment is the
target of the recorder that keeps those writes until the database is back: it
fails until that recorder exists. How many tasks were called lost on the way
(a ``stale`` event with ``error_code`` ``lost``) and how many stuck
(``worker_lost``) is reported too, not asserted: an end that was put right
later was still wrong for a while.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import tasks
from tests.faults.experiment import Counts, tally, wait_until_settled
from tests.faults.housekeeper import housekeeper, runs
from tests.faults.ledger import Ledger
from tests.live import wait_for, worker_process

pytestmark = pytest.mark.faults

TASKS = 400
SECONDS = 0.2  # per task body: 400 tasks on 2 processes take about 40 s
BEFORE = 80  # bodies completed before the database stops
OUTAGE = 20.0  # seconds the database is down


def _marked(task_ids: list[str], error_code: str) -> int:
    """How many of these tasks had a ``stale`` event with ``error_code`` (put right or not)."""
    from django_taskqueue.models import TaskEventLog
    from django_taskqueue.status import EventType

    events = TaskEventLog.objects.filter(
        task__celery_task_id__in=task_ids, event_type=EventType.STALE
    ).values_list("task__celery_task_id", "metadata")
    return len(
        {
            str(task_id)
            for task_id, meta in events
            if isinstance(meta, dict) and meta.get("error_code") == error_code
        }
    )


@pytest.mark.parametrize("acks_late", [False, True], ids=["plain", "acks_late"])
def test_postgres_stopped_mid_run(
    servers: Any, tmp_path: Path, report: list[Counts], acks_late: bool
) -> None:
    from django.db import connections

    postgres = servers.postgres
    task = tasks.ledger_late if acks_late else tasks.ledger
    ledger = Ledger(tmp_path / "ledger")
    name = f"PostgreSQL stopped {OUTAGE:.0f} s mid-run, {'acks_late' if acks_late else 'plain'}"
    began = time.monotonic()
    with housekeeper(tmp_path, interval=0.5, lost_after=1.0, inspect_timeout=0.5) as log:
        with worker_process(tmp_path, concurrency=2):
            ids = [task.delay(str(ledger.path), SECONDS).id for _ in range(TASKS)]
            wait_for(lambda: len(ledger.completed()) >= BEFORE, timeout=60, what=f"{BEFORE} bodies")
            completed_before = len(ledger.completed())
            down = time.monotonic()
            postgres.stop()
            try:
                assert not postgres.running
                time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
            finally:
                # Up again even if the outage failed: the servers fixture and the
                # test database's flush need it.
                if not postgres.running:
                    postgres.start()
                outage = time.monotonic() - down
                completed_during = len(ledger.completed()) - completed_before
                # The test process's own connection died with the server.
                connections.close_all()
            settled = wait_until_settled(ids, timeout=120)
        housekeeping = runs(log)
    took = time.monotonic() - began

    counts = tally(
        name,
        ids,
        ledger,
        settled=settled,
        completed_before_outage=completed_before,
        completed_during_outage=completed_during,
        outage=f"{outage:.1f}s",
        housekeeping_runs=len(housekeeping),
        housekeeping_errors=sum(1 for run in housekeeping if "error" in run),
        marked_worker_lost=_marked(ids, "worker_lost"),
        took=f"{took:.0f}s",
    )
    report.append(counts)

    assert completed_during > 0, "no body completed while the database was down"
    assert counts.completed_not_recorded == [], "a body that completed is recorded otherwise"
    assert counts.lost == 0, "nothing was lost: every message was in Redis or a worker"
    recorded = counts.recorded
    assert recorded["processing"] == recorded["pending"] == recorded["no row"] == 0
    assert recorded["completed"] == TASKS
    assert counts.body_completed == TASKS
    assert settled, "some tasks never reached a final status"
