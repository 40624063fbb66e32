"""Run pytest with the test database behind PgBouncer in transaction mode (``tox -e pgbouncer``).

``python -m tests.behind_pgbouncer [pytest arguments]`` starts a private PostgreSQL
and a PgBouncer in front of it (``pool_mode = transaction``, the mode that hands
each transaction to whichever server connection is free) on free ports of
``TASKQUEUE_TEST_PORTS`` (16070-16079 by default), points the test settings at
PgBouncer (``PGHOST``/``PGPORT``, ``TASKQUEUE_TEST_PGBOUNCER``), runs pytest, and
deletes both servers. Worker processes that the tests start inherit the same
settings, so they go through PgBouncer too.

pytest runs with ``--reuse-db``: PgBouncer keeps server connections to the test
database open, so dropping it at the end would fail; the private cluster is
deleted instead. Needs Debian's ``postgresql`` and ``pgbouncer`` packages (their
binaries only, as the fault suite).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import free_port, port_range, private_postgres


def main(arguments: list[str]) -> int:
    ports = port_range("TASKQUEUE_TEST_PORTS", "16070-16079")
    with private_postgres(free_port(ports)) as server:
        # PgBouncer refuses libpq's "options" startup parameter, where the test settings
        # put statement_timeout: the role carries it instead (as docs/production.md
        # says for a pooler), and the settings keep only connect_timeout.
        server.psql("ALTER ROLE postgres SET statement_timeout = '300s'")
        bouncer_port = free_port(port for port in ports if port != server.port)
        # default_pool_size well above what the tests open: a test that holds a
        # transaction while a worker thread writes must not wait for a connection.
        with server.pgbouncer(bouncer_port, pool_mode="transaction", default_pool_size=20):
            env = {
                **os.environ,
                "TASKQUEUE_TEST_DB": "postgres",
                "TASKQUEUE_TEST_PGBOUNCER": "1",
                "TASKQUEUE_TEST_DB_OPTIONS": '{"connect_timeout": 10}',
                "PGHOST": server.host,
                "PGPORT": str(bouncer_port),
                "PGUSER": "postgres",
                "PGDATABASE": "postgres",
            }
            command = [sys.executable, "-m", "pytest", "--reuse-db", *arguments]
            print(
                f"PostgreSQL on port {server.port}, PgBouncer (transaction mode) on "
                f"{bouncer_port}: {' '.join(command)}",
                flush=True,
            )
            return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
