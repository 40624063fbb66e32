# The page shows the code untyped, as most projects write their tests.
# mypy: allow-untyped-calls
"""The examples of docs/testing.md, run as they are written there.

Keep the two in step: below the imports is the page's code, with the page's
``from proj.celery import app`` replaced by the test project's Celery app
(whose test settings use the ``memory://`` broker, ``cache+memory://``
results and ``PROGRESS_MIN_INTERVAL = 0``, as the page advises).
"""

from __future__ import annotations

import time
import uuid

import pytest
from celery import shared_task
from celery.contrib.testing.worker import start_worker

from django_taskqueue import TrackedTask, lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES
from tests.celery_app import app

pytestmark = pytest.mark.worker

# --- the task under test (reports/tasks.py on the page) -----------------------------


@shared_task(base=TrackedTask, bind=True, name="reports.count_rows", task_type="report")
def count_rows(self, rows):
    if rows < 0:
        raise ValueError("rows must be >= 0")
    for i in range(1, rows + 1):
        self.update_progress(current=i, total=rows, message=f"row {i}")
    return rows


# --- conftest.py on the page ----------------------------------------------------------


@pytest.fixture
def celery_worker(transactional_db):
    """A worker in this process, on threads, consuming the memory:// broker."""
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False) as worker:
        yield worker


# --- reports/tests/helpers.py on the page ---------------------------------------------


def events(log):
    """The task's event types, oldest first."""
    return list(log.events.order_by("created_at", "id").values_list("event_type", flat=True))


def wait_for_end(celery_task_id, timeout=10.0):
    """The task's TaskLog once it is completed, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = TaskLog.objects.filter(
            celery_task_id=celery_task_id, status__in=TERMINAL_STATUSES
        ).first()
        if log is not None:
            return log
        time.sleep(0.05)
    raise AssertionError(f"task {celery_task_id} did not end within {timeout} s")


def make_task(status="pending", **fields):
    """A TaskLog in ``status``, written the way a producer and a worker write it."""
    celery_task_id = str(uuid.uuid4())
    fields.setdefault("task_name", "reports.count_rows")
    log = lifecycle.create_task_log(celery_task_id, **fields)
    if status != "pending":
        lifecycle.mark_started(celery_task_id)
    if status == "completed":
        lifecycle.mark_completed(celery_task_id, result=3)
    elif status == "failed":
        lifecycle.mark_failed(celery_task_id, error_message="boom", error_code="ValueError")
    log.refresh_from_db()
    return log


# --- test_reports.py on the page ------------------------------------------------------


@pytest.mark.django_db
def test_apply_records_the_run():
    result = count_rows.apply(args=(3,))

    assert result.get() == 3
    log = TaskLog.objects.get(celery_task_id=result.id)
    assert (log.status, log.result, log.progress) == ("completed", 3, 100)
    assert log.task_type == "report"
    assert list(log.progress_history.values_list("message", flat=True)) == [
        "row 1",
        "row 2",
        "row 3",
    ]
    assert events(log) == ["created", "started", "progress", "progress", "progress", "completed"]


@pytest.mark.django_db
def test_apply_records_a_failure():
    result = count_rows.apply(args=(-1,))

    assert result.failed()
    log = TaskLog.objects.get(celery_task_id=result.id)
    assert (log.status, log.error_code) == ("failed", "ValueError")
    assert log.error_message == "rows must be >= 0"
    assert "raise ValueError" in log.traceback
    assert events(log) == ["created", "started", "failed"]


def test_a_worker_runs_what_submit_sends(celery_worker, django_user_model):
    alice = django_user_model.objects.create_user("alice")

    log = count_rows.submit(args=(5,), owner=alice, metadata={"source": "test"})

    assert log.status == "pending"
    done = wait_for_end(log.celery_task_id)
    assert done.pk == log.pk
    assert (done.status, done.result, done.owner) == ("completed", 5, alice)
    assert done.worker  # the worker's host name
    assert events(done)[0] == "created"
    assert events(done)[-1] == "completed"


@pytest.mark.django_db
def test_rows_in_every_state_without_a_worker():
    done = make_task("completed")
    failed = make_task("failed", task_type="report")
    running = make_task("processing")
    waiting = make_task()

    assert list(TaskLog.objects.filter(status="failed")) == [failed]
    assert (done.status, done.result) == ("completed", 3)
    assert (running.status, waiting.status) == ("processing", "pending")
    assert events(failed) == ["created", "started", "failed"]


# --- not on the page --------------------------------------------------------------------


def test_the_page_shows_this_code() -> None:
    """Every function above is on docs/testing.md, word for word (decorators included)."""
    import ast
    from pathlib import Path

    source = Path(__file__).read_text(encoding="utf-8")
    page = (Path(__file__).parent.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    shown = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name != "test_the_page_shows_this_code"
    ]
    assert len(shown) == 9
    for node in shown:
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        code = "\n".join(lines[start - 1 : node.end_lineno])
        assert code in page, f"{node.name} differs from docs/testing.md"
