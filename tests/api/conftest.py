"""Fixtures of the API tests: users, clients, a file root and the task types."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import factories

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


@pytest.fixture
def alice() -> Any:
    return factories.user("alice")


@pytest.fixture
def bob() -> Any:
    return factories.user("bob")


@pytest.fixture
def staff() -> Any:
    return factories.user("staff", staff=True)


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
