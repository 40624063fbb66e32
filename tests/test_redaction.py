"""Every JSON and text the lifecycle stores is redacted; the task still gets the real values."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.progress import ProgressWrite
from tests import factories, tasks
from tests.live import wait_finished

MASK = "********"
DSN = "postgres://app:s3cr3t@db.internal/app"
MASKED_DSN = f"postgres://app:{MASK}@db.internal/app"


def test_metadata_is_stored_redacted_like_the_arguments(db: Any) -> None:
    log = factories.task(
        kwargs={"quality": "high"},
        metadata={"X-Api-Key": "k1", "private-key": "pem", "source": DSN, "quality": "high"},
    )
    log.refresh_from_db()
    assert log.metadata == {
        "X-Api-Key": MASK,
        "private-key": MASK,
        "source": MASKED_DSN,
        "quality": "high",
    }
    # Metadata is not what the task receives: a re-run stays possible.
    assert not log.args_redacted


def test_a_url_with_credentials_in_the_arguments_is_masked_and_marks_them_redacted(
    db: Any,
) -> None:
    log = factories.task(args=[DSN], kwargs={"target": "redis://:pw@cache:6379/0"})
    log.refresh_from_db()
    assert log.args == [MASKED_DSN]
    assert log.kwargs == {"target": f"redis://:{MASK}@cache:6379/0"}
    assert log.args_redacted


def test_results_progress_events_and_errors_are_stored_redacted(db: Any) -> None:
    log = factories.task()
    lifecycle.mark_started(log.celery_task_id, worker="w1@host")
    lifecycle.record_progress(
        ProgressWrite(50, f"copying from {DSN}", {"session": "abc", "rows": 3}, True),
        celery_task_id=log.celery_task_id,
    )
    lifecycle.record_event("note", f"seen {DSN}", {"Authorization": "Bearer x", "n": 1}, pk=log.pk)
    lifecycle.mark_completed(
        log.celery_task_id, result={"token": "t", "dsn": DSN, "rows": [{"passwd": "p"}]}
    )
    log.refresh_from_db()
    assert log.result == {"token": MASK, "dsn": MASKED_DSN, "rows": [{"passwd": MASK}]}
    assert log.progress_message == f"copying from {MASKED_DSN}"
    step = log.progress_history.get()
    assert (step.message, step.data) == (f"copying from {MASKED_DSN}", {"session": MASK, "rows": 3})
    note = log.events.get(event_type="note")
    assert (note.message, note.metadata) == (f"seen {MASKED_DSN}", {"Authorization": MASK, "n": 1})
    assert "s3cr3t" not in str(list(TaskEventLog.objects.values_list("message", "metadata")))

    failing = factories.task()
    lifecycle.mark_started(failing.celery_task_id)
    lifecycle.mark_failed(
        failing.celery_task_id,
        error_message=f"OperationalError: cannot reach {DSN}",
        error_code="OperationalError",
        traceback=f'Traceback...\n  connect("{DSN}")\nOperationalError: {DSN}',
    )
    failing.refresh_from_db()
    assert failing.error_message == f"OperationalError: cannot reach {MASKED_DSN}"
    assert "s3cr3t" not in failing.traceback
    assert MASKED_DSN in failing.traceback
    assert "s3cr3t" not in failing.events.get(event_type="failed").message


def test_extra_keys_extend_the_defaults(db: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {"REDACT_EXTRA_KEYS": ["ssn", "pin"]}
    log = factories.task(metadata={"ssn": "123-45-6789", "user_pin": 1234, "password": "x", "n": 1})
    log.refresh_from_db()
    assert log.metadata == {"ssn": MASK, "user_pin": MASK, "password": MASK, "n": 1}


def test_a_rerun_of_a_task_whose_metadata_alone_was_redacted_is_allowed(
    db: Any, celery_app: Any
) -> None:
    original = tasks.add.submit(args=(2, 3), metadata={"api_token": "t"})
    lifecycle.mark_started(original.celery_task_id)
    lifecycle.mark_failed(original.celery_task_id, error_message="boom")
    original.refresh_from_db()
    assert original.metadata == {"api_token": MASK}
    assert not original.args_redacted
    again = actions.rerun(original)
    assert (again.args, again.metadata) == ([2, 3], {"api_token": MASK})

    secret_args = tasks.echo.submit(kwargs={"api_token": "t"})
    lifecycle.mark_started(secret_args.celery_task_id)
    lifecycle.mark_failed(secret_args.celery_task_id, error_message="boom")
    secret_args.refresh_from_db()
    with pytest.raises(TransitionRefused, match="redacted"):
        actions.rerun(secret_args)


# --- with a worker: the message carries the real values ------------------------------------


def test_the_task_receives_the_real_values_and_its_row_stores_them_redacted(worker: Any) -> None:
    kwargs = {"api-key": "k1", "dsn": DSN, "keep": "me"}
    result = tasks.echo.apply_async(("a",), kwargs, task_id=str(uuid.uuid4()))
    assert result.get(timeout=10)["kwargs"] == kwargs  # the task got the caller's data
    log = wait_finished(result.id)
    assert log.kwargs == {"api-key": MASK, "dsn": MASKED_DSN, "keep": "me"}
    assert log.result == {
        "args": ["a"],
        "kwargs": {"api-key": MASK, "dsn": MASKED_DSN, "keep": "me"},
    }
    assert log.args_redacted
    assert "s3cr3t" not in str(TaskLog.objects.filter(pk=log.pk).values().get())
