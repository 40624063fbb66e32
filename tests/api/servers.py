"""Real web servers serving the test project, and a small HTTP client for them.

The servers run as child processes on the integration tier's PostgreSQL test
database (like the worker processes of :mod:`tests.live`) with
:mod:`tests.api.server_settings`: a Redis cache that all their processes share.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.live import BROKER_URL, ROOT, worker_env

#: The ports the servers may bind.
PORTS = range(int(os.environ.get("TASKQUEUE_TEST_SERVER_PORT", "16020")), 65536)[:10]

#: How each kind of server is started (``{port}`` is filled in).
COMMANDS: dict[str, list[str]] = {
    # gunicorn's default worker: one request at a time per process.
    "sync": ["-m", "gunicorn", "-k", "sync", "-w", "3", "--timeout", "30"],
    "gthread": ["-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "16"],
    "uvicorn": ["-m", "uvicorn", "--factory", "django.core.asgi:get_asgi_application"],
    "runserver": ["-m", "django", "runserver", "--noreload"],
}


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


class Server:
    """A running server: its port, its log, and requests to it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connect(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain request, read to its end."""
        conn = self.connect(timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def open_stream(self, path: str, headers: dict[str, str], timeout: float = 10.0) -> Stream:
        """Open an event stream and read its first bytes (the server is then serving it)."""
        conn = self.connect(timeout)
        conn.request("GET", path, headers={"Accept": "text/event-stream", **headers})
        return Stream(conn, conn.getresponse())


class Stream:
    """An open response, read line by line."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self.conn = conn
        self.response = response
        self.status = response.status
        self.headers = dict(response.getheaders())

    def json(self) -> Any:
        return json.loads(self.response.read())

    def read_until(self, prefix: bytes) -> bytes:
        """Read lines until one starts with ``prefix``; return it (``b""`` at the end)."""
        while True:
            line = self.response.readline()
            if not line or line.startswith(prefix):
                return line

    def lines(self) -> list[bytes]:
        """Every line left, until the server ends the response."""
        return self.response.read().split(b"\n")

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def web_server(
    kind: str,
    tmp_path: Path,
    *,
    taskqueue: dict[str, Any] | None = None,
    ready_timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[Server]:
    """Start a server of ``kind`` (a key of :data:`COMMANDS`) and wait until it answers.

    It serves the test project with ``taskqueue`` as its ``DJANGO_TASKQUEUE``;
    given ``env`` (with its ``DJANGO_SETTINGS_MODULE``) and ``cwd``, another
    project.
    """
    port = free_port()
    command = [sys.executable, *COMMANDS[kind]]
    if kind == "runserver":
        command.append(f"127.0.0.1:{port}")
    elif kind == "uvicorn":
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        command += ["-b", f"127.0.0.1:{port}", "django.core.wsgi:get_wsgi_application()"]
    if env is None:
        env = worker_env(
            DJANGO_SETTINGS_MODULE="tests.api.server_settings",
            TASKQUEUE_TEST_CACHE=os.environ.get("TASKQUEUE_TEST_CACHE", BROKER_URL),
            TASKQUEUE_TEST_CACHE_PREFIX=f"tq-server-{uuid.uuid4().hex[:8]}",
            TASKQUEUE_TEST_SERVER_SETTINGS=json.dumps(taskqueue or {}),
        )
    log_path = tmp_path / f"{kind}-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited with {process.returncode}:\n{server.log}")
            with contextlib.suppress(OSError):
                server.get("/api/tasks/", timeout=2)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not answer in {ready_timeout}s:\n{server.log}")
            time.sleep(0.2)
        yield server
    finally:
        # A graceful stop would wait for the streams still open: nothing to keep here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
