"""Fixtures: the Celery app, an in-process worker on memory://, and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from tests.celery_app import app as celery_app_instance


@pytest.fixture(scope="session")
def celery_app() -> Celery:
    import tests.tasks  # noqa: F401  (registers the sample tasks)

    celery_app_instance.conf.update(broker_url="memory://", result_backend="cache+memory://")
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
