"""The server-sent event stream of one task.

Real servers (gunicorn, runserver, uvicorn) serving it: test_stream_servers.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import close_old_connections, connections
from django.test import override_settings

from django_taskqueue import lifecycle
from django_taskqueue.api import stream as stream_module
from django_taskqueue.api.stream import StreamSlots, task_events
from django_taskqueue.models import TaskLog
from tests import factories
from tests.api.conftest import basic, client_for


@pytest.fixture(autouse=True)
def _no_slots_left() -> Iterator[None]:
    # The stream slots live in the (local memory) cache: start and end empty.
    cache.clear()
    yield
    cache.clear()


def parse(chunks: list[bytes]) -> list[tuple[str, Any]]:
    """(event, data) pairs; comments as ("comment", text), the retry hint as ("retry", ms)."""
    out: list[tuple[str, Any]] = []
    for block in b"".join(chunks).decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append(("comment", line[1:].strip()))
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        if "retry" in fields:
            out.append(("retry", int(fields["retry"])))
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_the_stream_follows_a_running_task_until_it_ends(
    worker: Any, file_root: Path, alice: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_POLL_INTERVAL": 0.05}
    api = client_for(alice)
    response = api.post(
        "/api/tasks/create_task/",
        {"file_path": str(file_root / "a.txt"), "task_type": "file", "metadata": {"seconds": 1}},
        format="json",
    )
    pk = response.json()["id"]
    stream = api.get(f"/api/tasks/{pk}/stream/", HTTP_ACCEPT="text/event-stream")
    assert stream.status_code == 200
    assert stream["Content-Type"].startswith("text/event-stream")
    assert stream["X-Accel-Buffering"] == "no"
    assert stream["Cache-Control"] == "no-cache"
    events = parse(list(stream.streaming_content))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "retry"
    assert kinds[-1] == "end"
    assert events[-1][1]["status"] == "completed"
    assert events[-1][1]["progress"] == 100
    progress = [data["progress"] for kind, data in events if kind == "progress"]
    assert progress == sorted(progress)
    assert len(set(progress)) >= 2  # it saw the task move


@pytest.mark.django_db
def test_a_finished_task_streams_only_its_end(alice: Any) -> None:
    task = factories.task("failed", owner=alice, **factories.FILE_TASK)
    stream = client_for(alice).get(f"/api/tasks/{task.pk}/stream/")
    events = parse(list(stream.streaming_content))
    assert [kind for kind, _ in events] == ["retry", "end"]
    assert events[-1][1]["error_message"] == "it broke"


@pytest.mark.django_db
def test_stream_errors_are_json_even_for_an_event_source(alice: Any, bob: Any) -> None:
    task = factories.task(owner=bob, **factories.FILE_TASK)
    response = client_for(alice).get(
        f"/api/tasks/{task.pk}/stream/", HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


@pytest.mark.django_db
def test_heartbeats_and_the_time_limit() -> None:
    task = factories.task(**factories.FILE_TASK)
    lifecycle.mark_started(task.celery_task_id)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    chunks = list(
        task_events(
            task.pk,
            poll_interval=1.0,
            heartbeat=2.5,
            max_seconds=10.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    )
    events = parse(chunks)
    assert [kind for kind, _ in events] == [
        "retry",
        "progress",
        "comment",
        "comment",
        "comment",
        "retry",
    ]
    assert events[1][1]["status"] == "processing"
    # At its time limit the stream asks the client to reconnect after one poll interval.
    assert events[-1] == ("retry", 1000)


@pytest.mark.django_db
def test_a_deleted_task_ends_the_stream() -> None:
    task = factories.task(**factories.FILE_TASK)
    stream = task_events(
        task.pk, poll_interval=0, heartbeat=10, max_seconds=10, sleep=lambda s: None
    )
    assert next(stream).startswith(b"retry:")
    task.delete()
    assert parse(list(stream)) == [
        ("end", {"status": None, "detail": "The task no longer exists."})
    ]


def close(response: Any) -> None:
    """Close a response as the server does when the client leaves.

    As Django's test client does, without closing the test's database
    connection (``request_finished`` would, inside the test's transaction).
    """
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def url(task: TaskLog) -> str:
    return f"/api/tasks/{task.pk}/stream/"


def event_ids(chunks: list[bytes]) -> list[str]:
    lines = b"".join(chunks).decode().split("\n")
    return [line[len("id: ") :] for line in lines if line.startswith("id: ")]


def kinds(chunks: list[bytes]) -> list[str]:
    return [kind for kind, _ in parse(chunks)]


def follow(task: TaskLog, **options: Any) -> list[bytes]:
    """One whole stream of ``task`` that lives for two polls (on a fake clock)."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return list(
        task_events(
            task.pk,
            poll_interval=1.0,
            heartbeat=60.0,
            max_seconds=1.0,
            sleep=sleep,
            clock=lambda: now[0],
            **options,
        )
    )


# --- lifetime and reconnection -----------------------------------------------------------


@pytest.mark.django_db
def test_a_reconnecting_client_resumes_from_its_last_event_id() -> None:
    task = factories.task("processing", **factories.RESIZING)
    first = follow(task)
    assert parse(first) == [
        ("retry", 3000),
        ("progress", parse(first)[1][1]),
        ("retry", 1000),  # the time limit: reconnect after one poll interval
    ]
    (seen,) = event_ids(first)
    # Nothing changed: the next stream does not send the same state again.
    assert parse(follow(task, last_event_id=seen)) == [("retry", 3000), ("retry", 1000)]
    # What happened while the client was away is sent, numbered on from its last id.
    factories.set_progress(task, 70, "watermarked")
    resumed = follow(task, last_event_id=seen)
    assert kinds(resumed) == ["retry", "progress", "retry"]
    assert parse(resumed)[1][1]["progress"] == 70
    (latest,) = event_ids(resumed)
    assert int(latest.split("-")[0]) == int(seen.split("-")[0]) + 1
    # The end is always sent, and closes the stream.
    lifecycle.mark_completed(task.celery_task_id, result={"ok": True})
    ended = follow(task, last_event_id=latest)
    assert kinds(ended) == ["retry", "end"]
    assert parse(ended)[-1][1]["status"] == "completed"
    assert parse(follow(task, last_event_id=event_ids(ended)[0]))[-1][0] == "end"


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["", "7", "x-12345678", "3-zzzzzzzz", "1-" + "0" * 80])
def test_a_last_event_id_the_stream_did_not_send_is_ignored(
    alice: Any, settings: Any, header: str
) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_STREAM_POLL_INTERVAL": 0.01,
        "API_STREAM_MAX_SECONDS": 0.02,
    }
    task = factories.task("processing", owner=alice, **factories.RESIZING)
    response = client_for(alice).get(url(task), HTTP_LAST_EVENT_ID=header)
    assert response.status_code == 200
    chunks = list(response.streaming_content)
    assert kinds(chunks) == ["retry", "progress", "retry"]
    assert event_ids(chunks)[0].startswith("1-")


@pytest.mark.django_db
def test_the_view_resumes_from_the_last_event_id_header(alice: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_STREAM_POLL_INTERVAL": 0.01,
        "API_STREAM_MAX_SECONDS": 0.02,
    }
    task = factories.task("processing", owner=alice, **factories.RESIZING)
    api = client_for(alice)
    (seen,) = event_ids(list(api.get(url(task)).streaming_content))
    again = list(api.get(url(task), HTTP_LAST_EVENT_ID=seen).streaming_content)
    assert parse(again) == [("retry", 3000), ("retry", 10)]


# --- database connections ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_database_connection_is_held_between_polls() -> None:
    task = factories.task("processing", **factories.RESIZING)
    now = [0.0]
    held: list[list[str]] = []

    def sleep(seconds: float) -> None:
        held.append(
            [c.alias for c in connections.all(initialized_only=True) if c.connection is not None]
        )
        now[0] += seconds

    chunks = list(
        task_events(
            task.pk,
            poll_interval=1.0,
            heartbeat=60.0,
            max_seconds=3.0,
            sleep=sleep,
            clock=lambda: now[0],
        )
    )
    assert held == [[], [], []]
    assert kinds(chunks) == ["retry", "progress", "retry"]


@pytest.mark.django_db
def test_a_stream_read_inside_a_transaction_leaves_its_connection_alone() -> None:
    # pytest-django runs this test in a transaction: closing its connection would break it.
    task = factories.task("processing", **factories.RESIZING)
    assert kinds(follow(task)) == ["retry", "progress", "retry"]
    assert TaskLog.objects.filter(pk=task.pk).exists()


# --- the per-user cap and the throttle scope ---------------------------------------------


@pytest.mark.django_db
def test_a_user_holds_at_most_the_cap_of_streams_and_others_are_answered(
    alice: Any, bob: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_MAX_PER_USER": 2}
    tasks = [factories.task("processing", owner=alice, **factories.RESIZING) for _ in range(3)]
    api = client_for(alice)
    held = [api.get(url(task)) for task in tasks[:2]]
    assert [response.status_code for response in held] == [200, 200]
    refused = api.get(url(tasks[2]), HTTP_ACCEPT="text/event-stream")
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert 1 <= int(refused["Retry-After"]) <= 25
    assert refused.json() == {
        "detail": "Too many open streams: at most 2 per user. Close one, or try again in "
        f"{refused['Retry-After']} seconds.",
        "code": "too_many_streams",
    }
    # Another user, and the same user's other requests, are answered.
    bob_api = client_for(bob)
    bobs = bob_api.get(url(factories.task("processing", owner=bob, **factories.RESIZING)))
    assert bobs.status_code == 200
    close(bobs)
    assert bob_api.get("/api/tasks/").status_code == 200
    assert api.get(f"/api/tasks/{tasks[2].pk}/").status_code == 200
    # A stream that is closed frees its slot.
    close(held[0])
    assert api.get(url(tasks[2])).status_code == 200


@pytest.mark.django_db
def test_a_stream_that_ends_frees_its_slot(alice: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_MAX_PER_USER": 1}
    task = factories.task("completed", owner=alice, **factories.FILE_TASK)
    api = client_for(alice)
    for _ in range(3):
        response = api.get(url(task))
        assert response.status_code == 200
        assert kinds(list(response.streaming_content)) == ["retry", "end"]


@pytest.mark.django_db
def test_the_slot_of_a_process_that_died_expires(
    alice: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "LEASE_SECONDS", 0.5)
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_STREAM_MAX_PER_USER": 1,
        "API_STREAM_POLL_INTERVAL": 0.1,
    }
    first, second = (
        factories.task("processing", owner=alice, **factories.RESIZING),
        factories.task("processing", owner=alice, **factories.RESIZING),
    )
    api = client_for(alice)
    assert api.get(url(first)).status_code == 200  # never read nor closed: its process "died"
    refused = api.get(url(second))
    assert (refused.status_code, refused["Retry-After"]) == (429, "1")
    time.sleep(0.6)
    assert api.get(url(second)).status_code == 200


@pytest.mark.django_db
def test_a_running_stream_keeps_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "LEASE_SECONDS", 0.3)
    task = factories.task("processing", **factories.RESIZING)
    slots = StreamSlots("user:1", 1, poll_interval=0.05)
    lease = slots.acquire(ends_at=time.time() + 1)
    assert lease is not None
    taken: list[bool] = []

    def sleep(seconds: float) -> None:
        time.sleep(seconds)
        other = slots.acquire(ends_at=time.time())
        taken.append(other is not None)

    chunks = list(
        task_events(
            task.pk, poll_interval=0.05, heartbeat=60, max_seconds=1.0, lease=lease, sleep=sleep
        )
    )
    assert kinds(chunks) == ["retry", "progress", "retry"]
    # The stream outlived three leases and nobody could take its slot.
    assert len(taken) >= 10
    assert not any(taken)
    assert slots.acquire(ends_at=time.time()) is not None


@pytest.mark.django_db
def test_an_unreachable_cache_does_not_take_the_stream_down(
    alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("redis")
    task = factories.task("completed", owner=alice, **factories.FILE_TASK)
    unreachable = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
    }
    with override_settings(CACHES={"default": unreachable}):
        response = client_for(alice).get(url(task))
        assert response.status_code == 200
        assert kinds(list(response.streaming_content)) == ["retry", "end"]
    assert "Could not count the open streams" in caplog.text


@pytest.mark.django_db
def test_no_cap_when_the_setting_is_none(alice: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_MAX_PER_USER": None}
    api = client_for(alice)
    task = factories.task("processing", owner=alice, **factories.RESIZING)
    assert {api.get(url(task)).status_code for _ in range(10)} == {200}


@pytest.mark.django_db
def test_opening_streams_has_a_throttle_scope(alice: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskqueue_stream": "2/minute"},
    }
    task = factories.task("completed", owner=alice, **factories.FILE_TASK)
    api = client_for(alice)
    responses = [api.get(url(task)) for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 429]
    assert "throttled" in responses[2].json()["detail"]
    assert "Retry-After" in responses[2]
    # The other reads are not limited by it.
    assert api.get(f"/api/tasks/{task.pk}/").status_code == 200


# --- ASGI ---------------------------------------------------------------------------------


class ASGIStream:
    """One request to Django's ASGI handler, driven by hand as an ASGI server would."""

    def __init__(self, app: ASGIHandler, path: str, user: Any) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.asked = False
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"accept", b"text/event-stream"),
                (b"authorization", basic(user).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.call = asyncio.create_task(app(scope, self.receive, self.send))
        self.body = b""

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.messages.put(dict(message))

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def status(self) -> int:
        start = await asyncio.wait_for(self.messages.get(), 5)
        return int(start["status"])

    async def read_until(self, fragment: bytes, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.body:
            left = max(deadline - time.monotonic(), 0.001)
            self.body += (await asyncio.wait_for(self.messages.get(), left)).get("body", b"")

    async def disconnect(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.call, 5)


@pytest.mark.django_db(transaction=True)
def test_under_asgi_events_go_out_as_they_happen(alice: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_STREAM_POLL_INTERVAL": 0.05,
        "API_STREAM_MAX_SECONDS": 5,
        "API_STREAM_MAX_PER_USER": 1,
    }
    task, other = (
        factories.task("processing", owner=alice, **factories.RESIZING),
        factories.task("processing", owner=alice, **factories.RESIZING),
    )

    async def scenario() -> None:
        app = ASGIHandler()
        stream = ASGIStream(app, url(task), alice)
        assert await stream.status() == 200
        # The first event arrives while the task runs, not when the stream ends.
        await stream.read_until(b'"progress":40')
        await sync_to_async(factories.set_progress)(task, 70, "watermarked")
        await stream.read_until(b'"progress":70')
        refused = ASGIStream(app, url(other), alice)
        assert await refused.status() == 429
        await refused.disconnect()
        # The client goes away: the server cancels the stream, which frees its slot.
        await stream.disconnect()
        again = ASGIStream(app, url(other), alice)
        assert await again.status() == 200
        await again.read_until(b"event: progress")
        await again.disconnect()

    asyncio.run(scenario())


@pytest.mark.django_db
def test_the_schema_documents_the_refusal_and_its_retry_after() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    operation = schema["paths"]["/api/tasks/{id}/stream/"]["get"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "429"}
    refused = operation["responses"]["429"]
    assert refused["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert refused["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StreamLimit"
    }
    assert [p["name"] for p in operation["parameters"] if p["in"] == "header"] == ["Last-Event-ID"]
