"""Fixtures: the Celery app, an in-process worker on memory://, and helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
