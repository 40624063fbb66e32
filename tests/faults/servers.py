"""Private PostgreSQL and Redis servers that the fault suite may stop, freeze and restart.

Each runs from the machine's own binaries (Debian's ``/usr/lib/postgresql/*/bin``
and ``redis-server``) in a temporary directory, in a process group of its own,
so that ``freeze`` (SIGSTOP) and ``thaw`` (SIGCONT) reach every backend process.
PostgreSQL refuses to run as root: under root, its processes run as the
``postgres`` user of the PostgreSQL package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


class ServerError(RuntimeError):
    """A private server could not be set up or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    """A server process in its own process group."""

    name = "server"

    def __init__(self, port: int, root: Path) -> None:
        self.port = port
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, command: list[str], **options: Any) -> None:
        if _listening(self.port):
            raise ServerError(f"port {self.port} is taken: cannot start the private {self.name}")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options
            )
        deadline = time.monotonic() + 30
        while not self.ready():
            if self.process.poll() is not None:
                raise ServerError(f"the private {self.name} exited:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise ServerError(f"the private {self.name} did not start:\n{self.log[-3000:]}")
            time.sleep(0.05)

    def ready(self) -> bool:
        return _listening(self.port)

    def _signal_group(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def freeze(self) -> None:
        """SIGSTOP every process of the server: connections hang, nothing answers."""
        self._signal_group(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT: the server carries on where it stopped."""
        self._signal_group(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """SIGKILL every process of the server: a crash."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        self.frozen = False

    def stop(self) -> None:
        """Shut the server down cleanly (a thawed server first, if frozen)."""
        if not self.running:
            return
        assert self.process is not None
        if self.frozen:
            self.thaw()
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    stop_signal = signal.SIGTERM

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        raise NotImplementedError


def _postgres_bin() -> Path:
    configured = os.environ.get("TASKQUEUE_FAULTS_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise ServerError(
                "no PostgreSQL server binaries: install Debian's postgresql package, or set "
                "TASKQUEUE_FAULTS_PG_BIN to the directory of initdb and postgres"
            )
        return Path(on_path).parent
    return Path(found[-1]).parent


class PrivatePostgres(_Server):
    """A PostgreSQL cluster of its own: trust authentication, user ``postgres``, no fsync."""

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, port: int, root: Path) -> None:
        super().__init__(port, root)
        self.bin = _postgres_bin()
        self.data = root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServerError(
                    "PostgreSQL does not run as root and there is no postgres user"
                ) from exc
            self.user = "postgres"

    def _as_owner(self, path: Path) -> None:
        if self.user is not None:
            shutil.chown(path, self.user, self.user)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._as_owner(self.root)
            self.log_path.touch()
            self._as_owner(self.log_path)
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
                user=self.user,
            )
        self._spawn(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                # Durability is not what these experiments test, and 2 cores are shared.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
                "-c",
                "shared_buffers=64MB",
            ],
            user=self.user,
        )

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return result.returncode == 0


class PrivateRedis(_Server):
    """A Redis server of its own; ``persistent`` keeps its data across restarts (AOF)."""

    name = "redis"

    def __init__(self, port: int, root: Path, *, persistent: bool = False) -> None:
        super().__init__(port, root)
        self.persistent = persistent

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError("no redis-server: install Debian's redis-server package")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        self._spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.root),
                "--save",
                "",
                *persistence,
                "--daemonize",
                "no",
            ]
        )


def temporary_root(prefix: str) -> Path:
    """A fresh directory under the system's temporary directory (reachable by ``postgres``)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root
