"""``manage.py taskqueue_cleanup``: delete finished tasks past their retention age."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_taskqueue import housekeeping
from django_taskqueue.conf import RETENTION_STATUSES
from django_taskqueue.exceptions import CleanupIncomplete
from django_taskqueue.management.arguments import int_between

#: The largest --batch-size (the range the RETENTION_BATCH_SIZE check allows).
MAX_BATCH_SIZE = 10_000
#: The largest --max-batches.
MAX_BATCHES = 1_000_000
#: The longest --lock-timeout (a day): PostgreSQL's lock_timeout takes milliseconds.
MAX_LOCK_TIMEOUT = 86_400.0


class Command(BaseCommand):
    """Delete completed, failed and cancelled tasks older than ``RETENTION``, in batches.

    Exits non-zero (a ``CommandError``) when the run could not finish: a batch
    failed or timed out waiting for a lock, or due tasks were left behind.
    Stopping at ``--max-batches`` is not a failure.
    """

    help = (
        "Delete finished tasks (with their progress history and events) older than their "
        "retention age, in short batched transactions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only count what would be deleted.",
        )
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="One age for every status instead of RETENTION: 30d, 12h, 90m, 2w "
            "(a bare number is days).",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=RETENTION_STATUSES,
            help="Only this terminal status (repeatable).",
        )
        parser.add_argument(
            "--batch-size",
            type=int_between(1, MAX_BATCH_SIZE),
            help=f"Tasks per transaction, 1 to {MAX_BATCH_SIZE} (RETENTION_BATCH_SIZE).",
        )
        parser.add_argument(
            "--max-batches",
            type=int_between(1, MAX_BATCHES),
            help="Stop after this many batches (resume next run).",
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="How long a batch waits for its turn (another cleanup running) and for row "
            "locks before the run gives up (default 60; 0 waits for ever).",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = None
        if options["older_than"]:
            try:
                older_than = housekeeping.parse_duration(options["older_than"])
            except ValueError as exc:
                raise CommandError(f"--older-than: {exc}") from exc
        if not 0 <= options["lock_timeout"] <= MAX_LOCK_TIMEOUT:
            raise CommandError(
                f"--lock-timeout must be 0 (wait for ever) to {MAX_LOCK_TIMEOUT:g} seconds"
            )
        due = housekeeping.purge_finished(
            older_than=older_than, statuses=options["status"], dry_run=True
        )
        if not due.cutoffs:
            self.stdout.write("Nothing to do: every status is kept forever (RETENTION).")
            return
        for status, cutoff in due.cutoffs.items():
            self.stdout.write(
                f"{status}: {due.tasks[status]} finished before {cutoff:%Y-%m-%d %H:%M:%S %Z}"
            )
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {due.total} tasks would be deleted.")
            return
        bar = _ProgressBar(self.stdout, due.total, enabled=not options["no_progress"])
        try:
            result = housekeeping.purge_finished(
                older_than=older_than,
                statuses=options["status"],
                batch_size=options["batch_size"],
                max_batches=options["max_batches"],
                on_batch=lambda batch: bar.advance(batch.tasks),
                lock_timeout=options["lock_timeout"] or None,
            )
        except CleanupIncomplete as exc:
            bar.finish()
            raise CommandError(str(exc)) from exc
        bar.finish()
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {result.total} tasks, {result.progress} progress rows and "
                f"{result.events} events in {result.batches} batches "
                f"(longest transaction {result.longest_batch * 1000:.0f} ms)."
            )
        )
        if not result.complete:
            self.stdout.write(
                f"Stopped after {result.batches} batches (--max-batches): "
                f"{result.remaining} due tasks remain for the next run."
            )


class _ProgressBar:
    """A one-line bar on a terminal; a line per 10% step elsewhere (logs, CI)."""

    width = 30

    def __init__(self, out: Any, total: int, *, enabled: bool) -> None:
        self.out = out
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and total > 0
        stream = getattr(out, "_out", out)
        self.tty = bool(getattr(stream, "isatty", lambda: False)()) and stream is sys.stdout
        self._last_step = -1

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        fraction = min(self.done / self.total, 1.0)
        if self.tty:
            filled = int(fraction * self.width)
            self.out.write(
                f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}% "
                f"{self.done}/{self.total}",
                ending="",
            )
            self.out.flush()
            return
        step = int(fraction * 10)
        if step > self._last_step:
            self._last_step = step
            self.out.write(f"deleted {self.done}/{self.total} ({fraction * 100:.0f}%)")

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.out.write("")
