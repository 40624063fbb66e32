"""A live terminal view of tracked tasks, read from their TaskLog rows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.db import close_old_connections

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES, TaskStatus

_BAR_WIDTH = 24
_COLOURS = {
    TaskStatus.PENDING: "\x1b[2m",
    TaskStatus.PROCESSING: "\x1b[36m",
    TaskStatus.RETRYING: "\x1b[33m",
    TaskStatus.COMPLETED: "\x1b[32m",
    TaskStatus.FAILED: "\x1b[31m",
    TaskStatus.CANCELLED: "\x1b[35m",
}
_RESET = "\x1b[0m"


class Stream(Protocol):
    """Where the view is drawn: a text stream."""

    def write(self, text: str, /) -> int:
        """Write ``text``."""

    def flush(self) -> None:
        """Flush what was written."""


@dataclass(frozen=True)
class Summary:
    """How the watched tasks ended."""

    counts: dict[str, int]
    seconds: float
    finished: bool

    def line(self) -> str:
        """One line for the terminal, e.g. ``demo tasks finished: 12 completed, 1 failed``."""
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        if self.finished:
            return f"demo tasks finished in {self.seconds:.1f}s: {parts}"
        return f"demo tasks not finished after {self.seconds:.1f}s: {parts}"


def _label(log: TaskLog) -> str:
    name = log.task_name.rsplit(".", 1)[-1]
    target = log.file_name
    if not target and log.args and isinstance(log.args[0], str) and os.sep in log.args[0]:
        # Canvas members are sent with .s(path): no file fields, but the path is the argument.
        target = os.path.basename(log.args[0])
    return f"{name}({target})" if target else name


def render_line(celery_task_id: str, log: TaskLog | None, colour: bool) -> str:
    """One task as a line: name, status, a progress bar and the last message."""
    if log is None:
        return f"  {'(not sent yet)':<36} {'waiting':<10} {celery_task_id[:8]}"
    filled = round(_BAR_WIDTH * log.progress / 100)
    bar = "#" * filled + "." * (_BAR_WIDTH - filled)
    status = f"{log.status:<10}"
    if colour:
        status = f"{_COLOURS.get(log.status, '')}{status}{_RESET}"
    detail = log.progress_message
    if log.status == TaskStatus.FAILED:
        detail = f"{log.error_code}: {log.error_message}"
    elif log.status == TaskStatus.RETRYING:
        detail = f"retry {log.retry_count}: {log.error_message}"
    return f"  {_label(log)[:36]:<36} {status} [{bar}] {log.progress:>3}%  {detail}"


def watch(
    celery_task_ids: Sequence[str],
    out: Stream,
    *,
    tty: bool,
    timeout: float | None = None,
    interval: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> Summary:
    """Show the tasks until all have finished (or ``timeout`` seconds pass).

    On a terminal the block of lines is redrawn in place; otherwise (a log file, a
    pipe) a line is printed whenever a task's status, progress or message changes.
    """
    started = time.monotonic()
    shown: dict[str, str] = {}
    drawn = 0
    while True:
        rows = {
            log.celery_task_id: log
            for log in TaskLog.objects.filter(celery_task_id__in=list(celery_task_ids))
        }
        # The web server and the worker write too: don't keep a stale snapshot open.
        close_old_connections()
        lines = [render_line(cid, rows.get(cid), colour=tty) for cid in celery_task_ids]
        if tty:
            if drawn:
                out.write(f"\x1b[{drawn}A")
            for line in lines:
                out.write(f"\x1b[2K{line}\n")
            drawn = len(lines)
        else:
            for cid, line in zip(celery_task_ids, lines, strict=True):
                if shown.get(cid) != line:
                    out.write(line.rstrip() + "\n")
                    shown[cid] = line
        out.flush()
        counts: dict[str, int] = {}
        for cid in celery_task_ids:
            log = rows.get(cid)
            status = log.status if log is not None else "waiting"
            counts[status] = counts.get(status, 0) + 1
        finished = all(
            rows.get(cid) is not None and rows[cid].status in TERMINAL_STATUSES
            for cid in celery_task_ids
        )
        seconds = time.monotonic() - started
        if finished or (timeout is not None and seconds > timeout) or not keep_going():
            return Summary(counts, seconds, finished)
        time.sleep(interval)
