"""One message delivered twice while its first copy runs: is the record truthful?

Two ways a worker gets the same task id twice at once, both ordinary on Redis:

* **published twice**: the producer publishes the same id again (a retried
  publish, a re-applied signature) while the first copy runs. The second
  publish is recorded on the id's row (``republished``).
* **redelivered**: an ``acks_late`` body outlives Redis's visibility timeout,
  so the transport gives the unacknowledged message back and the worker runs
  it a second time beside the first. The worker here gets a two-second
  visibility timeout and the bodies take three and a half.

Each experiment runs its ids on one worker with a process for every copy, so
both copies of an id run at once; the second copy always ends last. The record
is truthful when every body that ran has a ``started`` event, no start was
``ignored``, nothing is left ``processing``, and the row's final status is the
outcome of the body that ended last.

Three ids each time: both copies complete; the first copy raises and the
second completes; the first completes and the second raises. Neither copy's
end may be recorded as ``ignored``: both bodies ran to their end.

Each run names itself in its ``started`` event and its end (``run``): the end
that arrives after another run's is recorded after it, with a ``reopened``
event keeping the earlier outcome. (Before runs were named, the row kept the
outcome of the copy that ended first and the other end was ``ignored``.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import tasks
from tests.faults.experiment import wait_until_settled
from tests.faults.ledger import Ledger
from tests.live import wait_for, worker_env, worker_process

pytestmark = pytest.mark.faults

#: Which run of each id raises (0: none).
OUTCOMES = {"both complete": 0, "first fails": 1, "second fails": 2}
PUBLISHED_SECONDS = 1.5
# Redelivery: the worker's visibility timeout, and a body that outlives it.
VISIBILITY_TIMEOUT = 2
REDELIVERED_SECONDS = 3.5


def _findings(task_id: str, ledger: Ledger) -> dict[str, Any]:
    """What ran (the ledger) beside what was recorded (the row and its events)."""
    from django_taskqueue.models import TaskEventLog, TaskLog
    from django_taskqueue.status import EventType

    entries = [e for e in ledger.entries() if e.task_id == task_id]
    ends = sorted((e for e in entries if e.event in ("done", "failed")), key=lambda e: e.at)
    events = list(TaskEventLog.objects.filter(task__celery_task_id=task_id).order_by("id"))
    ignored = [e for e in events if e.event_type == EventType.IGNORED]
    return {
        "bodies": sum(1 for e in entries if e.event == "start"),
        "ends": [e.event for e in ends],
        "last_body": {"done": "completed", "failed": "failed"}[ends[-1].event] if ends else None,
        "status": TaskLog.objects.get(celery_task_id=task_id).status,
        "started_events": sum(1 for e in events if e.event_type == EventType.STARTED),
        "ignored_starts": sum(1 for e in ignored if e.metadata.get("attempted") == "started"),
        "ignored_ends": [str(e.metadata.get("attempted")) for e in ignored],
        "trail": [e.event_type for e in events],
    }


@pytest.mark.parametrize("how", ["published_twice", "redelivered"])
def test_a_message_delivered_twice_while_it_runs(
    servers: Any, tmp_path: Path, report: list[Any], how: str
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    path = str(ledger.path)
    env = worker_env(TASKQUEUE_FAULTS_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))
    with worker_process(tmp_path, concurrency=2 * len(OUTCOMES), env=env):
        ids: dict[str, str] = {}
        if how == "published_twice":
            for outcome, fail_run in OUTCOMES.items():
                args = (path, PUBLISHED_SECONDS, fail_run)
                ids[outcome] = tasks.ledger_run.apply_async(args).id
            # The first copies run: publish each id again.
            wait_for(lambda: len(ledger.starts()) == len(ids), timeout=30, what="first copies")
            for outcome, fail_run in OUTCOMES.items():
                args = (path, PUBLISHED_SECONDS, fail_run)
                tasks.ledger_run.apply_async(args, task_id=ids[outcome])
        else:
            for outcome, fail_run in OUTCOMES.items():
                args = (path, REDELIVERED_SECONDS, fail_run)
                ids[outcome] = tasks.ledger_run.apply_async(args).id

        def every_body_ended() -> bool:
            entries = ledger.entries()
            ends = [e.task_id for e in entries if e.event in ("done", "failed")]
            starts = [e.task_id for e in entries if e.event == "start"]
            return len(starts) >= 2 * len(ids) and len(ends) == len(starts)

        wait_for(every_body_ended, timeout=60, interval=0.1, what="both copies of every id")
        # The last body's record is written a moment after its ledger line.
        settled = wait_until_settled(list(ids.values()), timeout=30, quiet=1.5)
        # A further delivery (a third copy) would show in the ledger by now.
        time.sleep(VISIBILITY_TIMEOUT)

    found = {outcome: _findings(task_id, ledger) for outcome, task_id in ids.items()}
    for outcome, seen in found.items():
        report.append(
            f"delivered twice ({how.replace('_', ' ')}), {outcome}: bodies {seen['bodies']} "
            f"(ended {', '.join(seen['ends'])}); recorded {seen['status']} (last body "
            f"{seen['last_body']}); started events {seen['started_events']}; ignored "
            f"{', '.join(seen['ignored_ends']) or 'nothing'}; events {' > '.join(seen['trail'])}"
        )

    assert settled, "a row was left active"
    for outcome, seen in found.items():
        assert seen["bodies"] == 2, f"{outcome}: the experiment needs two deliveries"
        assert seen["started_events"] == seen["bodies"], f"{outcome}: a run has no start"
        assert seen["ignored_starts"] == 0, f"{outcome}: a start was ignored while its body ran"
        assert seen["ignored_ends"] == [], f"{outcome}: an end was ignored though its body ran"
        assert seen["status"] == seen["last_body"], (
            f"{outcome}: recorded {seen['status']}, the last body {seen['last_body']}"
        )
