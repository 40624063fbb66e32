"""Tracking changes no behaviour of Celery: what Celery does is what is recorded.

Each test states a behaviour Celery's own test suite relies on (see
``tests/celery_suite``), and checks both that Celery still does it and that the
record says what Celery did.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import chain
from kombu.exceptions import EncodeError

from django_taskqueue import lifecycle
from django_taskqueue.exceptions import MessageRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories, tasks
from tests.live import wait_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


#: The events of a task whose attempts 0 and 1 scheduled a retry and whose attempt 2 ended it.
TWO_RETRIES_THEN_DONE = ["created", *["started", "retried"] * 2, "started", "completed"]


#: The events of a task that completed, then ran again under the same id and completed.
RAN_TWICE = ["created", "started", "completed", "reopened", "started", "completed"]


def status_and_result(log: TaskLog) -> tuple[str, Any]:
    log.refresh_from_db()
    return log.status, log.result


class TestValidateFirst:
    """A call Celery refuses raises what Celery raises, and leaves no row."""

    def test_args_that_are_not_a_list_raise_type_error(self, celery_app: Any) -> None:
        with pytest.raises(TypeError, match="list or tuple"):
            tasks.echo.apply_async("s", {})
        with pytest.raises(TypeError, match="mapping"):
            tasks.echo.apply_async([], "str")  # type: ignore[arg-type]
        assert not TaskLog.objects.exists()

    def test_arguments_the_task_cannot_take_raise_type_error(self, celery_app: Any) -> None:
        with pytest.raises(TypeError) as raised:
            tasks.add.delay(1)
        # Still the package's refusal, for the API and forms that catch ValidationError.
        assert isinstance(raised.value, MessageRefused)
        assert not TaskLog.objects.exists()

    def test_an_unencodable_message_raises_encode_error(self, celery_app: Any) -> None:
        with pytest.raises(EncodeError):
            tasks.echo.apply_async((1, {1}))
        assert not TaskLog.objects.exists()

    def test_a_plain_publish_is_celerys_own(self, celery_app: Any, monkeypatch: Any) -> None:
        sent: list[dict[str, Any]] = []

        def send_task(*args: Any, **kwargs: Any) -> Any:
            sent.append(kwargs)
            raise ConnectionRefusedError("no broker here")

        monkeypatch.setattr(celery_app, "send_task", send_task)
        # Celery's own exception, not the package's PublishError...
        with pytest.raises(ConnectionRefusedError):
            tasks.add.delay(1, 2)
        # ...and Celery's own publish options: no retry policy added.
        assert "retry_policy" not in sent[0]
        assert "retry" not in sent[0]
        log = TaskLog.objects.get()
        assert (log.status, log.error_code) == (TaskStatus.FAILED, lifecycle.PUBLISH_FAILED)


class TestEagerRuns:
    def test_retry_without_throw_ends_as_celery_ends_it(self, celery_app: Any) -> None:
        result = tasks.retry_without_throw.apply()
        assert (result.state, result.get()) == ("SUCCESS", 42)
        log = TaskLog.objects.get(celery_task_id=result.id)
        assert (log.status, log.result, log.retry_count, log.attempt) == (
            TaskStatus.COMPLETED,
            42,
            2,
            2,
        )
        assert factories.events(log) == TWO_RETRIES_THEN_DONE

    def test_apply_with_throw_records_the_failure(self, celery_app: Any) -> None:
        with pytest.raises(ValueError, match="thrown"):
            tasks.boom.apply(kwargs={"message": "thrown"}, throw=True)
        log = TaskLog.objects.get(task_name="tests.boom")
        assert (log.status, log.error_code, log.error_message) == (
            TaskStatus.FAILED,
            "ValueError",
            "thrown",
        )
        assert "ValueError" in log.traceback

    def test_eager_propagates_records_the_failure(self, celery_app: Any) -> None:
        celery_app.conf.task_eager_propagates = True
        try:
            with pytest.raises(ValueError, match="boom"):
                tasks.boom.apply()
        finally:
            celery_app.conf.task_eager_propagates = False
        assert TaskLog.objects.get(task_name="tests.boom").status == TaskStatus.FAILED

    def test_reject_without_requeue_fails_the_task(self, celery_app: Any) -> None:
        result = tasks.rejects.apply()
        assert result.state == "REJECTED"
        log = TaskLog.objects.get(celery_task_id=result.id)
        assert (log.status, log.error_code) == (TaskStatus.FAILED, "rejected")
        assert "no thanks" in log.error_message

    def test_an_eager_run_keeps_no_heartbeat_in_the_caller(self, celery_app: Any) -> None:
        import threading

        before = {t.ident for t in threading.enumerate() if t.name == "django-taskqueue-heartbeat"}
        assert tasks.kept_alive.apply().get() is False
        after = {t.ident for t in threading.enumerate() if t.name == "django-taskqueue-heartbeat"}
        assert after <= before

    def test_an_id_that_ran_runs_again_and_is_recorded(self, celery_app: Any) -> None:
        first = tasks.add.apply((1, 2), task_id="same-id")
        second = tasks.add.apply((2, 2), task_id="same-id")
        assert (first.get(), second.get()) == (3, 4)
        log = TaskLog.objects.get(celery_task_id="same-id")
        assert (log.status, log.result) == (TaskStatus.COMPLETED, 4)
        assert factories.events(log) == RAN_TWICE

    def test_an_integer_task_id_is_recorded(self, celery_app: Any) -> None:
        result = tasks.add.apply((1, 2), task_id=12345)  # type: ignore[arg-type]
        assert result.get() == 3
        log = TaskLog.objects.get(celery_task_id="12345")
        assert (log.status, log.result) == (TaskStatus.COMPLETED, 3)


class TestWorkerRuns:
    def test_retry_without_throw_records_each_run_as_celery_stored_it(self, worker: Any) -> None:
        result = tasks.retry_quietly.delay()
        log = TaskLog.objects.get(celery_task_id=result.id)
        wait_for(lambda: status_and_result(log) == (TaskStatus.COMPLETED, 42), what="attempt 2")
        log.refresh_from_db()
        assert (log.retry_count, log.attempt) == (2, 2)
        # Attempts 0 and 1 scheduled a retry and returned: the task went on, so
        # only the last attempt's end is the task's.
        assert factories.events(log) == TWO_RETRIES_THEN_DONE

    def test_reject_without_requeue_fails_the_task(self, worker: Any) -> None:
        result = tasks.rejects.delay()
        log = wait_finished(result.id)
        assert (log.status, log.error_code) == (TaskStatus.FAILED, "rejected")
        assert result.state == "FAILURE"

    def test_the_same_id_published_again_runs_again_without_errors(
        self, worker: Any, caplog: Any
    ) -> None:
        caplog.set_level(logging.ERROR, logger="django_taskqueue")
        assert tasks.add.apply_async((1, 2), task_id="reused").get(timeout=10) == 3
        wait_finished("reused")
        # The result backend still holds the first run's result for this id: the
        # second run is followed in the record.
        tasks.add.apply_async((5, 5), task_id="reused")
        log = TaskLog.objects.get(celery_task_id="reused")
        wait_for(lambda: status_and_result(log) == (TaskStatus.COMPLETED, 10), what="run 2")
        log.refresh_from_db()
        assert (log.status, log.result, log.args) == (TaskStatus.COMPLETED, 10, [5, 5])
        assert factories.events(log) == RAN_TWICE
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    def test_a_replaced_task_is_recorded_under_the_replacement(self, worker: Any) -> None:
        result = tasks.replaced.delay(41)
        assert result.get(timeout=10) == 42
        log = wait_finished(result.id)
        assert (log.task_name, log.status, log.result) == ("tests.add", TaskStatus.COMPLETED, 42)
        assert "ignored" not in factories.events(log)
        assert "republished" in factories.events(log)

    def test_a_chain_runs_and_every_step_is_recorded(self, worker: Any) -> None:
        result = chain(tasks.add.s(1, 1), tasks.add.s(1)).delay()
        assert result.get(timeout=10) == 3
        first = result.parent
        assert first is not None
        for step_id in (first.id, result.id):  # type: ignore[attr-defined]
            assert wait_finished(step_id).status == TaskStatus.COMPLETED


def test_a_model_celery_dumps_itself_is_not_refused_for_its_encoding(celery_app: Any) -> None:
    # Celery dumps pydantic models (tasks declared pydantic=True) before it publishes:
    # the package does not refuse them as unencodable, and still bounds their depth.
    from django_taskqueue import messages

    class Model:
        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            return {"x": 1}

    messages.check_message(tasks.echo, (Model(),), {})
    messages.check_message(tasks.echo, (), {"data": Model()})
    with pytest.raises(MessageRefused, match="MESSAGE_MAX_DEPTH"):
        messages.check_message(tasks.echo, (Model(), tasks.nested(100)), {})
