"""A real worker whose PostgreSQL goes away or freezes (a private server the test controls).

The worker records into a PostgreSQL server of its own (tests/servers.py) that
the test stops, restarts and freezes with SIGSTOP; the tasks are sent with
``send_task``, so this process needs no database and the shared server of the
integration tier is never touched. Each test prints its figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

from tests.celery_app import app
from tests.live import ROOT, worker_env, worker_process
from tests.servers import (
    PostgresServer,
    free_port,
    pgbouncer_available,
    port_range,
    postgres_available,
    private_postgres,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not postgres_available(), reason="needs PostgreSQL's server binaries"),
]

#: The ports of the private server and its PgBouncer: free ones of ``TASKQUEUE_TEST_PG_PORTS``.
PORTS = port_range("TASKQUEUE_TEST_PG_PORTS", "16080-16089")
DATABASE = "taskqueue_faults"

#: The connection settings docs/production.md recommends, with a short connect timeout.
DOCUMENTED_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "options": "-c statement_timeout=5000 -c lock_timeout=2000 "
    "-c idle_in_transaction_session_timeout=60000",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}

# A worker's log line, as Celery formats it: "[time: LEVEL/ProcessName] message".
_LINE = re.compile(r"^\[[^]]*: (?P<level>[A-Z]+)/(?P<process>[^]]+)\] (?P<message>.*)$")


@pytest.fixture(scope="module")
def private_db() -> Iterator[PostgresServer]:
    """A private PostgreSQL server with the test project's tables."""
    with private_postgres(free_port(PORTS)) as server:
        server.createdb(DATABASE)
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "-v0"],
            env=env_for(server, DOCUMENTED_OPTIONS),
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        yield server


def env_for(server: PostgresServer, options: dict[str, Any]) -> dict[str, str]:
    """A worker's environment: the private server, with these connection OPTIONS."""
    return worker_env(
        PGHOST=server.host,
        PGPORT=str(server.port),
        TASKQUEUE_WORKER_DB_NAME=DATABASE,
        TASKQUEUE_TEST_DB_OPTIONS=json.dumps(options),
    )


def log_lines(log: str) -> list[tuple[str, str, str]]:
    """(level, process, message) of each of the worker's formatted log lines."""
    found = (_LINE.match(line) for line in log.splitlines())
    return [(m["level"], m["process"], m["message"]) for m in found if m]


def statuses(server: PostgresServer, ids: list[str]) -> Counter[str]:
    """How many of these tasks have a row in each status ("" for no row)."""
    if not ids:
        return Counter()
    quoted = ",".join(f"'{i}'" for i in ids)
    rows = server.psql(
        f"SELECT celery_task_id, status FROM django_taskqueue_tasklog "
        f"WHERE celery_task_id IN ({quoted})",
        DATABASE,
    )
    found = dict(line.split("|") for line in rows.splitlines() if line)
    return Counter(found.get(i, "") for i in ids)


def test_an_outage_is_logged_once_per_kind_and_recording_recovers(
    private_db: PostgresServer, tmp_path: Path
) -> None:
    """Stop the database for 8 s while tasks start, report progress and end; start it again.

    Before: every failed write logged its traceback (thousands in an outage),
    and a pool child whose connection broke kept failing every write after the
    database was back, so the tasks that came later left no record at all.
    """
    outage = 8.0
    app.control.purge()
    with worker_process(
        tmp_path, env=env_for(private_db, DOCUMENTED_OPTIONS), concurrency=2
    ) as worker:
        # One long task reporting progress through the outage, and a stream of short ones.
        long_task = app.send_task(
            "tests.progress", kwargs={"steps": int((outage + 8) / 0.05), "sleep": 0.05}
        )
        sent: dict[str, list[AsyncResult[Any]]] = {"before": [], "during": [], "after": []}
        phase = ["before"]
        stop = threading.Event()

        def submit() -> None:
            while not stop.is_set():
                sent[phase[0]].append(
                    app.send_task("tests.progress", kwargs={"steps": 3, "sleep": 0.05})
                )
                time.sleep(0.2)

        submitter = threading.Thread(target=submit)
        submitter.start()
        try:
            time.sleep(3)
            phase[0] = "during"
            private_db.stop()
            down = time.monotonic()
            time.sleep(outage)
            private_db.start()
            downtime = time.monotonic() - down
            phase[0] = "after"
            time.sleep(4)
        finally:
            stop.set()
            submitter.join()
        assert long_task.get(timeout=60) == int((outage + 8) / 0.05)
        for results in sent.values():
            for result in results:
                result.get(timeout=60)
        time.sleep(1)  # the last ends are written after the result
        log = worker.log

    lines = log_lines(log)
    failures = [(p, m) for level, p, m in lines if "could not record" in m]
    summaries = [(p, m) for level, p, m in lines if "recording recovered after" in m]
    tracebacks = log.count("Traceback (most recent call last)")
    after = statuses(private_db, [r.id for r in sent["after"]])
    print(
        f"\noutage {downtime:.1f} s; tasks before/during/after: "
        f"{len(sent['before'])}/{len(sent['during'])}/{len(sent['after'])}; "
        f"failure lines {len(failures)}, tracebacks {tracebacks}, summaries {len(summaries)}"
    )
    for process, message in summaries:
        print(f"  {process}: {message}")

    # Every task sent once the database was back is recorded, in every pool child.
    assert after == Counter({"completed": len(sent["after"])}), after
    # Bounded: one line per kind of write and exception class in each process.
    per_process = Counter(p for p, _ in failures)
    assert failures
    assert max(per_process.values()) <= 8, failures
    # The log configuration prints a logged traceback twice, each with its cause.
    assert tracebacks <= 4 * len(per_process) * 2
    # One summary per process that saw failures.
    assert sorted(p for p, _ in summaries) == sorted(per_process)
    assert all("writes failed" in m for _, m in summaries)
    # The long task went on reporting after the outage and ended recorded.
    assert statuses(private_db, [long_task.id]) == Counter({"completed": 1})


def test_a_frozen_database_fails_recording_calls_within_the_documented_bounds(
    private_db: PostgresServer, tmp_path: Path
) -> None:
    """SIGSTOP every server process (its host still answers TCP) and send tasks.

    - ``bounded``: the documented OPTIONS; the task's writes must connect, and
      each gives up after ``connect_timeout`` (2 s), is logged, and the task runs.
    - ``unbounded``: no OPTIONS, as before: the first write waits as long as the freeze.
    - ``limited``: the documented OPTIONS on a connection opened before the
      freeze: no client setting bounds a statement the stopped server never
      answers; the task's hard time limit does, and the worker's main process
      then records it on a new connection, bounded by ``connect_timeout``.
    """
    app.control.purge()
    documented = env_for(private_db, DOCUMENTED_OPTIONS)
    with (
        worker_process(
            tmp_path, env=documented, concurrency=1, queues="tq_bounded"
        ) as bounded_worker,
        worker_process(
            tmp_path, env=env_for(private_db, {}), concurrency=1, queues="tq_unbounded"
        ) as unbounded_worker,
        worker_process(
            tmp_path, env=documented, concurrency=1, queues="tq_limited"
        ) as limited_worker,
    ):
        # The limited worker's pool child opens its connection (and keeps it) before the freeze.
        app.send_task("tests.add", args=(1, 1), queue="tq_limited").get(timeout=30)
        with private_db.frozen():
            frozen_at = time.monotonic()
            bounded = app.send_task("tests.add", args=(2, 2), queue="tq_bounded")
            unbounded = app.send_task("tests.add", args=(3, 3), queue="tq_unbounded")
            limited = app.send_task("tests.add", args=(4, 4), queue="tq_limited", time_limit=4)
            # Seconds from the freeze until each thing is seen (None: not within 15 s).
            seen: dict[str, float | None] = dict.fromkeys(
                ("bounded", "limited", "limited logged", "unbounded")
            )
            checks = {
                "bounded": bounded.ready,
                "limited": limited.ready,
                "limited logged": lambda: "could not record hard time limit" in limited_worker.log,
                "unbounded": unbounded.ready,
            }
            while time.monotonic() < frozen_at + 15:
                for name, check in checks.items():
                    if seen[name] is None and check():
                        seen[name] = time.monotonic() - frozen_at
                time.sleep(0.05)
            frozen_for = time.monotonic() - frozen_at
        thawed_at = time.monotonic()
        assert unbounded.get(timeout=60) == 6
        unbounded_after = time.monotonic() - frozen_at
        bounded_log, limited_log = bounded_worker.log, limited_worker.log
        unbounded_log = unbounded_worker.log

    print(
        f"\nfrozen {frozen_for:.1f} s; seconds from the freeze: "
        + ", ".join(f"{name} {'-' if t is None else f'{t:.1f}'}" for name, t in seen.items())
        + f"; unbounded done {unbounded_after:.1f} s "
        f"({unbounded_after - (thawed_at - frozen_at):.1f} s after the thaw)"
    )
    bounded_lines = [m for _, _, m in log_lines(bounded_log) if "could not record" in m]
    for message in bounded_lines:
        print(f"  bounded: {message[:160]}")

    # Documented settings: the status read and the recorder's writes fail after connect_timeout.
    bounded_after, limited_after = seen["bounded"], seen["limited"]
    assert bounded_after is not None
    assert bounded_after < 2 * 2 + 3, bounded_after
    assert bounded.get(timeout=1) == 4  # the task itself ran and succeeded
    # The task's own write (its status read before the body), then the recorder's.
    assert bounded_lines[0].startswith("django_taskqueue could not record cancel check")
    assert any("could not record the held records yet" in m for m in bounded_lines)
    assert all("timeout expired" in m for m in bounded_lines), bounded_lines
    # No settings: still waiting after 15 s, and done only once the server is back.
    assert seen["unbounded"] is None
    assert "could not record" not in unbounded_log
    # An open connection: only the hard time limit ended the wait, and the main
    # process's record of it gave up after connect_timeout.
    assert limited_after is not None
    assert 4 <= limited_after < 4 + 3, limited_after
    logged_after = seen["limited logged"]
    assert logged_after is not None
    assert logged_after < 4 + 2 + 4, logged_after
    assert "timeout expired" in limited_log


@pytest.mark.skipif(not pgbouncer_available(), reason="needs pgbouncer")
def test_pgbouncer_query_timeout_bounds_a_statement_the_frozen_server_never_answers(
    private_db: PostgresServer, tmp_path: Path
) -> None:
    """Behind PgBouncer, its query_timeout ends what no client setting can: a statement
    already sent, on an open connection, to a server process that is stopped."""
    app.control.purge()
    bouncer_port = free_port(port for port in PORTS if port != private_db.port)
    with private_db.pgbouncer(bouncer_port, query_timeout=3, server_connect_timeout=3):
        # PgBouncer refuses libpq's "options" (the server settings go on the role there).
        pooled = {k: v for k, v in DOCUMENTED_OPTIONS.items() if k != "options"}
        env = env_for(private_db, pooled) | {"PGPORT": str(bouncer_port)}
        with worker_process(tmp_path, env=env, concurrency=1, queues="tq_pooled") as worker:
            # The pool child's connection (and PgBouncer's to the server) opens before the freeze.
            app.send_task("tests.add", args=(1, 1), queue="tq_pooled").get(timeout=30)
            with private_db.frozen():
                frozen_at = time.monotonic()
                result = app.send_task("tests.add", args=(5, 5), queue="tq_pooled")
                assert result.get(timeout=15) == 10
                done_after = time.monotonic() - frozen_at

                def failures() -> list[str]:
                    return [m for _, _, m in log_lines(worker.log) if "could not record" in m]

                deadline = time.monotonic() + 10
                while len(failures()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
                both_logged_after = time.monotonic() - frozen_at
                logged = failures()
    print(
        f"\nbehind PgBouncer (query_timeout=3): task done {done_after:.1f} s after the "
        f"freeze, start and end failures logged by {both_logged_after:.1f} s"
    )
    for message in logged:
        print(f"  {message[:200]}")
    # The task's read of its status (before the body: is it cancelled?) ended by
    # query_timeout; the recorder thread's write of the start and the end, on a new
    # server connection, by server_connect_timeout: each bounded, each logged.
    assert 3 <= done_after < 3 + 3, done_after
    assert [m.split(" for task")[0].split(":")[0] for m in logged] == [
        "django_taskqueue could not record cancel check",
        "django_taskqueue could not record the held records yet",
    ]
    assert both_logged_after < 3 + 3 + 3, both_logged_after
