"""``manage.py taskqueue_check_stuck``: list tasks stuck in ``processing``; exit 1 if any."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from django_taskqueue import housekeeping
from django_taskqueue.management.arguments import int_between
from django_taskqueue.management.commands.taskqueue_stats import render_table

#: The largest --limit.
MAX_LIMIT = 1_000_000


class Command(BaseCommand):
    """Report tasks whose heartbeat is older than their threshold; ``--fix`` applies the policy."""

    help = (
        "List tasks stuck in processing (no heartbeat for longer than their stale_after or "
        "STALE_AFTER). Exits with status 1 when there are any, for cron and health checks. "
        "--fix fails them as worker_lost (or re-queues idempotent acks_late tasks)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--fix", action="store_true", help="Apply the mark_stale policy to what is found."
        )
        parser.add_argument("--json", action="store_true", help="Print JSON.")
        parser.add_argument(
            "--limit",
            type=int_between(1, MAX_LIMIT),
            default=1000,
            help=f"At most this many tasks (1 to {MAX_LIMIT}, default 1000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        stale = housekeeping.find_stale(now, limit=options["limit"])
        rows = [
            {
                "id": str(log.pk),
                "celery_task_id": log.celery_task_id,
                "task_name": log.task_name,
                "worker": log.worker,
                "last_seen": (log.heartbeat_at or log.started_at or now).isoformat(),
                "silent_seconds": round(
                    (now - (log.heartbeat_at or log.started_at or now)).total_seconds(), 1
                ),
                "threshold_seconds": threshold.total_seconds(),
            }
            for log, threshold in stale
        ]
        fixed: dict[str, Any] | None = None
        if options["fix"] and rows:
            fixed = housekeeping.mark_stale_tasks(now=now, limit=options["limit"]).as_dict()
        if options["json"]:
            self.stdout.write(json.dumps({"stuck": rows, "fixed": fixed}, indent=2))
        elif rows:
            self.stdout.write(
                render_table(
                    ["celery id", "task", "worker", "silent s", "threshold s"],
                    [
                        [
                            r["celery_task_id"],
                            r["task_name"],
                            r["worker"],
                            r["silent_seconds"],
                            r["threshold_seconds"],
                        ]
                        for r in rows
                    ],
                )
            )
            if fixed is not None:
                self.stdout.write(
                    f"Fixed: {len(fixed['failed'])} failed as worker_lost, "
                    f"{len(fixed['requeued'])} re-queued."
                )
        else:
            self.stdout.write(self.style.SUCCESS("No stuck tasks."))
        if rows:
            raise CommandError(f"{len(rows)} stuck task(s)", returncode=1)
