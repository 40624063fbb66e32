"""Starting tasks while the broker is down or frozen (integration tier).

A private ``redis-server`` is both the broker and the result backend, as in
production; the tests kill it (connections refused) or freeze it with SIGSTOP
(connections accepted, nothing answered) and time the API's answers against
``PUBLISH_TIMEOUT``. A real worker on the same Redis shows what became of each
task once Redis is back. Run with ``-s`` to see the measured times.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from celery import Celery

from django_taskqueue.exceptions import PublishError
from django_taskqueue.models import TaskLog
from django_taskqueue.publishing import bound_publish_waits
from tests.api.conftest import client_for
from tests.live import wait_for, worker_env, worker_process
from tests.servers import RedisServer, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

CREATE = "/api/tasks/create_task/"
DEADLINE = 3.0


def status_of(pk: Any) -> str:
    return str(TaskLog.objects.values_list("status", flat=True).get(pk=pk))


def app_on(server: RedisServer) -> Celery:
    """A fresh Celery app (new connections) on the private Redis, its waits bounded."""
    import tests.tasks  # noqa: F401  (the shared tasks register with the new app too)

    app = Celery("publish-faults", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=server.url(), result_backend=server.url())
    bound_publish_waits(app, DEADLINE)
    return app


@pytest.fixture
def private(
    redis_server: RedisServer,  # noqa: F811
    celery_app: Celery,
    transactional_db: Any,
    settings: Any,
    file_root: Path,
) -> Iterator[RedisServer]:
    """The private Redis, with the current app and PUBLISH_TIMEOUT pointed at it."""
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "PUBLISH_TIMEOUT": DEADLINE}
    app = app_on(redis_server)
    app.set_current()
    try:
        yield redis_server
    finally:
        celery_app.set_current()
        for task in list(celery_app.tasks.values()):
            if getattr(type(task), "_app", None) is not celery_app:
                task.bind(celery_app)


def timed_post(api: Any, body: dict[str, Any], key: str | None = None) -> tuple[Any, float]:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    started = time.monotonic()
    response = api.post(CREATE, body, format="json", **headers)
    return response, time.monotonic() - started


def assert_503(response: Any, elapsed: float, code: str) -> TaskLog:
    assert response.status_code == 503, response.content
    assert elapsed < DEADLINE, f"answered after {elapsed:.2f}s"
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    assert body["code"] == code, body
    return TaskLog.objects.get(pk=body["id"])


def first_task_done(user: Any, file_root: Path) -> tuple[Any, dict[str, Any]]:
    """The user's API client and a task's body, once a task has run (the connections are warm)."""
    api = client_for(user)
    body = {"file_path": str(file_root / "a.txt"), "task_type": "file"}
    response, _ = timed_post(api, body)
    assert response.status_code == 201
    wait_for(lambda: status_of(response.json()["id"]) == "completed", what="the first task")
    return api, body


@pytest.fixture
def private_worker(private: RedisServer, tmp_path: Path) -> Iterator[Any]:
    env = worker_env(
        TASKQUEUE_TEST_BROKER=private.url(), TASKQUEUE_TEST_RESULT_BACKEND=private.url()
    )
    from celery import current_app

    with worker_process(tmp_path, env=env, control_app=current_app) as worker:
        yield worker


def test_redis_down_answers_503_in_time_and_frees_the_key(
    private: RedisServer, private_worker: Any, file_root: Path, alice: Any
) -> None:
    api, body = first_task_done(alice, file_root)

    private.kill()
    times = []
    for _ in range(2):  # the first call finds the pooled connections dead, the second none
        response, elapsed = timed_post(api, body, key="upload-1")
        log = assert_503(response, elapsed, "broker_unavailable")
        assert (log.status, log.error_code, log.idempotency_key) == (
            "failed",
            "publish_failed",
            None,
        )
        assert "could not be reached" in log.error_message
        times.append(elapsed)
    print(
        f"\nRedis down: 503 after {', '.join(f'{t:.2f}' for t in times)} s (deadline {DEADLINE} s)"
    )
    assert not TaskLog.objects.filter(status="pending").exists()

    # Back up: the key of the failed start is free, so the client's retry starts the task.
    private.start()
    response, _ = timed_post(api, body, key="upload-1")
    assert response.status_code == 201, response.content
    wait_for(lambda: status_of(response.json()["id"]) == "completed", timeout=60, what="the rerun")
    assert TaskLog.objects.filter(idempotency_key="upload-1").count() == 1


def test_redis_frozen_answers_503_in_time_and_a_keyed_retry_starts_nothing_twice(
    private: RedisServer, private_worker: Any, file_root: Path, alice: Any
) -> None:
    api, body = first_task_done(alice, file_root)

    private.freeze()
    # The pooled connections take the message; Redis never answers.
    response, elapsed = timed_post(api, body, key="upload-2")
    log = assert_503(response, elapsed, "publish_unknown")
    assert (log.status, log.error_code) == ("pending", "publish_unknown")
    assert log.events.filter(event_type="publish_unknown").exists()
    # The client retries with its key: the same task, at once, nothing sent.
    replay, replay_time = timed_post(api, body, key="upload-2")
    assert replay.status_code == 200, replay.content
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == str(log.pk)
    # A new process (no warm connections) fails in the result backend, before sending.
    from celery import current_app

    cold = app_on(private)
    cold.set_current()
    try:
        response, cold_time = timed_post(api, body, key="upload-3")
    finally:
        current_app.set_current()
    cold_log = assert_503(response, cold_time, "broker_unavailable")
    assert (cold_log.status, cold_log.error_code) == ("failed", "publish_failed")
    print(
        f"\nRedis frozen: 503 after {elapsed:.2f} s (warm, publish_unknown), "
        f"{cold_time:.2f} s (cold, broker_unavailable); keyed replay {replay_time:.3f} s "
        f"(deadline {DEADLINE} s)"
    )

    # Thawed, Redis takes the message it held: the task runs, once.
    private.thaw()
    wait_for(lambda: status_of(log.pk) == "completed", timeout=60, what="the unconfirmed task")
    log.refresh_from_db()
    assert (log.error_code, log.error_message) == ("", "")
    assert TaskLog.objects.filter(idempotency_key="upload-2").count() == 1
    assert log.events.filter(event_type="started").count() == 1
    assert not TaskLog.objects.filter(status="pending").exists()


def test_submit_and_delay_raise_publish_error_in_time(
    private: RedisServer, file_root: Path
) -> None:
    from tests.tasks import add

    assert add.submit(args=(1, 2)).status == "pending"  # warm connections
    private.freeze()
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        add.submit(args=(1, 2), idempotency_key="nightly")
    submit_time = time.monotonic() - started
    assert caught.value.sent is None
    assert caught.value.task_log is not None
    assert caught.value.task_log.error_code == "publish_unknown"
    started = time.monotonic()
    # A plain delay() is Celery's own publish (its retry policy, its error), bounded
    # here only by the app's socket timeouts (bound_publish_waits); the row says so.
    with pytest.raises(Exception) as raised:  # noqa: PT011 (whatever Celery raises)
        add.delay(3, 4)
    delay_time = time.monotonic() - started
    assert not isinstance(raised.value, PublishError)
    delayed = TaskLog.objects.filter(task_name="tests.add", args=[3, 4]).get()
    assert delayed.error_code in ("publish_unknown", "publish_failed")
    private.thaw()
    private.kill()
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        add.submit(args=(5, 6))
    down_time = time.monotonic() - started
    assert caught.value.sent is False
    assert status_of(caught.value.task_log.pk) == "failed"  # type: ignore[union-attr]
    print(
        f"\nsubmit() frozen {submit_time:.2f} s, delay() frozen {delay_time:.2f} s, "
        f"submit() down {down_time:.2f} s (deadline {DEADLINE} s)"
    )
    assert max(submit_time, delay_time, down_time) < DEADLINE
