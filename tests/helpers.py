"""Small helpers shared by the tests (no factory library)."""

from __future__ import annotations

import uuid
from typing import Any

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog


def make_log(**fields: Any) -> TaskLog:
    """Record a pending task through the lifecycle, as a producer would."""
    celery_task_id = fields.pop("celery_task_id", None) or str(uuid.uuid4())
    fields.setdefault("task_name", "tests.add")
    return lifecycle.create_task_log(celery_task_id, **fields)


def events(log: TaskLog) -> list[str]:
    """The task's event types, oldest first."""
    return list(log.events.order_by("created_at", "id").values_list("event_type", flat=True))


def finished(celery_task_id: str, timeout: float = 30.0) -> TaskLog:
    """Wait until the task's row reaches a terminal status; return it."""
    from tests.live import wait_for

    def get() -> TaskLog | None:
        return TaskLog.objects.filter(
            celery_task_id=celery_task_id, status__in=("completed", "failed", "cancelled")
        ).first()

    log: TaskLog = wait_for(get, timeout, what=f"task {celery_task_id} to finish")
    return log


def make_user(username: str, *, staff: bool = False) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, is_staff=staff
    )
