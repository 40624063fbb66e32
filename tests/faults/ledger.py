"""The ground truth of a fault experiment: a file the task bodies append to.

A task body appends ``start <id> <pid> <time>`` when it begins and ``done <id>
<pid> <time>`` when it returns, each line with one ``O_APPEND`` write, so lines
from concurrent processes never interleave and a process killed between the
two leaves a start without a done. What the database recorded is then checked
against what really ran.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def append(path: str, event: str, task_id: str) -> None:
    """Append one line to the ledger at ``path`` (a task body calls this)."""
    line = f"{event} {task_id} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    event: str
    task_id: str
    pid: int
    at: float


@dataclass
class Ledger:
    """One experiment's ledger file."""

    path: Path

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            event, task_id, pid, at = line.split()
            found.append(Entry(event, task_id, int(pid), float(at)))
        return found

    def starts(self) -> Counter[str]:
        """How many times each task's body started."""
        return Counter(e.task_id for e in self.entries() if e.event == "start")

    def completed(self) -> set[str]:
        """The tasks whose body returned."""
        return {e.task_id for e in self.entries() if e.event == "done"}

    def running(self, pids: list[int], *, since: float, until: float | None = None) -> Entry | None:
        """A body begun by one of ``pids`` between ``since`` and ``until`` (epoch seconds),
        and not returned."""
        entries = self.entries()
        done = {(e.task_id, e.pid) for e in entries if e.event == "done"}
        for entry in reversed(entries):
            if (
                entry.event == "start"
                and entry.pid in pids
                and since <= entry.at <= (until if until is not None else entry.at)
                and (entry.task_id, entry.pid) not in done
            ):
                return entry
        return None

    def all_running(self, pids: list[int], *, begun_after: float, begun_before: float) -> bool:
        """Whether every one of ``pids`` is inside a body begun in the given window.

        A body begun a moment ago has had its message accepted (and, acknowledged
        early, acknowledged); one begun not long ago is not about to return. A
        kill in that state leaves no process between an acknowledgement and a
        body, or between a body's return and its record.
        """
        entries = self.entries()
        done = {(e.task_id, e.pid) for e in entries if e.event == "done"}
        latest: dict[int, Entry] = {}
        for entry in entries:
            if entry.event == "start" and entry.pid in pids:
                latest[entry.pid] = entry
        return bool(pids) and all(
            pid in latest
            and (latest[pid].task_id, pid) not in done
            and begun_after <= latest[pid].at <= begun_before
            for pid in pids
        )
