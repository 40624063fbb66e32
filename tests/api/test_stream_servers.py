"""Event streams served by real servers: gunicorn (sync, gthread), runserver, uvicorn.

Integration tier: the servers are child processes on the PostgreSQL test
database, sharing a Redis cache (tests/api/servers.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("rest_framework")

from django.db import connection

from tests import factories
from tests.api.conftest import basic
from tests.api.servers import web_server

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def other_connections() -> int:
    """Connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        row = cursor.fetchone()
    return int(row[0])


def test_a_user_over_the_cap_leaves_sync_workers_to_others(tmp_path: Path) -> None:
    """Three sync workers: one user holds two streams, the third is refused, others are served."""
    alice, bob = factories.user("alice"), factories.user("bob")
    tasks = [factories.task("processing", owner=alice, **factories.RESIZING) for _ in range(3)]
    settings = {"API_STREAM_MAX_PER_USER": 2, "API_STREAM_MAX_SECONDS": 12}
    with web_server("sync", tmp_path, taskqueue=settings) as server:
        auth = {"Authorization": basic(alice)}
        # Silent for up to 12 s (no change, no heartbeat): read with a longer timeout.
        streams = [
            server.open_stream(f"/api/tasks/{t.pk}/stream/", auth, timeout=30) for t in tasks[:2]
        ]
        for stream in streams:
            assert stream.status == 200
            assert stream.read_until(b"event: progress")  # a worker is serving it
        refused = server.open_stream(f"/api/tasks/{tasks[2].pk}/stream/", auth, timeout=15)
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.json()["code"] == "too_many_streams"
        # Another user is answered while both streams are open.
        status, _, body = server.get("/api/tasks/", {"Authorization": basic(bob)}, timeout=15)
        assert status == 200, body
        answered = time.monotonic()
        # The streams end on their own (before gunicorn's 30 s timeout would kill
        # their workers), with a hint to reconnect after one poll interval.
        for stream in streams:
            rest = stream.lines()
            assert b"retry: 1000" in rest
            stream.close()
        assert answered < time.monotonic() - 1
        again = server.open_stream(f"/api/tasks/{tasks[2].pk}/stream/", auth, timeout=15)
        assert again.status == 200
        again.close()
        assert "WORKER TIMEOUT" not in server.log


@pytest.mark.parametrize("kind", ["gthread", "runserver", "uvicorn"])
def test_open_streams_hold_no_database_connection(kind: str, tmp_path: Path) -> None:
    users = [factories.user(f"user{n}") for n in range(3)]
    tasks = [
        (
            user,
            factories.task("processing", owner=user, **factories.RESIZING),
        )
        for user in users
        for _ in range(2)
    ]
    with web_server(kind, tmp_path, taskqueue={"API_STREAM_MAX_SECONDS": 60}) as server:
        streams = [
            server.open_stream(f"/api/tasks/{task.pk}/stream/", {"Authorization": basic(user)})
            for user, task in tasks
        ]
        for stream in streams:
            assert stream.status == 200
            # The first event arrives while the stream is open (under ASGI too).
            assert stream.read_until(b"event: progress")
        samples = []
        for _ in range(12):
            samples.append(other_connections())
            time.sleep(0.25)
        # Each poll borrows a connection for a few milliseconds, then gives it back;
        # six streams that each held theirs would show six all the time.
        assert min(samples) == 0, samples
        assert max(samples) <= 2, samples
        for stream in streams:
            stream.close()
