"""``manage.py taskqueue_stats``: counts, failure rate and slowest task types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_taskqueue import housekeeping
from django_taskqueue.management.arguments import int_between
from django_taskqueue.models import TaskLog

#: The largest --top.
MAX_TOP = 1000


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and rows for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


class Command(BaseCommand):
    """Show task counts per status, and the failure rate and slowest types of a window."""

    help = (
        "Show task counts per status (all time), and for the last --window: tasks created "
        "and finished, the failure rate, the slowest task types and the most frequent errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--window", default="24h", help="How far back to look: 24h, 7d, 90m (default 24h)."
        )
        parser.add_argument(
            "--top",
            type=int_between(1, MAX_TOP),
            default=5,
            help=f"Rows in the top lists (1 to {MAX_TOP}, default 5).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            window = housekeeping.parse_duration(options["window"], default_unit="h")
        except ValueError as exc:
            raise CommandError(f"--window: {exc}") from exc
        report = housekeeping.build_report(window, top=options["top"])
        report["all_time"] = TaskLog.objects.status_counts()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
            return
        statuses = [s for s in report["all_time"] if s != "total"]
        self.stdout.write(
            render_table(
                ["status", "all time", f"created (last {options['window']})"],
                [[s, report["all_time"][s], report["created"][s]] for s in statuses]
                + [["total", report["all_time"]["total"], report["created"]["total"]]],
            )
        )
        rate = report["failure_rate"]
        self.stdout.write("")
        self.stdout.write(
            "Finished in the window: "
            + ", ".join(f"{k} {v}" for k, v in report["finished"].items())
            + f"; failure rate {'n/a' if rate is None else f'{rate * 100:.1f}%'}; "
            f"active now {report['active']}, stuck now {report['stuck']}"
        )
        if report["slowest"]:
            self.stdout.write("")
            self.stdout.write(
                render_table(
                    ["slowest type", "runs", "mean s", "max s"],
                    [
                        [r["type"], r["count"], r["mean_seconds"], r["max_seconds"]]
                        for r in report["slowest"]
                    ],
                )
            )
        if report["errors"]:
            self.stdout.write("")
            self.stdout.write(
                render_table(
                    ["error code", "failures"],
                    [[r["error_code"], r["count"]] for r in report["errors"]],
                )
            )
