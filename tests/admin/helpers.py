"""Helpers for the admin tests: tasks in a given state, written through the lifecycle."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus


def make_task(
    status: str = TaskStatus.PENDING,
    *,
    task_name: str = "tests.add",
    task_type: str = "sample",
    args: list[Any] | None = None,
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    completed_at: datetime | None = None,
    heartbeat_at: datetime | None = None,
    **fields: Any,
) -> TaskLog:
    """A TaskLog moved to ``status`` by the lifecycle functions, with optional timestamps.

    The timestamps are set afterwards with an UPDATE of those columns only (never
    the status), so tests can place tasks in time.
    """
    log = lifecycle.create_task_log(
        str(uuid.uuid4()),
        # A run started again begins in retrying: the simplest way to that status.
        status=TaskStatus.RETRYING if status == TaskStatus.RETRYING else TaskStatus.PENDING,
        task_name=task_name,
        args=[1, 2] if args is None else args,
        task_type=task_type,
        **fields,
    )
    cid = log.celery_task_id
    if status in (TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED):
        lifecycle.mark_started(cid, worker="worker@test")
    if status == TaskStatus.COMPLETED:
        lifecycle.mark_completed(cid, result={"sum": 3})
    elif status == TaskStatus.FAILED:
        lifecycle.mark_failed(
            cid,
            error_message="ValueError: boom",
            error_code="ValueError",
            traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: <boom>',
        )
    elif status == TaskStatus.CANCELLED:
        lifecycle.mark_cancelled(pk=log.pk, reason="not needed")
    stamps = {
        key: value
        for key, value in {
            "created_at": created_at,
            "started_at": started_at,
            "completed_at": completed_at,
            "heartbeat_at": heartbeat_at,
        }.items()
        if value is not None
    }
    if stamps:
        TaskLog.objects.filter(pk=log.pk).update(**stamps)
    log.refresh_from_db()
    assert log.status == status
    return log


def ago(**delta: float) -> datetime:
    """``timezone.now()`` minus a timedelta."""
    return timezone.now() - timedelta(**delta)


def staff_user(username: str, *perms: str) -> Any:
    """A staff user (not superuser) with the given ``django_taskqueue`` permission codenames."""
    user = get_user_model().objects.create_user(username=username, password="pw", is_staff=True)
    if perms:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="django_taskqueue", codename__in=perms
            )
        )
    return get_user_model().objects.get(pk=user.pk)
