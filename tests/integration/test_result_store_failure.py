"""A worker whose result backend cannot store the outcome (integration tier).

Celery then sends ``task_internal_error`` and runs neither ``on_success`` nor
``on_failure``; the TaskLog must still say what happened. The worker's broker is
the shared Redis, its result backend a private ``redis-server`` the test kills.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from django_taskqueue.models import TaskLog
from tests.live import wait_for, worker_env, worker_process
from tests.servers import RedisServer, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

# One quick reconnect instead of Celery's 20 a second apart, to keep the test short.
_RETRY_ONCE = {"retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0}}


def ended(pk: Any) -> TaskLog | None:
    log = TaskLog.objects.get(pk=pk)
    return log if log.status in ("completed", "failed") else None


def test_an_outcome_the_result_backend_cannot_store_is_recorded(
    redis_server: RedisServer,  # noqa: F811
    transactional_db: Any,
    tmp_path: Path,
) -> None:
    from tests.tasks import add, boom

    env = worker_env(
        TASKQUEUE_TEST_RESULT_BACKEND=redis_server.url(),
        TASKQUEUE_TEST_RESULT_BACKEND_OPTIONS=json.dumps(_RETRY_ONCE),
    )
    with worker_process(tmp_path, env=env) as worker:
        redis_server.kill()
        returned = add.submit(args=(2, 3))
        raised = boom.submit(args=("it broke",))
        done = wait_for(lambda: ended(returned.pk), timeout=60, what="the returned task")
        failed = wait_for(lambda: ended(raised.pk), timeout=60, what="the failed task")
        assert worker.process.poll() is None  # the worker lives on

    # The body returned: completed, with its result, and a warning that Celery
    # could not store it.
    assert (done.status, done.result, done.error_code) == ("completed", 5, "result_not_stored")
    assert "could not store" in done.error_message
    assert done.events.filter(event_type="internal_error").exists()
    assert not done.events.filter(event_type__in=("failed", "ignored")).exists()
    # The body raised: failed with its own error, and the same warning.
    assert (failed.status, failed.error_code) == ("failed", "result_not_stored")
    assert "ValueError: it broke" in failed.error_message
    assert "could not store" in failed.error_message
    assert "ValueError" in failed.traceback
    assert failed.events.filter(event_type="internal_error").exists()


def test_a_result_the_backend_cannot_serialise_is_a_failure_as_celery_says(
    live_worker: Any,
) -> None:
    # Celery catches the EncodeError of storing the result and stores a
    # failure instead (calling on_failure): the row agrees with Celery.
    from tests.tasks import unserializable_stored_result

    log = unserializable_stored_result.submit()
    log = wait_for(lambda: ended(log.pk), timeout=30, what="the task to end")
    assert (log.status, log.error_code) == ("failed", "EncodeError")
    assert live_worker.process.poll() is None
