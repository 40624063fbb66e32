"""The cancel and retry actions: lifecycle calls, per-row outcomes, permissions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from django_taskqueue.admin import tasklog as tasklog_admin
from django_taskqueue.models import TaskLog
from django_taskqueue.status import EventType, TaskStatus
from tests import factories

pytestmark = pytest.mark.django_db

URL = reverse("admin:django_taskqueue_tasklog_changelist")


def run_action(client: Any, action: str, tasks: list[TaskLog], **extra: str) -> list[str]:
    response = client.post(
        URL,
        {"action": action, "_selected_action": [str(t.pk) for t in tasks], **extra},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)] or [
        str(m) for m in response.context["messages"]
    ]


def test_cancel_reports_done_and_skipped_with_reasons(admin_client: Any) -> None:
    pending = factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)
    running = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    done = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    failed = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    messages = run_action(admin_client, "cancel_tasks", [pending, running, done, failed])
    assert "Cancelled 2 tasks." in messages
    skipped = next(m for m in messages if m.startswith("Skipped"))
    assert skipped.startswith("Skipped 2 tasks:")
    assert "already completed" in skipped
    assert "already failed" in skipped
    for task, status in (
        (pending, TaskStatus.CANCELLED),
        (running, TaskStatus.CANCELLED),
        (done, TaskStatus.COMPLETED),
        (failed, TaskStatus.FAILED),
    ):
        task.refresh_from_db()
        assert task.status == status
    event = running.events.get(event_type=EventType.CANCELLED)
    assert event.metadata["by_username"] == "admin"
    assert event.message == "cancelled in the admin"
    # The refused attempts leave their trace in the audit trail.
    assert done.events.filter(event_type=EventType.IGNORED).exists()


def test_cancel_needs_the_permission(client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    client.force_login(
        factories.user("viewer", staff=True, perms=("view_tasklog", "retry_tasklog"))
    )
    messages = run_action(client, "cancel_tasks", [task])
    assert not any(m.startswith("Cancelled") for m in messages)
    task.refresh_from_db()
    assert task.status == TaskStatus.PROCESSING
    client.force_login(
        factories.user("canceller", staff=True, perms=("view_tasklog", "cancel_tasklog"))
    )
    assert "Cancelled 1 task." in run_action(client, "cancel_tasks", [task])


def test_retry_runs_failed_and_cancelled_again_and_skips_the_rest(
    admin_client: Any, celery_app: Any
) -> None:
    failed = factories.task(TaskStatus.FAILED, args=[2, 3], task_type="sample")
    cancelled = factories.task(TaskStatus.CANCELLED, **factories.SAMPLE_TASK)
    done = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    running = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    unknown = factories.task(TaskStatus.FAILED, task_name="not.registered", **factories.SAMPLE_TASK)
    messages = run_action(admin_client, "retry_tasks", [failed, cancelled, done, running, unknown])
    assert "Started 2 tasks again." in messages
    skipped = next(m for m in messages if m.startswith("Skipped"))
    assert skipped.startswith("Skipped 3 tasks:")
    assert "only failed or cancelled tasks can be retried" in skipped
    assert "pass force" in skipped
    assert "not a registered TrackedTask" in skipped
    new = TaskLog.objects.get(retry_of=failed)
    assert new.args == [2, 3]
    assert new.status == TaskStatus.RETRYING
    assert new.retry_count == failed.retry_count + 1
    assert TaskLog.objects.filter(retry_of=cancelled).exists()
    assert not TaskLog.objects.filter(retry_of__in=[done, running, unknown]).exists()
    running.refresh_from_db()
    assert running.status == TaskStatus.PROCESSING


def test_retry_needs_the_permission(client: Any, celery_app: Any) -> None:
    task = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    client.force_login(
        factories.user("canceller", staff=True, perms=("view_tasklog", "cancel_tasklog"))
    )
    run_action(client, "retry_tasks", [task])
    assert not TaskLog.objects.filter(retry_of=task).exists()


def test_action_is_limited_per_run(admin_client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(tasklog_admin, "ACTION_LIMIT", 2)
    tasks = [factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK) for _ in range(3)]
    messages = run_action(admin_client, "cancel_tasks", tasks)
    assert "Cancelled 2 tasks." in messages
    assert any("Only the newest 2 selected tasks were processed" in m for m in messages)
    assert TaskLog.objects.filter(status=TaskStatus.PENDING).count() == 1


def test_select_across_uses_the_filtered_list(admin_client: Any) -> None:
    keep = factories.task(TaskStatus.PROCESSING, task_type="keep", args=[1, 2])
    hit = factories.task(TaskStatus.PROCESSING, task_type="hit", args=[1, 2])
    response = admin_client.post(
        URL + "?task_type=hit",
        {
            "action": "cancel_tasks",
            "select_across": "1",
            "index": "0",
            "_selected_action": [str(hit.pk)],
        },
        follow=True,
    )
    assert response.status_code == 200
    hit.refresh_from_db()
    keep.refresh_from_db()
    assert hit.status == TaskStatus.CANCELLED
    assert keep.status == TaskStatus.PROCESSING
