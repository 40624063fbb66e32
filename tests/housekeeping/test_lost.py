"""Lost messages: pending tasks that no worker, backend or queue knows."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from django_taskqueue import housekeeping
from tests import factories


@pytest.mark.django_db
def test_no_worker_answering_marks_nothing(celery_app: Celery, caplog: Any) -> None:
    log = factories.task(created_at=factories.ago(days=2))

    result = housekeeping.reconcile_lost(inspect_timeout=0.3, app=celery_app)

    assert result.marked == []
    assert result.skipped_reason == "no worker answered the inspect"
    assert "no worker answered" in caplog.text
    log.refresh_from_db()
    assert log.status == "pending"


@pytest.mark.django_db
def test_nothing_pending_long_enough_asks_no_worker(celery_app: Celery) -> None:
    factories.task(created_at=factories.ago(minutes=10))  # LOST_AFTER is an hour
    result = housekeeping.reconcile_lost(inspect_timeout=0.3, app=celery_app)
    assert result.checked == 0
    assert result.skipped_reason == ""


@pytest.mark.worker
def test_a_message_nobody_knows_is_marked_lost(worker: Any, celery_app: Celery) -> None:
    lost = factories.task(created_at=factories.ago(days=2))
    in_backend = factories.task(created_at=factories.ago(days=2))
    celery_app.backend.store_result(in_backend.celery_task_id, None, "STARTED")
    # A message parked in a queue no worker consumes: behind a backlog, not lost.
    parked = factories.task(created_at=factories.ago(days=2), queue="parked")
    celery_app.send_task("tests.add", args=(1, 2), queue="parked", task_id=parked.celery_task_id)
    young = factories.task(created_at=factories.ago(minutes=1))

    result = housekeeping.reconcile_lost(inspect_timeout=1.0, app=celery_app)

    assert result.marked == [lost.celery_task_id]
    assert in_backend.celery_task_id in result.known
    assert result.waiting == [parked.celery_task_id]
    lost.refresh_from_db()
    assert lost.status == "failed"
    assert lost.error_code == "lost"
    event = lost.events.get(event_type="stale")
    assert event.metadata["error_code"] == "lost"
    assert event.metadata["workers"]
    for other in (in_backend, parked, young):
        other.refresh_from_db()
        assert other.status == "pending"


@pytest.mark.django_db
def test_a_pending_row_started_meanwhile_is_not_marked() -> None:
    from django.utils import timezone

    from django_taskqueue import lifecycle

    log = factories.task(created_at=factories.ago(days=2))
    lifecycle.mark_started(log.celery_task_id, worker="w@h")
    outcome = lifecycle.mark_lost(
        log.pk, created_before=timezone.now(), error_message="lost", metadata={}
    )
    assert not outcome.applied
    log.refresh_from_db()
    assert log.status == "processing"
