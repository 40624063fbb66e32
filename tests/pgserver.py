"""A private PostgreSQL server that a test may stop, freeze and restart.

The shared server of the integration tier must never be stopped under the
other tests, so the fault tests start their own: ``initdb`` into a temporary
directory, ``pg_ctl`` on a port of their own, trust authentication on loopback.
PostgreSQL refuses to run as root; when the tests run as root the server runs
as the ``postgres`` OS user.

Usage::

    with private_postgres(port=16080) as server:
        server.createdb("faults")
        ...  # point a worker at server.host / server.port
        server.stop()       # the database goes away
        server.start()      # and comes back
        with server.frozen():   # every server process stopped with SIGSTOP
            ...
        with pgbouncer(server, port=16081, query_timeout=3) as bouncer_port:
            ...  # PgBouncer in front of it, where installed
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


def _bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=os.path.getmtime)
    return Path(candidates[-1]).parent if candidates else None


def available() -> bool:
    """Whether ``initdb`` and ``pg_ctl`` can be found (tests skip otherwise)."""
    return _bin_dir() is not None


def pgbouncer_available() -> bool:
    """Whether the ``pgbouncer`` program is installed."""
    return _pgbouncer() is not None


def _pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(iter(glob.glob("/usr/sbin/pgbouncer")), None)


class PostgresServer:
    """One private PostgreSQL cluster in a temporary directory."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.host = HOST
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "server.log"
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin = bin_dir
        # PostgreSQL will not run as root; hand the cluster to the postgres OS user.
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._chown(self.directory)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{HOST}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\nshared_buffers = 32MB\n"
            )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start"
        )
        deadline = time.monotonic() + timeout
        while self._run("pg_isready", "-h", HOST, "-p", str(self.port), check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"private PostgreSQL did not start:\n{self.log}")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect the clients, as a restart does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, background workers)."""
        postmaster = self.postmaster_pid()
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """Stop every server process with SIGSTOP (the kernel still answers TCP), then resume.

        The processes stopped are those alive when the block starts; the
        postmaster, being stopped, starts no new ones.
        """
        pids = self.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-At",
            "-c",
            sql,
        ).stdout

    def createdb(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def pgbouncer(server: PostgresServer, port: int, **settings: object) -> Iterator[int]:
    """PgBouncer in front of ``server`` on ``port`` (session pooling, trust); yields the port.

    ``settings`` go to the ``[pgbouncer]`` section (``query_timeout=3``...).
    """
    program = _pgbouncer()
    if program is None:
        raise RuntimeError("pgbouncer is not installed")
    directory = server.directory / f"pgbouncer-{port}"
    directory.mkdir()
    server._chown(directory)
    (directory / "users.txt").write_text('"postgres" ""\n')
    lines = {
        "listen_addr": HOST,
        "listen_port": port,
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": directory / "users.txt",
        "pool_mode": "session",
        "logfile": directory / "pgbouncer.log",
        **settings,
    }
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={HOST} port={server.port}\n[pgbouncer]\n"
        + "".join(f"{key} = {value}\n" for key, value in lines.items())
    )
    for path in directory.iterdir():
        server._chown(path)
    command = [program, str(directory / "pgbouncer.ini")]
    if server.user is not None:
        command = ["runuser", "-u", server.user, "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in _read(directory / "pgbouncer.log"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"pgbouncer did not start:\n{_read(directory / 'pgbouncer.log')}"
                )
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def private_postgres(port: int) -> Iterator[PostgresServer]:
    """Init and start a private server on ``port``; stop it and delete its files afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tq-pg-"))
    server = PostgresServer(port, directory)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            # A test that failed inside frozen() must not leave the server stopped.
            for pid in server.pids():
                os.kill(pid, signal.SIGCONT)
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
