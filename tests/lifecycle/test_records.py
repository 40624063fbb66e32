"""What every lifecycle write shares (lifecycle/records.py): signals after commit, the cursor."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_taskqueue import actions, lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.signals import task_progress, task_status_changed
from tests import factories
from tests.helpers import started

# The lifecycle contract: on SQLite here, and again on PostgreSQL in the integration
# tier and behind PgBouncer (tox -e integration, tox -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


class TestSignals:
    def test_status_changed_is_sent_after_commit(
        self, django_capture_on_commit_callbacks: Any
    ) -> None:
        received: list[dict[str, Any]] = []

        def receiver(**kwargs: Any) -> None:
            received.append(kwargs)

        task_status_changed.connect(receiver)
        try:
            log = factories.task()
            with django_capture_on_commit_callbacks(execute=False) as callbacks:
                started(log)
            assert received == []
            for callback in callbacks:
                callback()
        finally:
            task_status_changed.disconnect(receiver)
        assert len(received) == 1
        assert received[0]["status"] == "processing"
        assert received[0]["event_type"] == "started"
        assert received[0]["task_log"].pk == log.pk

    def test_progress_signal(self, django_capture_on_commit_callbacks: Any) -> None:
        received: list[dict[str, Any]] = []

        def receiver(**kwargs: Any) -> None:
            received.append(kwargs)

        task_progress.connect(receiver)
        try:
            log = factories.task()
            with django_capture_on_commit_callbacks(execute=True):
                lifecycle.record_progress(ProgressWrite(10, "m", None, True), pk=log.pk)
        finally:
            task_progress.disconnect(receiver)
        assert [(r["task_log_id"], r["progress"], r["message"]) for r in received] == [
            (log.pk, 10, "m")
        ]

    def test_no_listener_no_extra_query(self) -> None:
        log = factories.task()
        with CaptureQueriesContext(connection) as queries:
            lifecycle.mark_completed(log.celery_task_id, result=None, pk=log.pk)
        statements = [
            q["sql"].split()[0].upper()
            for q in queries
            if q["sql"].split()[0].upper() not in ("SAVEPOINT", "RELEASE", "SET")
        ]
        # The same two statements on every backend: the conditional UPDATE, its event.
        assert statements == ["UPDATE", "INSERT"]

    def test_receivers_see_the_same_sequence_on_every_backend(
        self, django_capture_on_commit_callbacks: Any
    ) -> None:
        received: list[tuple[str, str | None, str]] = []
        progress: list[int] = []

        def on_status(**kwargs: Any) -> None:
            previous = kwargs["previous_status"]
            received.append(
                (str(kwargs["status"]), previous and str(previous), str(kwargs["event_type"]))
            )

        def on_progress(**kwargs: Any) -> None:
            progress.append(kwargs["progress"])

        task_status_changed.connect(on_status)
        task_progress.connect(on_progress)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                log = factories.task()
                started(log)
                lifecycle.record_progress(ProgressWrite(40, "m", None, True), pk=log.pk)
                lifecycle.mark_retrying(log.celery_task_id, pk=log.pk, next_attempt=1)
                started(log, attempt=1)
                started(log, attempt=0)  # an older attempt, delivered again
                lifecycle.mark_completed(log.celery_task_id, result=1, pk=log.pk)
                # A late failure report changes nothing: nothing is sent.
                lifecycle.mark_failed(log.celery_task_id, pk=log.pk, error_message="late")
                other = factories.task()
                actions.cancel(other, revoke=False)
        finally:
            task_status_changed.disconnect(on_status)
            task_progress.disconnect(on_progress)
        assert received == [
            ("processing", None, "started"),
            ("retrying", None, "retried"),
            ("processing", None, "started"),
            # The body of an older attempt runs too: its start is recorded (again).
            ("processing", None, "started"),
            ("completed", None, "completed"),
            ("cancelled", None, "cancelled"),
        ]
        assert progress == [40]

    def test_post_save_is_sent_for_a_new_row_and_not_for_transitions(self) -> None:
        from django.db.models.signals import post_save

        saved: list[bool] = []

        def receiver(**kwargs: Any) -> None:
            saved.append(kwargs["created"])

        post_save.connect(receiver, sender=TaskLog)
        try:
            log = factories.task()
            started(log)
            lifecycle.mark_completed(log.celery_task_id, result=1, pk=log.pk)
        finally:
            post_save.disconnect(receiver, sender=TaskLog)
        # create_task_log saves the row (post_save, created=True) on every backend;
        # transitions are conditional QuerySet.update() calls, which send no post_save.
        assert saved == [True]


class TestObservability:
    """Every write goes through Django's cursor, where logging and instrumentation see it."""

    @staticmethod
    def life() -> TaskLog:
        log = factories.task()
        started(log)
        lifecycle.record_progress(ProgressWrite(50, "half", None, True), pk=log.pk)
        lifecycle.mark_completed(log.celery_task_id, result={"n": 1}, pk=log.pk)
        return log

    @staticmethod
    def writes(statements: list[str]) -> list[str]:
        """``INSERT``/``UPDATE`` statements as ``"VERB table"``."""
        out = []
        for sql in statements:
            words = sql.replace('"', "").split()
            verb = words[0].upper()
            if verb == "INSERT":
                out.append(f"INSERT {words[2]}")
            elif verb == "UPDATE":
                out.append(f"UPDATE {words[1]}")
        return out

    expected: ClassVar[list[str]] = [
        "INSERT django_taskqueue_tasklog",
        "INSERT django_taskqueue_taskeventlog",
        "UPDATE django_taskqueue_tasklog",
        "INSERT django_taskqueue_taskeventlog",
        "UPDATE django_taskqueue_tasklog",
        "INSERT django_taskqueue_taskprogress",
        "INSERT django_taskqueue_taskeventlog",
        "UPDATE django_taskqueue_tasklog",
        "INSERT django_taskqueue_taskeventlog",
    ]

    def test_execute_wrapper_and_captured_queries_see_every_write(self) -> None:
        wrapped: list[str] = []

        def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            wrapped.append(sql)
            return execute(sql, params, many, context)

        with (
            connection.execute_wrapper(wrapper),
            CaptureQueriesContext(connection) as queries,
        ):
            self.life()
        assert self.writes(wrapped) == self.expected
        assert self.writes([q["sql"] for q in queries]) == self.expected

    def test_instrumentation_of_djangos_cursor_sees_every_write(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # What APM agents do: patch Django's cursor class, no execute_wrapper, no
        # query logging. The lifecycle's writes must not take a path around it.
        from django.db.backends.utils import CursorWrapper

        seen: list[str] = []
        original = CursorWrapper.execute

        def execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
            seen.append(sql)
            return original(self, sql, params)

        monkeypatch.setattr(CursorWrapper, "execute", execute)
        assert not connection.queries_logged
        log = self.life()
        assert self.writes(seen) == self.expected
        assert TaskLog.objects.get(pk=log.pk).status == "completed"
