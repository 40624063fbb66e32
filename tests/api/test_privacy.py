"""What the API shows: secrets redacted for everyone, server details for staff only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from celery.result import AsyncResult

from django_taskqueue import actions, lifecycle
from django_taskqueue.models import TaskLog
from tests import factories
from tests.api.conftest import client_for
from tests.live import wait_for

LIST = "/api/tasks/"
CREATE = "/api/tasks/create_task/"
MASK = "********"
WORKER = "celery@db-7.internal"
TRACEBACK = (
    'Traceback (most recent call last):\n  File "/srv/app/jobs/tasks.py", line 9\nValueError'
)


# --- secrets in what a task was started with ---------------------------------------------------


def test_secret_metadata_reaches_the_task_but_is_stored_and_shown_redacted(
    worker: Any, file_root: Path, alice: Any, staff: Any
) -> None:
    metadata = {
        "X-Api-Key": "k-123",
        "passphrase": "open sesame",
        "source": "postgres://app:s3cr3t@db/app",
        "quality": "high",
    }
    response = client_for(alice).post(
        CREATE,
        {"file_path": str(file_root / "a.txt"), "task_type": "file", "metadata": metadata},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    # What the worker ran with, read back from Celery's result backend: the caller's data.
    ran: AsyncResult[dict[str, Any]] = AsyncResult(body["celery_task_id"])
    assert ran.get(timeout=20)["options"] == metadata
    wait_for(
        lambda: TaskLog.objects.filter(pk=body["id"], status="completed").exists(),
        what="the task to complete",
    )
    redacted = {
        "X-Api-Key": MASK,
        "passphrase": MASK,
        "source": f"postgres://app:{MASK}@db/app",
        "quality": "high",
    }
    for user in (alice, staff):
        detail = client_for(user).get(f"{LIST}{body['id']}/").json()
        assert detail["metadata"] == redacted
        assert detail["kwargs"] == redacted
        assert detail["result"]["options"] == redacted
        assert "s3cr3t" not in str(detail)
        assert "sesame" not in str(detail)
        # The stored arguments are not the real ones, so a re-run is refused (409).
        assert detail["args_redacted"] is True


# --- server details: staff only --------------------------------------------------------------


@pytest.fixture
def tasks_of_alice(alice: Any, staff: Any) -> tuple[TaskLog, TaskLog]:
    """Two of alice's tasks: one failed on WORKER with a traceback, one cancelled by staff."""
    failed = factories.task(owner=alice, args=["/srv/files/a.txt"], **factories.FILE_TASK)
    lifecycle.mark_started(failed.celery_task_id, worker=WORKER)
    lifecycle.mark_failed(
        failed.celery_task_id,
        error_message=f"worker lost: no heartbeat from {WORKER} for over 0:15:00",
        error_code="worker_lost",
        traceback=TRACEBACK,
        metadata={"worker": WORKER},
    )
    cancelled = factories.task(owner=alice, **factories.FILE_TASK)
    lifecycle.mark_started(cancelled.celery_task_id, worker=WORKER)
    actions.cancel(cancelled, reason="maintenance", user=staff, revoke=False)
    return failed, cancelled


@pytest.mark.django_db
def test_an_owner_does_not_see_tracebacks_hostnames_or_staff_names(
    tasks_of_alice: tuple[TaskLog, TaskLog], alice: Any
) -> None:
    api = client_for(alice)
    failed, cancelled = tasks_of_alice
    detail = api.get(f"{LIST}{failed.pk}/").json()
    assert detail["traceback"] == ""
    assert detail["worker"] == ""
    assert detail["error_message"] == "worker lost: no heartbeat from a worker for over 0:15:00"
    status = api.get(f"{LIST}status/{failed.celery_task_id}/").json()
    assert status["error"]["message"] == detail["error_message"]
    shown: list[Any] = [detail, status]
    for task in (failed, cancelled):
        shown.append(api.get(f"{LIST}{task.pk}/").json())
        shown.append(api.get(f"{LIST}{task.pk}/events/").json()["results"])
    for payload in shown:
        text = str(payload)
        assert WORKER not in text
        assert "/srv/app" not in text
        assert "staff" not in text  # the staff user who cancelled it
        assert "by_user_id" not in text
    events = api.get(f"{LIST}{cancelled.pk}/events/").json()["results"]
    started = next(e for e in events if e["event_type"] == "started")
    assert (started["message"], started["metadata"]) == ("started on a worker", {"attempt": 0})
    cancel = next(e for e in events if e["event_type"] == "cancelled")
    assert cancel["message"] == "maintenance"
    assert cancel["metadata"] == {"reason": "maintenance", "terminate": False}


@pytest.mark.django_db
def test_the_event_stream_does_not_name_the_worker_to_an_owner(
    tasks_of_alice: tuple[TaskLog, TaskLog], alice: Any, staff: Any
) -> None:
    failed, _ = tasks_of_alice
    owner_stream = client_for(alice).get(f"{LIST}{failed.pk}/stream/")
    text = b"".join(owner_stream.streaming_content).decode()
    assert "no heartbeat from a worker for over 0:15:00" in text
    assert WORKER not in text
    assert '"worker"' not in text
    staff_stream = client_for(staff).get(f"{LIST}{failed.pk}/stream/")
    assert WORKER in b"".join(staff_stream.streaming_content).decode()


@pytest.mark.django_db
def test_staff_see_everything(tasks_of_alice: tuple[TaskLog, TaskLog], staff: Any) -> None:
    api = client_for(staff)
    failed, cancelled = tasks_of_alice
    detail = api.get(f"{LIST}{failed.pk}/").json()
    assert detail["traceback"] == TRACEBACK
    assert detail["worker"] == WORKER
    assert WORKER in detail["error_message"]
    events = api.get(f"{LIST}{cancelled.pk}/events/").json()["results"]
    cancel = next(e for e in events if e["event_type"] == "cancelled")
    assert cancel["metadata"]["by_username"] == "staff"
    started = next(e for e in events if e["event_type"] == "started")
    assert started["message"] == f"started on {WORKER}"


@pytest.mark.django_db
def test_a_setting_shows_owners_the_details_too(
    tasks_of_alice: tuple[TaskLog, TaskLog], alice: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_EXPOSE_ERROR_DETAILS": True}
    failed, cancelled = tasks_of_alice
    detail = client_for(alice).get(f"{LIST}{failed.pk}/").json()
    assert detail["traceback"] == TRACEBACK
    assert detail["worker"] == WORKER
    detail = client_for(alice).get(f"{LIST}{cancelled.pk}/").json()
    assert any(e["metadata"].get("by_username") == "staff" for e in detail["events"])
