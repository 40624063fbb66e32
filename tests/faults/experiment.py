"""Counting a fault experiment: the ledger's truth beside what the TaskLog recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tests.faults.ledger import Ledger


@dataclass
class Counts:
    """What one experiment did, by the ledger (ground truth) and by the records."""

    name: str
    submitted: int = 0
    body_started: int = 0
    body_started_twice: int = 0
    body_completed: int = 0
    recorded: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    worker_lost: int = 0
    marked_lost: int = 0
    marked_lost_then_delivered: int = 0
    reopened: int = 0
    skipped: int = 0
    completed_not_recorded: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recorded = ", ".join(f"{k} {v}" for k, v in self.recorded.items())
        extra = "".join(f", {k} {v}" for k, v in self.extra.items())
        return (
            f"{self.name}: submitted {self.submitted}, body started {self.body_started} "
            f"({self.body_started_twice} twice), body completed {self.body_completed}; "
            f"recorded {recorded} (failed as lost {self.lost}, as worker_lost "
            f"{self.worker_lost}); marked lost {self.marked_lost} (of which delivered later "
            f"{self.marked_lost_then_delivered}), reopened {self.reopened}, "
            f"skipped {self.skipped}, "
            f"completed but not recorded completed {len(self.completed_not_recorded)}{extra}"
        )


def tally(name: str, task_ids: list[str], ledger: Ledger, **extra: Any) -> Counts:
    """Count an experiment: the ledger's truth beside the TaskLog rows and their events."""
    from django_taskqueue.models import TaskEventLog, TaskLog
    from django_taskqueue.status import EventType, TaskStatus

    starts = ledger.starts()
    done = ledger.completed()
    logs = {log.celery_task_id: log for log in TaskLog.objects.filter(celery_task_id__in=task_ids)}
    counts = Counts(name=name, submitted=len(task_ids), extra=extra)
    counts.body_started = sum(1 for t in task_ids if starts[t])
    counts.body_started_twice = sum(1 for t in task_ids if starts[t] > 1)
    counts.body_completed = sum(1 for t in task_ids if t in done)
    counts.recorded = dict.fromkeys(TaskStatus.values, 0)
    for log in logs.values():
        counts.recorded[log.status] += 1
    counts.recorded["no row"] = len(task_ids) - len(logs)
    counts.lost = sum(1 for log in logs.values() if log.error_code == "lost")
    counts.worker_lost = sum(1 for log in logs.values() if log.error_code == "worker_lost")
    events = TaskEventLog.objects.filter(task__celery_task_id__in=task_ids)
    marked = {
        str(task_id)
        for task_id, meta in events.filter(event_type=EventType.STALE).values_list(
            "task__celery_task_id", "metadata"
        )
        if isinstance(meta, dict) and meta.get("error_code") == "lost"
    }
    # A delivery refused because the row was final: the worker skipped the body.
    skipped = {
        str(task_id)
        for task_id, meta in events.filter(event_type=EventType.IGNORED).values_list(
            "task__celery_task_id", "metadata"
        )
        if isinstance(meta, dict)
        and meta.get("attempted") == EventType.STARTED
        and meta.get("status") in ("completed", "failed", "cancelled")
    }
    counts.skipped = len(skipped)
    counts.marked_lost = len(marked)
    # Called lost, yet the broker delivered it afterwards (run, or skipped).
    counts.marked_lost_then_delivered = sum(1 for t in marked if starts[t] or t in skipped)
    counts.reopened = (
        events.filter(event_type=EventType.REOPENED).values("task_id").distinct().count()
    )
    counts.completed_not_recorded = sorted(
        t for t in task_ids if t in done and (t not in logs or logs[t].status != "completed")
    )
    return counts


def wait_until_settled(task_ids: list[str], *, timeout: float, quiet: float = 2.0) -> bool:
    """Wait until every task's row is final and stays so for ``quiet`` seconds."""
    from django_taskqueue.models import TaskLog
    from django_taskqueue.status import TERMINAL_STATUSES

    deadline = time.monotonic() + timeout
    settled_since: float | None = None
    while time.monotonic() < deadline:
        final = TaskLog.objects.filter(
            celery_task_id__in=task_ids, status__in=TERMINAL_STATUSES
        ).count()
        if final == len(task_ids):
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= quiet:
                return True
        else:
            settled_since = None
        time.sleep(0.2)
    return False
