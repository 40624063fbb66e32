"""The fault suite's fixtures: private servers, the experiment's counts and their report.

Run with ``pytest --ds tests.faults.settings -m faults`` (``tox -e faults``). The
PostgreSQL and Redis servers are the suite's own (see :mod:`tests.servers`):
pytest-django creates the test database on the private PostgreSQL, and every
worker, housekeeper and command process started by a test uses the same servers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.faults.experiment import Counts
from tests.servers import PostgresServer, RedisServer, temporary_root

_REPORT: list[str] = []


@dataclass
class Servers:
    postgres: PostgresServer
    redis: RedisServer

    def ensure_up(self) -> None:
        for server in (self.postgres, self.redis):
            if server.is_frozen:
                server.thaw()
            if not server.running:
                server.start()


@pytest.fixture(scope="session")
def private_servers() -> Iterator[Servers]:
    from tests.faults import settings

    root = temporary_root("taskqueue-faults-")
    (root / "postgres").mkdir()
    (root / "redis").mkdir()
    servers = Servers(
        PostgresServer(settings.FAULTS_PG_PORT, root / "postgres"),
        RedisServer(settings.FAULTS_REDIS_PORT, root / "redis"),
    )
    try:
        servers.ensure_up()
        yield servers
    finally:
        for server in (servers.redis, servers.postgres):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(private_servers: Servers) -> None:
    """pytest-django's hook before the test database is created: the server must be up."""


@pytest.fixture
def servers(private_servers: Servers, transactional_db: Any) -> Iterator[Servers]:
    """The private servers, running and empty of messages, for one experiment."""
    private_servers.ensure_up()
    _fresh(private_servers.redis)
    yield private_servers
    private_servers.ensure_up()
    if private_servers.redis.persistent:
        # Back to the suite's default for the next experiment.
        private_servers.redis.persistent = False
        private_servers.redis.restart()
    _fresh(private_servers.redis)


def _fresh(redis: RedisServer) -> None:
    """Empty the suite's Redis (its own: nothing else lives there)."""
    with redis.client() as client:
        client.flushall()


@pytest.fixture
def report() -> Iterator[list[Counts | str]]:
    """Counts (or lines) appended here are printed now and in the session's summary."""
    found: list[Counts | str] = []
    yield found
    for counts in found:
        line = counts if isinstance(counts, str) else counts.line()
        print(line)
        _REPORT.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT:
        terminalreporter.section("fault experiments: counts")
        for line in _REPORT:
            terminalreporter.write_line(line)
