"""The API against a real ``celery worker`` process, Redis and PostgreSQL (integration tier)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue.models import TaskLog
from tests.api.conftest import client_for
from tests.live import wait_for

pytestmark = pytest.mark.integration

CREATE = "/api/tasks/create_task/"


def status_of(pk: Any) -> str:
    return str(TaskLog.objects.values_list("status", flat=True).get(pk=pk))


def test_a_cancelled_running_task_does_not_complete(
    live_worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    response = api.post(
        CREATE,
        {"file_path": str(file_root / "a.txt"), "task_type": "file", "metadata": {"seconds": 30}},
        format="json",
    )
    assert response.status_code == 201, response.content
    pk = response.json()["id"]
    wait_for(lambda: TaskLog.objects.get(pk=pk).progress > 0, what="the task to run")
    assert api.post(f"/api/tasks/{pk}/cancel/", {"reason": "stop"}, format="json").json() == {
        "status": "cancelled",
        "cancelled_children": 0,
    }
    log = TaskLog.objects.get(pk=pk)
    wait_for(
        lambda: log.events.filter(event_type="revoked").exists(),
        what="the worker to stop the task",
    )
    progress_when_stopped = TaskLog.objects.get(pk=pk).progress
    time.sleep(1.0)  # a task that kept running would report more progress
    log.refresh_from_db()
    assert (log.status, log.error_message) == ("cancelled", "stop")
    assert log.progress == progress_when_stopped < 100
    assert log.result is None
    assert not log.events.filter(event_type="completed").exists()
    assert live_worker.hostname in log.worker


def test_a_retried_failed_task_runs_again_with_the_same_arguments(
    live_worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    marker = file_root / "go"
    metadata = {"fail_unless": str(marker), "n": 3}
    response = api.post(
        CREATE,
        {"file_path": str(file_root / "c.txt"), "task_type": "file", "metadata": metadata},
        format="json",
    )
    first_id = response.json()["id"]
    wait_for(lambda: status_of(first_id) == "failed", what="the first run to fail")
    first = TaskLog.objects.get(pk=first_id)
    assert first.error_code == "FileNotFoundError"
    marker.write_text("ok")
    response = api.post(f"/api/tasks/{first_id}/retry/", {}, format="json")
    assert response.status_code == 200
    new_id = response.json()["id"]
    wait_for(lambda: status_of(new_id) == "completed", what="the rerun to complete")
    rerun = TaskLog.objects.get(pk=new_id)
    assert (rerun.args, rerun.kwargs) == (first.args, first.kwargs)
    assert rerun.result == {"file_path": str(file_root / "c.txt"), "size": 30, "options": metadata}
    assert (rerun.retry_of_id, rerun.retry_count) == (first.pk, 1)
    # status/ joins the record with the Redis result backend.
    body = api.get(f"/api/tasks/status/{rerun.celery_task_id}/").json()
    assert body["celery"]["backend"] == "RedisBackend"
    assert (body["celery"]["state"], body["celery"]["ready"]) == ("SUCCESS", True)
    assert body["result"]["size"] == 30


@pytest.mark.parametrize("parallel", [True, False])
def test_bulk_runs_complete_and_aggregate(
    live_worker: Any, file_root: Path, alice: Any, parallel: bool
) -> None:
    api = client_for(alice)
    paths = [str(file_root / name) for name in ("a.txt", "b.txt", "c.txt")]
    response = api.post(
        "/api/tasks/bulk_create/",
        {"file_paths": paths, "task_type": "file", "parallel": parallel},
        format="json",
    )
    assert response.status_code == 201, response.content
    parent_id = response.json()["id"]
    wait_for(lambda: status_of(parent_id) == "completed", timeout=60, what="the bulk to end")
    parent = TaskLog.objects.get(pk=parent_id)
    children = list(TaskLog.objects.filter(parent=parent).order_by("started_at"))
    assert [c.status for c in children] == ["completed"] * 3
    assert parent.progress == 100
    assert parent.result == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0}
    assert TaskLog.objects.count() == 4  # no row was recorded twice
    if not parallel:
        # A chain starts its files in order. (Celery sends the next one as the
        # previous returns, just before its success is recorded.)
        assert [c.file_name for c in children] == ["a.txt", "b.txt", "c.txt"]
