"""``manage.py taskqueue_beat_check``: report periodic tasks that missed a run; exit 1 if any."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_taskqueue.contrib.beat.monitor import DEFAULT_GRACE, missed_runs
from django_taskqueue.housekeeping import parse_duration
from django_taskqueue.management.commands.taskqueue_stats import render_table


class Command(BaseCommand):
    """List enabled periodic tasks whose due run is overdue by more than ``--grace``."""

    help = (
        "Report django-celery-beat periodic tasks that did not run when their schedule says "
        "they should have. Exits with status 1 when any did, for cron and health checks."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace",
            default=f"{int(DEFAULT_GRACE.total_seconds())}s",
            help="How late a run may be: 5m, 90s, 1h (default 300s; keep it longer than "
            "beat's sync interval, 3 minutes by default).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            grace = parse_duration(options["grace"], default_unit="s")
        except ValueError as exc:
            raise CommandError(f"--grace: {exc}") from exc
        missed = missed_runs(grace)
        if options["json"]:
            self.stdout.write(json.dumps([m.as_dict() for m in missed], indent=2))
        elif missed:
            self.stdout.write(
                render_table(
                    ["periodic task", "task", "schedule", "last run", "due", "overdue s"],
                    [
                        [
                            m.name,
                            m.task,
                            m.schedule,
                            f"{m.last_run_at:%Y-%m-%d %H:%M:%S}" if m.last_run_at else "never",
                            f"{m.due_at:%Y-%m-%d %H:%M:%S}",
                            m.overdue_seconds,
                        ]
                        for m in missed
                    ],
                )
            )
        else:
            self.stdout.write(self.style.SUCCESS("No missed runs."))
        if missed:
            raise CommandError(f"{len(missed)} periodic task(s) missed a run", returncode=1)
