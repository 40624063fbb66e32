"""Private PostgreSQL, PgBouncer and Redis servers that a test may stop, freeze and restart.

The shared servers of the integration tier must never be stopped under the other
tests, so the fault tests start their own from the machine's binaries (Debian's
``/usr/lib/postgresql/*/bin``, ``pgbouncer`` and ``redis-server``) in a temporary
directory, each in a process group of its own, so that ``freeze`` (SIGSTOP) and
``thaw`` (SIGCONT) reach every process of the server (PostgreSQL's backends, which
leave the group, are signalled one by one). PostgreSQL refuses to run as
root: under root, PostgreSQL and PgBouncer run as the ``postgres`` user of the
PostgreSQL package.

Usage::

    with private_postgres(port=16080) as server:
        server.createdb("faults")
        ...  # point a worker at server.host / server.port
        server.stop()       # the database goes away
        server.start()      # and comes back
        with server.frozen():   # every server process stopped with SIGSTOP
            ...
        with server.pgbouncer(16081, query_timeout=3):
            ...  # PgBouncer in front of it
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
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"

_S = TypeVar("_S", bound="_Server")


class ServerError(RuntimeError):
    """A private server could not be set up or started."""


def free_port(ports: Iterable[int] | None = None) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now.

    Args:
        ports: The ports to try, in order; by default one the kernel chooses.
    """
    if ports is None:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            return int(sock.getsockname()[1])
    tried = list(ports)
    for port in tried:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise ServerError(f"no free port in {tried[0]}-{tried[-1]}" if tried else "no ports to try")


def port_range(variable: str, default: str) -> range:
    """The ports of the environment variable ``variable`` (``first-last``), or of ``default``."""
    first, _, last = os.environ.get(variable, default).partition("-")
    return range(int(first), int(last or first) + 1)


def temporary_root(prefix: str) -> Path:
    """A fresh directory under the system's temporary directory (reachable by ``postgres``)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def _server_user() -> str | None:
    """The OS user PostgreSQL runs as: ``postgres`` under root (it refuses root), else ours."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerError("PostgreSQL does not run as root and there is no postgres user") from exc
    return "postgres"


class _Server:
    """A server process on 127.0.0.1 in its own process group; a context manager that runs it."""

    name = "server"
    host = HOST
    stop_signal = signal.SIGTERM

    def __init__(self, port: int, root: Path) -> None:
        self.port = port
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.is_frozen = False

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
        """SIGSTOP every process of the server: the kernel still accepts connections, nothing
        answers."""
        self._signal_group(signal.SIGSTOP)
        self.is_frozen = True

    def thaw(self) -> None:
        """SIGCONT: the server carries on where it stopped."""
        self._signal_group(signal.SIGCONT)
        self.is_frozen = False

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Frozen for the block, thawed after it (also when the block fails)."""
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def kill(self) -> None:
        """SIGKILL every process of the server: a crash; clients see connections refused."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        self.is_frozen = False

    def stop(self) -> None:
        """Shut the server down cleanly (a thawed server first, if frozen)."""
        if not self.running:
            return
        assert self.process is not None
        if self.is_frozen:
            self.thaw()
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


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


def postgres_available() -> bool:
    """Whether PostgreSQL's server binaries can be found (tests skip otherwise)."""
    try:
        _postgres_bin()
    except ServerError:
        return False
    return True


def _pgbouncer_program() -> str | None:
    return shutil.which("pgbouncer") or next(iter(glob.glob("/usr/sbin/pgbouncer")), None)


def pgbouncer_available() -> bool:
    """Whether the ``pgbouncer`` program is installed."""
    return _pgbouncer_program() is not None


class PostgresServer(_Server):
    """A PostgreSQL cluster of its own: trust authentication, user ``postgres``, no fsync."""

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, port: int, root: Path) -> None:
        super().__init__(port, root)
        self.bin = _postgres_bin()
        self.data = root / "data"
        self.user = _server_user()

    def own(self, path: Path) -> None:
        """Give ``path`` to the user the server runs as."""
        if self.user is not None:
            shutil.chown(path, self.user, self.user)

    def start(self) -> None:
        """Start the server (a new cluster the first time) and wait until it accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            self.own(self.root)
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
                f"listen_addresses={HOST}",
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

    def _signal_group(self, signum: int) -> None:
        # Every backend and background process of PostgreSQL calls setsid(): the
        # postmaster's group holds only itself. Its children are signalled one by one,
        # after it: a stopped postmaster starts no new ones.
        super()._signal_group(signum)
        if self.process is None:
            return
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signum)

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port)], check=False
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql``; its rows, unaligned (``a|b`` lines)."""
        command = [str(self.bin / "psql"), "-h", HOST, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(
            [*command, "-d", database, "-At", "-c", sql],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout

    def createdb(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def pgbouncer(self, port: int, **settings: object) -> PgBouncer:
        """PgBouncer in front of this server on ``port``: ``with server.pgbouncer(port): ...``.

        ``settings`` go to its ``[pgbouncer]`` section (``query_timeout=3``...).
        """
        return PgBouncer(self, port, **settings)


class PgBouncer(_Server):
    """PgBouncer in front of a :class:`PostgresServer`: session pooling, trust authentication."""

    name = "pgbouncer"

    def __init__(self, server: PostgresServer, port: int, **settings: object) -> None:
        super().__init__(port, server.root / f"pgbouncer-{port}")
        self.server = server
        self.settings = settings

    def start(self) -> None:
        program = _pgbouncer_program()
        if program is None:
            raise ServerError("pgbouncer is not installed")
        self.root.mkdir(exist_ok=True)
        users = self.root / "users.txt"
        users.write_text('"postgres" ""\n')
        lines = {
            "listen_addr": HOST,
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": users,
            "pool_mode": "session",
            **self.settings,
        }
        config = self.root / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n* = host={HOST} port={self.server.port}\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in lines.items())
        )
        for path in (self.root, users, config):
            self.server.own(path)
        self._spawn([program, str(config)], user=self.server.user)


class RedisServer(_Server):
    """A Redis server of its own; ``persistent`` keeps its data across restarts (AOF)."""

    name = "redis"

    def __init__(self, port: int, root: Path, *, persistent: bool = False) -> None:
        super().__init__(port, root)
        self.persistent = persistent

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def client(self, db: int = 0, timeout: float = 5.0) -> redis.Redis:
        """A new client of database ``db`` that waits at most ``timeout`` seconds, once."""
        # redis-py retries a failed command three times by default, with seconds between.
        return redis.Redis(
            host=HOST, port=self.port, db=db, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def llen(self, key: str, db: int = 0) -> int:
        """``LLEN key``: a queue's length."""
        with self.client(db) as client:
            return int(client.llen(key))

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
                HOST,
                "--dir",
                str(self.root),
                "--save",
                "",
                *persistence,
                "--daemonize",
                "no",
            ]
        )

    def ready(self) -> bool:
        # Listening is not enough: a restarted server answers LOADING while it reads its AOF.
        with self.client(timeout=0.5) as client:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False


@contextlib.contextmanager
def private_postgres(port: int) -> Iterator[PostgresServer]:
    """Init and start a private server on ``port``; stop it and delete its files afterwards."""
    root = temporary_root("tq-pg-")
    try:
        with PostgresServer(port, root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for one test on a free port of ``TASKQUEUE_TEST_PORTS`` (``first-last``,
    16070-16079 by default), killed at its end."""
    server = RedisServer(free_port(port_range("TASKQUEUE_TEST_PORTS", "16070-16079")), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
