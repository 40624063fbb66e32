"""Poison messages: nothing a producer sends may take a real worker down.

A message whose arguments nest a few hundred levels deep made the prefork
worker's main process die with ``RecursionError`` while pickling it for the
pool; the broker gave the message back, so every restart died again. These
tests run a real ``celery worker`` process on Redis and PostgreSQL, try to
poison it, and check that it is refused at the producer and that the worker
keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import current_app

from django_taskqueue.exceptions import MessageRefused
from django_taskqueue.models import TaskLog
from tests import factories, tasks
from tests.live import wait_finished

pytestmark = pytest.mark.integration

# Deep enough to kill the worker's main process (it died at 900 here, and at a
# few hundred elsewhere), shallow enough for DRF's parser to read it.
POISON_DEPTH = 900


@pytest.fixture
def purge_after() -> Iterator[None]:
    """Purge the queue at the end, once the worker has stopped and given back what it held.

    Asked for before ``live_worker``, so it is torn down after it: a poison
    message that got through must not kill the workers of later tests.
    """
    yield
    current_app.control.purge()


def assert_serving(worker: Any) -> None:
    assert worker.process.poll() is None, f"the worker died:\n{worker.log[-3000:]}"
    log = wait_finished(tasks.add.delay(20, 22).id)
    assert (log.status, log.result) == ("completed", 42)
    assert worker.process.poll() is None, worker.log[-3000:]


def test_deep_metadata_over_the_api_is_a_400_and_the_worker_keeps_serving(
    purge_after: None, live_worker: Any, tmp_path: Path, settings: Any
) -> None:
    pytest.importorskip("rest_framework")
    from tests.api.conftest import TASK_TYPES, client_for

    root = tmp_path / "files"
    root.mkdir()
    (root / "a.txt").write_text("x")
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "TASK_TYPES": TASK_TYPES,
        "ALLOWED_FILE_ROOTS": [str(root)],
    }
    api = client_for(factories.user("alice"))
    deep = '{"a":' * POISON_DEPTH + "{}" + "}" * POISON_DEPTH
    for url, body in (
        ("/api/tasks/create_task/", f'{{"file_path": "{root}/a.txt", "task_type": "file", '),
        ("/api/tasks/bulk_create/", f'{{"file_paths": ["{root}/a.txt"], "task_type": "file", '),
    ):
        response = api.post(url, body + f'"metadata": {deep}}}', content_type="application/json")
        assert response.status_code == 400, response.content[:300]
        assert "API_JSON_MAX_DEPTH" in response.json()["detail"]
    assert not TaskLog.objects.exists()  # refused before anything was recorded
    assert_serving(live_worker)


def test_a_deep_delay_is_refused_at_the_producer(purge_after: None, live_worker: Any) -> None:
    with pytest.raises(MessageRefused) as refused:
        tasks.echo.delay(x=tasks.nested(POISON_DEPTH))
    assert refused.value.code == "too_deep"
    assert "MESSAGE_MAX_DEPTH" in refused.value.messages[0]
    assert not TaskLog.objects.exists()
    assert_serving(live_worker)


def test_a_deep_result_is_recorded_and_the_worker_keeps_serving(live_worker: Any) -> None:
    # Celery's JSON result backend cannot encode it either: without a result
    # to store, the tracked result was the only encoding, and it raised out of
    # on_success, leaving the task "processing" for ever.
    result = tasks.deep_result.apply_async((5000,), ignore_result=True)
    log = wait_finished(result.id)
    assert log.status == "completed"
    assert log.result is not None
    assert log.result["truncated"] is True
    assert log.result["repr"].startswith("{'a': {'a':")
    assert_serving(live_worker)
