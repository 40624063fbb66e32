"""Running the example project from the tests: its own settings, in subprocesses.

The example is a Django project of its own, so it never runs inside the test
settings: each test starts ``example_project/manage.py`` with
``DJANGO_SETTINGS_MODULE=example_project.settings`` and a temporary data folder,
and looks at what it printed, wrote or left running.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "example_project" / "manage.py"

#: What the example needs beyond the test dependencies (the `example` dependency group
#: and the package's extras); without them (the `minimal` env) its tests are skipped.
REQUIRED = ("PIL", "openpyxl", "fpdf", "django_celery_results")
MISSING = [name for name in REQUIRED if importlib.util.find_spec(name) is None]

needs_example_deps = pytest.mark.skipif(
    bool(MISSING) or not MANAGE.exists(),
    # The sdist leaves example_project/ out.
    reason=f"the example or its dependencies are missing: {', '.join(MISSING) or MANAGE}",
)
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process table from /proc"
)


def example_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an example process: its own settings and data folder."""
    env = {
        key: value
        for key, value in os.environ.items()
        # The test settings' variables must not leak into the example.
        if key not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Proc:
    """One process, as /proc/<pid>/stat shows it."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int  # clock ticks after boot: tells a process from a later one with its pid


def read_proc(pid: int) -> Proc | None:
    """The process ``pid``, or ``None`` when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0], int(fields[19]))


def all_procs() -> list[Proc]:
    """Every process on the machine."""
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc is not None:
                procs.append(proc)
    return procs


def descendants(pid: int) -> list[Proc]:
    """The children of ``pid``, their children, and so on."""
    procs = all_procs()
    found: list[Proc] = []
    parents = {pid}
    while True:
        new = [p for p in procs if p.ppid in parents and p not in found]
        if not new:
            return found
        found += new
        parents = {p.pid for p in new}


def still_running(procs: set[Proc]) -> list[Proc]:
    """Those of ``procs`` that still run (the same process, not a zombie)."""
    left = []
    for proc in procs:
        now = read_proc(proc.pid)
        if now is not None and now.start == proc.start and now.state != "Z":
            left.append(now)
    return left


def in_sessions(sids: set[int]) -> list[Proc]:
    """Live processes in any of these sessions: children the demo started and their offspring."""
    return [p for p in all_procs() if p.sid in sids and p.state != "Z"]
