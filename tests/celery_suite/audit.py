"""After a tracked run of Celery's suite: does every row say what Celery stored?

For each TaskLog row the result backend the suite used (``TEST_BACKEND``) is
asked for the task's state. Celery keeps no state for some tasks (an ignored
result, a message never published, an expired key): those are counted, not
compared. A row must also not be left ``processing`` (the suite waits for every
task it starts) and its retries must match Celery's ``retries``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: The TaskLog status each of Celery's final states is recorded as.
EXPECTED = {
    "SUCCESS": {"completed"},
    "FAILURE": {"failed"},
    "REVOKED": {"cancelled", "failed"},  # expired messages are failed, with error_code "expired"
    "REJECTED": {"failed"},
    "RETRY": {"retrying"},
}


@dataclass
class Findings:
    rows: int = 0
    compared: int = 0
    no_state: Counter[str] = field(default_factory=Counter)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    processing: list[dict[str, Any]] = field(default_factory=list)
    by_status: Counter[str] = field(default_factory=Counter)
    #: Rows of a canvas whose root (Celery's root id) has no row: the canvas cannot be walked.
    rootless: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.processing and not self.rootless

    def summary(self) -> list[str]:
        lines = [
            f"audit: {self.rows} rows, {self.compared} compared with Celery's stored state; "
            f"statuses {dict(self.by_status)}",
            f"audit: no state stored by Celery for {sum(self.no_state.values())} rows "
            f"({dict(self.no_state)})",
            f"audit: {len(self.mismatches)} rows disagree with Celery, "
            f"{len(self.processing)} left processing, {len(self.rootless)} cannot reach their root",
        ]
        for item in (self.mismatches + self.processing + self.rootless)[:20]:
            lines.append(f"audit:   {item}")
        return lines


def audit(report: str | None = None) -> Findings:
    from celery import Celery
    from django.db import connections

    from django_taskqueue.models import TaskLog

    connections.close_all()
    app = Celery("audit", backend=os.environ.get("TEST_BACKEND", "redis://"), set_as_current=False)
    findings = Findings()
    rows = TaskLog.objects.values_list(
        "celery_task_id", "task_name", "status", "error_code", "attempt"
    )
    for celery_id, name, status, code, attempt in rows.iterator():
        findings.rows += 1
        findings.by_status[status] += 1
        meta = app.backend.get_task_meta(celery_id)
        state = meta.get("status")
        row = {"id": celery_id, "task": name, "status": status, "error_code": code, "celery": state}
        if status == "processing" and state not in ("STARTED", "PENDING"):
            findings.processing.append(row)
            continue
        if state not in EXPECTED:
            findings.no_state[state or "none"] += 1
            if status == "processing":
                findings.processing.append(row)
            continue
        findings.compared += 1
        retries = meta.get("retries")
        if status not in EXPECTED[state]:
            findings.mismatches.append(row)
        elif retries is not None and state == "SUCCESS" and attempt != retries:
            findings.mismatches.append({**row, "attempt": attempt, "celery_retries": retries})
    app.close()
    roots = TaskLog.objects.values("celery_task_id")
    # Pending rows were never published (Celery's unit tests replace send_task with a
    # mock and pass made-up ids, e.g. root_id="root_id"): nothing of theirs ran.
    orphans = (
        TaskLog.objects.exclude(celery_root_id="")
        .exclude(status="pending")
        .exclude(celery_root_id__in=roots)
        .values_list("celery_task_id", "task_name", "celery_root_id")
    )
    for celery_id, name, root in orphans.iterator():
        findings.rootless.append({"id": celery_id, "task": name, "root": root})
    if report:
        with open(report, "w") as out:
            json.dump(
                {
                    "rows": findings.rows,
                    "compared": findings.compared,
                    "no_state": findings.no_state,
                    "mismatches": findings.mismatches,
                    "processing": findings.processing,
                    "rootless": findings.rootless,
                    "by_status": findings.by_status,
                },
                out,
                indent=1,
            )
    return findings
