"""Child processes of the demo (worker, beat, web server, Flower), stopped without orphans.

Each child runs in a session (and process group) of its own, so a Ctrl-C in the terminal
reaches only the demo, which then stops the children in order: SIGTERM to each child
(a Celery worker finishes its running tasks: a warm shutdown), a wait, then SIGKILL to
whatever is left in the child's process group, pool processes included. On Linux each
child also asks the kernel for SIGTERM should the demo itself die without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One child process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.process.pid

    def running(self) -> bool:
        """Whether the child has not exited yet."""
        return self.process.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of the child's process group is left."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def tail(self, lines: int = 20) -> str:
        """The end of the child's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Children:
    """The demo's children, started in order and stopped in reverse order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    _starting: bool = False
    _pending: BaseException | None = None

    def interrupt(self, exc: BaseException) -> None:
        """Raise ``exc`` now (from a signal handler), or once the child being started is known."""
        if self._starting:
            self._pending = exc
        else:
            raise exc

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path) -> Child:
        """Start ``argv`` in a new session, its output going to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        self._starting = True
        try:
            child = self._spawn(name, argv, env=env, cwd=cwd, log_path=log_path)
        finally:
            self._starting = False
        if self._pending is not None:
            raise self._pending
        return child

    def _spawn(
        self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path
    ) -> Child:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads run yet in the demo)
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        """The children that have exited on their own."""
        return [child for child in self.children if not child.running()]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every child and every process in their groups; return when all are gone."""
        for child in reversed(self.children):
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(remaining)
        for child in self.children:
            # The leader may be gone while its pool processes linger (or the leader did
            # not stop in time): end the whole group.
            if child.running() or child.group_alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
            end = time.monotonic() + 5
            while child.group_alive() and time.monotonic() < end:
                time.sleep(0.05)
