"""The server-sent event stream of one task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue import lifecycle
from django_taskqueue.api.stream import task_events
from tests.api.conftest import client_for, finish, make_task


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
    task = finish(make_task(alice), "failed")
    stream = client_for(alice).get(f"/api/tasks/{task.pk}/stream/")
    events = parse(list(stream.streaming_content))
    assert [kind for kind, _ in events] == ["retry", "end"]
    assert events[-1][1]["error_message"] == "it broke"


@pytest.mark.django_db
def test_stream_errors_are_json_even_for_an_event_source(alice: Any, bob: Any) -> None:
    task = make_task(bob)
    response = client_for(alice).get(
        f"/api/tasks/{task.pk}/stream/", HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


@pytest.mark.django_db
def test_heartbeats_and_the_time_limit() -> None:
    task = make_task()
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
    ]
    assert events[1][1]["status"] == "processing"


@pytest.mark.django_db
def test_a_deleted_task_ends_the_stream() -> None:
    task = make_task()
    stream = task_events(
        task.pk, poll_interval=0, heartbeat=10, max_seconds=10, sleep=lambda s: None
    )
    assert next(stream).startswith(b"retry:")
    task.delete()
    assert parse(list(stream)) == [
        ("end", {"status": None, "detail": "The task no longer exists."})
    ]
