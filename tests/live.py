"""Real ``celery worker`` processes for the integration tier.

The integration tier runs with ``TASKQUEUE_TEST_DB=postgres``: pytest-django
creates the PostgreSQL test database, and each worker process started here is
pointed at it (``TASKQUEUE_WORKER_DB_NAME``) and at the Redis broker in
``TASKQUEUE_TEST_BROKER``. Tests that use a worker need ``transactional_db`` so
that what they write is committed and visible to the worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import connection

if TYPE_CHECKING:
    from django_taskqueue.models import TaskLog

ROOT = Path(__file__).resolve().parent.parent
#: The Redis database of the worker tests (tox.ini's integration env passes the caller's
#: TASKQUEUE_TEST_BROKER on; the schema and example tests use this one too).
BROKER_URL = os.environ.get("TASKQUEUE_TEST_BROKER", "redis://127.0.0.1:6379/15")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_finished(celery_task_id: str, timeout: float = 30.0) -> TaskLog:
    """Wait until the task's row reaches a terminal status; return it."""
    from django_taskqueue.models import TaskLog

    def get() -> TaskLog | None:
        return TaskLog.objects.filter(
            celery_task_id=celery_task_id, status__in=("completed", "failed", "cancelled")
        ).first()

    log: TaskLog = wait_for(get, timeout, what=f"task {celery_task_id} to finish")
    return log


class WorkerProcess:
    """A ``celery worker`` child process and its log file."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, hostname: str) -> None:
        self.process = process
        self.log_path = log_path
        self.hostname = hostname

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def child_pids(self) -> list[int]:
        """Pids of the pool's child processes (prefork)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self) -> None:
        """SIGKILL the main process and its pool at once: nothing is left to notice."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill_child(self, pid: int) -> None:
        """SIGKILL one pool child; the main process notices and goes on."""
        if pid not in self.child_pids():
            raise AssertionError(f"{pid} is not a pool child of {self.hostname}")
        os.kill(pid, signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process: the same settings, the test database."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        # The fault suite runs under its own settings module (tests.faults.settings).
        DJANGO_SETTINGS_MODULE=str(settings.SETTINGS_MODULE or "tests.settings"),
        TASKQUEUE_TEST_DB="postgres",
        TASKQUEUE_WORKER_DB_NAME=str(connection.settings_dict["NAME"]),
        TASKQUEUE_TEST_BROKER=BROKER_URL,
        TASKQUEUE_TEST_RESULT_BACKEND=os.environ.get("TASKQUEUE_TEST_RESULT_BACKEND", BROKER_URL),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        CELERY_SKIP_CHECKS="1",
    )
    env.update(extra)
    return env


def spawn(
    command: list[str], log_path: Path, env: dict[str, str] | None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start a Celery (or other Django) process in its own session, output to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env or worker_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def worker_process(
    tmp_path: Path,
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    queues: str = "celery",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    control_app: Any = None,
    app_module: str = "tests.celery_app",
    cwd: Path = ROOT,
) -> Iterator[WorkerProcess]:
    """Start ``celery -A tests.celery_app worker`` and wait until it answers a ping.

    ``control_app`` pings it: a Celery app on the worker's broker (the test
    project's app by default). ``app_module`` and ``cwd`` (with ``env``) run
    the worker of another project instead: ``celery -A <app_module>`` in ``cwd``.
    """
    from tests.celery_app import app as default_app

    app = control_app or default_app

    hostname = f"tq-{uuid.uuid4().hex[:8]}@localhost"
    log_path = tmp_path / f"worker-{hostname.split('@', maxsplit=1)[0]}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "-n",
        hostname,
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        *extra_args,
    ]
    process = spawn(command, log_path, env, cwd)
    worker = WorkerProcess(process, log_path, hostname)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{worker.log}")
            replies = app.control.ping(destination=[hostname], timeout=0.5)
            if replies:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker did not answer a ping in {ready_timeout}s:\n{worker.log}"
                )
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def beat_process(
    tmp_path: Path,
    *,
    scheduler: str = "django_celery_beat.schedulers:DatabaseScheduler",
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[WorkerProcess]:
    """Start ``celery -A tests.celery_app beat`` (django-celery-beat's scheduler by default).

    Beat wakes up at least every second (``--max-interval 1``), so entries on
    short intervals fire on time; its pid and schedule files stay in ``tmp_path``.
    """
    name = f"beat-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.celery_app",
        "beat",
        "-S",
        scheduler,
        "-l",
        "INFO",
        "--max-interval",
        "1",
        "--pidfile",
        str(tmp_path / f"{name}.pid"),
        "-s",
        str(tmp_path / f"{name}-schedule"),
        *extra_args,
    ]
    process = spawn(command, log_path, env)
    beat = WorkerProcess(process, log_path, name)
    try:
        deadline = time.monotonic() + ready_timeout
        while "beat: Starting" not in beat.log:
            if process.poll() is not None:
                raise RuntimeError(f"beat exited with {process.returncode}:\n{beat.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"beat did not start in {ready_timeout}s:\n{beat.log}")
            time.sleep(0.1)
        yield beat
    finally:
        beat.stop()
