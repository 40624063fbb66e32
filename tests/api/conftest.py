"""Fixtures of the API tests: users, clients, a file root and the task types."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite

TASK_TYPES = {
    "file": "tests.process_file",
    "sample": "tests.add",
    "untracked": "tests.untracked",
    "ghost": "tests.not_registered",
}


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Basic auth checks the password on every request: keep the hashing cheap.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def file_root(tmp_path: Path, settings: Any) -> Path:
    """An allowed directory with a few files, and TASK_TYPES for the API."""
    root = tmp_path / "files"
    root.mkdir()
    for name, size in (("a.txt", 10), ("b.txt", 20), ("c.txt", 30)):
        (root / name).write_bytes(b"x" * size)
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "TASK_TYPES": TASK_TYPES,
        "ALLOWED_FILE_ROOTS": [str(root)],
    }
    return root


def make_user(username: str, **fields: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        username=username, password=f"pw-{username}", **fields
    )


@pytest.fixture
def alice() -> Any:
    return make_user("alice")


@pytest.fixture
def bob() -> Any:
    return make_user("bob")


@pytest.fixture
def staff() -> Any:
    return make_user("staff", is_staff=True)


def basic(user: Any) -> str:
    token = base64.b64encode(f"{user.username}:pw-{user.username}".encode()).decode()
    return f"Basic {token}"


def client_for(user: Any | None) -> Any:
    """An APIClient that authenticates as ``user`` with HTTP Basic (a real authentication)."""
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=basic(user))
    return client


@pytest.fixture
def api(alice: Any) -> Any:
    return client_for(alice)


def make_task(owner: Any = None, **fields: Any) -> TaskLog:
    """Record a pending task through the lifecycle, as a producer would."""
    fields.setdefault("task_name", "tests.process_file")
    fields.setdefault("task_type", "file")
    return lifecycle.create_task_log(str(uuid.uuid4()), owner=owner, **fields)


def finish(log: TaskLog, status: str, **kwargs: Any) -> TaskLog:
    """Move a task to a terminal status through the lifecycle."""
    lifecycle.mark_started(log.celery_task_id)
    if status == "completed":
        lifecycle.mark_completed(log.celery_task_id, result=kwargs.get("result", {"ok": True}))
    elif status == "failed":
        lifecycle.mark_failed(log.celery_task_id, error_message="it broke", error_code="ValueError")
    elif status == "cancelled":
        lifecycle.mark_cancelled(log.celery_task_id, reason="no longer needed")
    log.refresh_from_db()
    return log


def running_task(owner: Any = None, progress: int = 40, message: str = "resized") -> TaskLog:
    """A task in ``processing`` at ``progress``, as a worker would have left it."""
    task = make_task(owner)
    lifecycle.mark_started(task.celery_task_id)
    set_progress(task, progress, message)
    return task


def set_progress(task: TaskLog, progress: int, message: str = "") -> None:
    """Record a progress value of a running task through the lifecycle."""
    lifecycle.record_progress(
        ProgressWrite(progress, message, None, False), celery_task_id=task.celery_task_id
    )


@pytest.fixture
def dead_broker(celery_app: Any) -> Iterator[Any]:
    """Make a Celery app whose broker is a closed port the current app, for one test."""
    from celery import Celery

    import tests.tasks  # noqa: F401  (the shared tasks register with the new app too)

    app = Celery("dead-broker", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url="redis://127.0.0.1:1/0",
        result_backend="cache+memory://",
        broker_connection_timeout=1,
    )
    app.set_current()
    try:
        yield app
    finally:
        celery_app.set_current()
        # Registering hand-written TrackedTask subclasses with the new app bound
        # their classes to it (Task.bind is a classmethod): bind them back.
        for task in list(celery_app.tasks.values()):
            if getattr(type(task), "_app", None) is app:
                task.bind(celery_app)
