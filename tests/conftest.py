"""Fixtures: the Celery app, an in-process worker on memory://, and helpers."""

from __future__ import annotations

import os
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from tests.celery_app import app as celery_app_instance

INTEGRATION = os.environ.get("TASKQUEUE_TEST_DB") == "postgres"


@pytest.fixture(scope="session")
def celery_app() -> Celery:
    import tests.tasks  # noqa: F401  (registers the sample tasks)

    # Settings pick the broker: memory:// by default, Redis in the integration env.
    return celery_app_instance


@pytest.fixture
def worker(celery_app: Celery, transactional_db: Any) -> Iterator[Any]:
    """An in-process worker (threads pool) on the memory:// transport.

    ``transactional_db``: the worker's threads use their own database
    connections, so test data must be committed to be seen.
    """
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=10.0,
    ) as w:
        yield w


@pytest.fixture
def live_worker(celery_app: Celery, transactional_db: Any, tmp_path: Any) -> Iterator[Any]:
    """A real ``celery worker`` process (prefork, 2 children) on Redis and PostgreSQL.

    Only for tests marked ``integration`` (run with ``TASKQUEUE_TEST_DB=postgres``).
    """
    from tests.live import worker_process

    with worker_process(tmp_path) as process:
        yield process


@pytest.fixture(autouse=True)
def _fresh_failure_log() -> None:
    """Each test starts without the recording failures an earlier one left (they rate-limit)."""
    from django_taskqueue.failurelog import recording_failures

    recording_failures.reset()


@dataclass
class UnimportedTasks:
    """A package of tasks that nothing has imported yet, as a host's app in the web process."""

    package: str  # {package}.tasks: resize, thumbnail (named renamed_{package}.thumbnail), plain
    resize: str
    thumbnail: str
    plain: str


@pytest.fixture
def unimported_tasks(
    celery_app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> UnimportedTasks:
    """A new package on ``sys.path`` whose ``tasks`` module defines tracked tasks, not imported.

    Not in ``INSTALLED_APPS`` (a test adds it to have it discovered), and the
    discovery of :mod:`django_taskqueue.registry` may run again in the test.
    """
    from django_taskqueue import registry

    package = f"tq_host_{uuid.uuid4().hex[:12]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "tasks.py").write_text(
        textwrap.dedent(
            f"""
            from celery import shared_task

            from django_taskqueue import TrackedTask


            @shared_task(base=TrackedTask, bind=True)
            def resize(self, file_path, **options):
                return file_path


            @shared_task(base=TrackedTask, bind=True, name="renamed_{package}.thumbnail")
            def thumbnail(self, file_path, **options):
                return file_path


            @shared_task
            def plain(file_path, **options):
                return file_path
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_discovered", threading.Event())
    return UnimportedTasks(
        package,
        f"{package}.tasks.resize",
        f"renamed_{package}.thumbnail",
        f"{package}.tasks.plain",
    )


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Skip the tiers that need servers outside their envs.

    Integration tests need PostgreSQL and Redis (``TASKQUEUE_TEST_DB=postgres``);
    the fault suite starts its own and runs under its own settings module.
    """
    from django.conf import settings

    faults = bool(getattr(settings, "TASKQUEUE_FAULTS", False))
    skip_integration = pytest.mark.skip(
        reason="integration tier: run with TASKQUEUE_TEST_DB=postgres (tox -e integration)"
    )
    skip_faults = pytest.mark.skip(
        reason="fault suite: run with --ds tests.faults.settings -m faults (tox -e faults)"
    )
    for item in items:
        if "faults" in item.keywords and not faults:
            item.add_marker(skip_faults)
        elif "integration" in item.keywords and not INTEGRATION:
            item.add_marker(skip_integration)
