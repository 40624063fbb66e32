"""What the demo commands share: setting up the data and the command lines of the children."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import current_app as celery_app
from django.conf import settings
from django.core.management import call_command

from jobs import sampledata

#: ``example_project/``: the folder with manage.py, the working directory of the children.
PROJECT_DIR = Path(__file__).resolve().parent.parent


def prepare(verbosity: int = 0) -> tuple[dict[str, int], dict[str, list[Path]]]:
    """Migrate, then create the demo users and the sample files that are missing."""
    call_command("migrate", interactive=False, verbosity=verbosity)
    return sampledata.ensure_users(), sampledata.ensure_samples()


def reset_broadcast_state() -> None:
    """Forget the broadcast bindings of processes that are gone (the filesystem broker only).

    The filesystem transport keeps who listens to a broadcast (a worker's remote-control
    queue, Flower's event queue) in files and never drops a listener that went away, so
    every later ping, revoke or event would leave a message for it that nobody reads.
    Run before the worker starts; the task queues themselves are left alone, so tasks
    still waiting from a previous run are not lost.
    """
    if not settings.CELERY_BROKER_URL.startswith("filesystem:"):
        return
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    control = Path(options["control_folder"])
    for exchange in ("celery.pidbox", "reply.celery.pidbox", "celeryev"):
        (control / f"{exchange}.exchange").unlink(missing_ok=True)
    for path in Path(options["data_folder_in"]).glob("*.msg"):
        # <time>_<uuid>.<queue>.msg
        queue = path.name.split(".", 1)[-1].removesuffix(".msg")
        if queue.endswith("pidbox") or queue.startswith("celeryev."):
            path.unlink(missing_ok=True)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the children: this one, pinned to the same settings and data."""
    env = dict(os.environ)
    paths = [str(PROJECT_DIR)]
    spec = importlib.util.find_spec("django_taskqueue")
    if spec is not None and spec.origin:
        # The package as this process found it (a checkout that is not installed, too).
        paths.append(str(Path(spec.origin).resolve().parent.parent))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "example_project.settings"),
        EXAMPLE_DATA_DIR=str(settings.DATA_DIR),
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def celery_argv(*args: str) -> list[str]:
    """``python -m celery -A example_project ...`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "example_project", *args]


def worker_argv(hostname: str, concurrency: int = 2, loglevel: str = "INFO") -> list[str]:
    """A prefork worker consuming the three queues (prefork: time limits need it)."""
    return celery_argv(
        "worker",
        "-P",
        "prefork",
        "-c",
        str(concurrency),
        "-Q",
        ",".join(settings.EXAMPLE_QUEUES),
        "-n",
        hostname,
        "-l",
        loglevel,
        # Gossip and mingle only add broker traffic with a single worker.
        "--without-gossip",
        "--without-mingle",
    )


def beat_argv(loglevel: str = "INFO") -> list[str]:
    """Celery beat, with the scheduler the settings choose (the database one if installed)."""
    argv = celery_argv("beat", "-l", loglevel)
    if not settings.HAS_BEAT:
        argv += ["-s", str(settings.CELERY_BEAT_SCHEDULE_FILENAME)]
    return argv


def web_argv(host: str, port: int) -> list[str]:
    """Django's development server, without the autoreloader (which forks a second process)."""
    return [sys.executable, "manage.py", "runserver", "--noreload", f"{host}:{port}"]


def flower_argv(port: int) -> list[str]:
    """Flower, the Celery monitor (the ``flower`` dependency group)."""
    return celery_argv("flower", f"--port={port}", "--address=127.0.0.1")


def new_hostname(prefix: str = "demo") -> str:
    """A worker node name nobody else uses (so a ping reaches this worker only)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"


def wait_for_worker(hostname: str, timeout: float, alive: Any = None) -> bool:
    """Ping ``hostname`` until it answers (broadcast works on every broker the example uses)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        if celery_app.control.ping(destination=[hostname], timeout=0.5):
            return True
    return False


def wait_for_port(host: str, port: int, timeout: float, alive: Any = None) -> bool:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0
