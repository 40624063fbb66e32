"""The bulk rows and their aggregation, in django_taskqueue.lifecycle (no Celery involved)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_taskqueue import actions, lifecycle
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.status import BULK_TASK_NAME
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

FILES = [{"file_path": f"/data/f{i}.txt", "file_size": i} for i in range(3)]


def bulk(
    parallel: bool = True, files: list[dict[str, Any]] = FILES
) -> tuple[TaskLog, list[TaskLog]]:
    return lifecycle.create_bulk(
        "tests.process_file", files, task_type="file", kwargs={"q": 1}, parallel=parallel
    )


def end(child: TaskLog, status: str) -> None:
    lifecycle.mark_started(child.celery_task_id)
    if status == "completed":
        lifecycle.mark_completed(child.celery_task_id, pk=child.pk, result=1)
    elif status == "failed":
        lifecycle.mark_failed(child.celery_task_id, pk=child.pk, error_message="x")
    else:
        lifecycle.mark_cancelled(child.celery_task_id, pk=child.pk, reason="stop")


def test_create_bulk_writes_parent_children_and_events_in_few_queries() -> None:
    files = [{"file_path": f"/data/f{i}.txt"} for i in range(600)]
    with CaptureQueriesContext(connection) as queries:
        parent, children = bulk(files=files)
    # Batched inserts: SQLite caps the parameters per query, so it needs more
    # batches than PostgreSQL, but nowhere near one query per row.
    assert len(queries) < 60
    assert parent.status == "processing"
    assert parent.task_name == BULK_TASK_NAME
    assert parent.metadata["bulk"] == {
        "parallel": True,
        "files_count": 600,
        "task_name": "tests.process_file",
    }
    assert TaskLog.objects.filter(parent=parent, status="pending").count() == 600
    child = TaskLog.objects.get(pk=children[1].pk)
    assert child.args == ["/data/f1.txt"]
    assert child.kwargs == {"q": 1}
    assert child.file_name == "f1.txt"
    assert TaskEventLog.objects.filter(task__parent=parent, event_type="created").count() == 600


def test_parent_completes_when_all_children_complete_and_averages_progress() -> None:
    parent, children = bulk()
    end(children[0], "completed")
    parent.refresh_from_db()
    assert parent.status == "processing"
    assert parent.progress == 33
    assert parent.progress_message == "1 of 3 tasks ended"
    end(children[1], "completed")
    end(children[2], "completed")
    parent.refresh_from_db()
    assert parent.status == "completed"
    assert parent.progress == 100
    assert parent.result == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0}


def test_parent_fails_if_any_child_failed_once_all_ended() -> None:
    parent, children = bulk()
    end(children[0], "failed")
    parent.refresh_from_db()
    assert parent.status == "processing"  # a group goes on
    end(children[1], "cancelled")
    end(children[2], "completed")
    parent.refresh_from_db()
    assert parent.status == "failed"
    assert parent.error_code == "children_failed"
    assert parent.error_message == "1 of 3 tasks failed"


def test_parent_is_cancelled_when_children_were_cancelled_and_none_failed() -> None:
    parent, children = bulk()
    end(children[0], "completed")
    end(children[1], "cancelled")
    end(children[2], "completed")
    parent.refresh_from_db()
    assert parent.status == "cancelled"


def test_a_broken_chain_cancels_the_pending_children() -> None:
    parent, children = bulk(parallel=False)
    end(children[0], "completed")
    end(children[1], "failed")
    statuses = dict(TaskLog.objects.filter(parent=parent).values_list("pk", "status"))
    assert statuses[children[2].pk] == "cancelled"
    third = TaskLog.objects.get(pk=children[2].pk)
    assert third.error_code == "chain_broken"
    parent.refresh_from_db()
    assert parent.status == "failed"


def test_cancelling_the_parent_cancels_its_active_children() -> None:
    parent, children = bulk()
    end(children[0], "completed")
    lifecycle.mark_started(children[1].celery_task_id)
    actions.cancel(parent, reason="enough", revoke=False)
    statuses = dict(TaskLog.objects.filter(parent=parent).values_list("pk", "status"))
    assert statuses == {
        children[0].pk: "completed",
        children[1].pk: "cancelled",
        children[2].pk: "cancelled",
    }
    assert TaskLog.objects.get(pk=children[1].pk).error_message == (
        "the bulk task was cancelled: enough"
    )
    parent.refresh_from_db()
    assert parent.status == "cancelled"


def test_a_rerun_child_counts_instead_of_the_run_it_replaces(celery_app: Any) -> None:
    parent, children = bulk()
    end(children[0], "failed")
    failed = TaskLog.objects.get(pk=children[0].pk)
    rerun = actions.rerun(failed)
    assert rerun.parent_id == parent.pk
    end(children[1], "completed")
    end(children[2], "completed")
    parent.refresh_from_db()
    assert parent.status == "processing"  # the rerun is still active
    end(rerun, "completed")
    parent.refresh_from_db()
    assert parent.status == "completed"


def test_a_bulk_parent_is_not_rerun_as_a_whole() -> None:
    parent, children = bulk()
    for child in children:
        end(child, "failed")
    parent.refresh_from_db()
    with pytest.raises(TransitionRefused, match="retry its failed or cancelled children"):
        actions.rerun(parent)


def test_fail_bulk_fails_the_parent_and_its_pending_children() -> None:
    parent, _ = bulk()
    lifecycle.fail_bulk(parent.pk, error_message="broker down", error_code="publish_failed")
    assert set(TaskLog.objects.filter(parent=parent).values_list("status", flat=True)) == {"failed"}
    parent.refresh_from_db()
    assert (parent.status, parent.error_code) == ("failed", "publish_failed")


def test_a_task_without_parent_pays_one_update_for_the_aggregation() -> None:
    log = factories.task(**factories.FILE_TASK)
    lifecycle.mark_started(log.celery_task_id)
    with CaptureQueriesContext(connection) as queries:
        lifecycle.mark_completed(log.celery_task_id, pk=log.pk, result=1)
    parent_queries = [q["sql"] for q in queries if "parent_id" in q["sql"]]
    assert len(parent_queries) == 1
    assert parent_queries[0].startswith("UPDATE")


def test_stale_detection_leaves_bulk_parents_alone() -> None:
    from datetime import timedelta

    from django.utils import timezone

    parent, _ = bulk()
    TaskLog.objects.filter(pk=parent.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
    assert parent.pk not in set(
        TaskLog.objects.stale(timedelta(minutes=1)).values_list("pk", flat=True)
    )


def test_publish_group_skips_a_parent_that_ended(celery_app: Any) -> None:
    from django_taskqueue import bulk as publishing

    parent, _ = bulk()
    actions.cancel(parent, revoke=False)
    assert publishing.publish_group(parent.pk, {}) == 0
