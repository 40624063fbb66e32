"""Retention: batched deletes of finished tasks, and the taskqueue_cleanup command."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from django_taskqueue import housekeeping
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress
from tests import factories

pytestmark = pytest.mark.django_db


def test_deletes_each_status_past_its_own_age_with_progress_and_events() -> None:
    old_done = factories.task("completed", completed_at=factories.ago(days=31), progress_rows=1)
    new_done = factories.task("completed", completed_at=factories.ago(days=29), progress_rows=1)
    old_failed = factories.task("failed", completed_at=factories.ago(days=91), progress_rows=1)
    # failed: 90 days
    kept_failed = factories.task("failed", completed_at=factories.ago(days=60), progress_rows=1)
    old_cancelled = factories.task(
        "cancelled", completed_at=factories.ago(days=31), progress_rows=1, ran=True
    )
    running = factories.task("processing", heartbeat_at=factories.ago(hours=1))

    result = housekeeping.purge_finished()

    assert result.tasks == {"completed": 1, "failed": 1, "cancelled": 1}
    left = set(TaskLog.objects.values_list("pk", flat=True))
    assert left == {new_done.pk, kept_failed.pk, running.pk}
    gone = [old_done.pk, old_failed.pk, old_cancelled.pk]
    assert not TaskProgress.objects.filter(task_id__in=gone).exists()
    assert not TaskEventLog.objects.filter(task_id__in=gone).exists()
    assert result.progress == 3  # one history row each
    assert result.events >= 3 * 4  # created, started, progress, final: at least four each
    assert TaskProgress.objects.filter(task_id=new_done.pk).count() == 1


def test_children_and_reruns_of_a_deleted_task_keep_living_unlinked() -> None:
    parent = factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    child = factories.task(
        "completed", completed_at=factories.ago(days=1), parent=parent, progress_rows=1
    )
    rerun = factories.task(
        "completed", completed_at=factories.ago(days=1), retry_of=parent, progress_rows=1
    )

    housekeeping.purge_finished()

    child.refresh_from_db()
    rerun.refresh_from_db()
    assert child.parent_id is None
    assert rerun.retry_of_id is None
    assert not TaskLog.objects.filter(pk=parent.pk).exists()


def test_works_in_bounded_batches_each_reported() -> None:
    for _ in range(5):
        factories.task("completed", completed_at=factories.ago(days=100), progress_rows=2)
    batches: list[housekeeping.Batch] = []

    result = housekeeping.purge_finished(batch_size=2, on_batch=batches.append)

    assert [b.tasks for b in batches] == [2, 2, 1]
    assert [b.progress for b in batches] == [4, 4, 2]
    assert result.batches == 3
    assert result.longest_batch == max(b.seconds for b in batches)
    assert not TaskLog.objects.exists()


def test_a_batch_selects_keys_only_and_never_loads_whole_rows() -> None:
    for _ in range(3):
        factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    with CaptureQueriesContext(connection) as queries:
        housekeeping.purge_finished(batch_size=2, statuses=["completed"])
    statements = [q["sql"] for q in queries.captured_queries]
    assert any("LIMIT 2" in sql for sql in statements), "the batch keys are selected by LIMIT"
    for sql in statements:
        assert "traceback" not in sql
        assert '"result"' not in sql


def test_batches_walk_the_index_forward_from_the_last_one() -> None:
    for days in (40, 50, 60, 70):
        factories.task("completed", completed_at=factories.ago(days=days), progress_rows=1)
    with CaptureQueriesContext(connection) as queries:
        result = housekeeping.purge_finished(batch_size=2, statuses=["completed"])
    assert result.batches == 2
    limited = [q["sql"] for q in queries.captured_queries if "LIMIT 2" in q["sql"]]
    assert len(limited) == 3  # two full batches, then one that finds nothing
    assert all(">=" in sql for sql in limited[1:])


def test_max_batches_leaves_the_rest_for_the_next_run() -> None:
    for _ in range(3):
        factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    result = housekeeping.purge_finished(batch_size=1, max_batches=2)
    assert result.total == 2
    assert TaskLog.objects.count() == 1


def test_dry_run_counts_and_deletes_nothing() -> None:
    factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    factories.task("failed", completed_at=factories.ago(days=200), progress_rows=1)
    result = housekeeping.purge_finished(dry_run=True)
    assert result.tasks == {"completed": 1, "failed": 1, "cancelled": 0}
    assert TaskLog.objects.count() == 2


@override_settings(
    DJANGO_TASKQUEUE={"RETENTION": {"failed": None, "completed": timedelta(hours=1)}}
)
def test_none_keeps_forever_and_timedeltas_work() -> None:
    factories.task("failed", completed_at=factories.ago(days=3650), progress_rows=1)
    done = factories.task("completed", completed_at=factories.ago(hours=2), progress_rows=1)
    result = housekeeping.purge_finished()
    assert set(result.cutoffs) == {"completed", "cancelled"}
    assert result.tasks["completed"] == 1
    assert not TaskLog.objects.filter(pk=done.pk).exists()
    assert TaskLog.objects.filter(status="failed").count() == 1


def test_older_than_applies_one_age_to_every_status() -> None:
    factories.task("failed", completed_at=factories.ago(days=8), progress_rows=1)
    factories.task("completed", completed_at=factories.ago(days=6), progress_rows=1)
    result = housekeeping.purge_finished(older_than=timedelta(days=7))
    assert result.tasks == {"completed": 0, "failed": 1, "cancelled": 0}


def test_only_terminal_statuses_can_be_purged() -> None:
    with pytest.raises(ValueError, match="not to processing"):
        housekeeping.purge_finished(statuses=["processing"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("2w", 1209600),
        ("1.5", 129600),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert housekeeping.parse_duration(text).total_seconds() == seconds


def test_parse_duration_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        housekeeping.parse_duration("soon")


def test_command_dry_run_reports_per_status() -> None:
    factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    out = StringIO()
    call_command("taskqueue_cleanup", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "completed: 1 finished before" in text
    assert "Dry run: 1 tasks would be deleted." in text
    assert TaskLog.objects.count() == 1


def test_command_deletes_with_progress_output() -> None:
    for _ in range(4):
        factories.task("completed", completed_at=factories.ago(days=3), progress_rows=1)
    factories.task("completed", completed_at=factories.ago(hours=1), progress_rows=1)
    out = StringIO()
    call_command(
        "taskqueue_cleanup",
        "--older-than",
        "2d",
        "--batch-size",
        "1",
        "--status",
        "completed",
        stdout=out,
    )
    text = out.getvalue()
    assert "deleted 1/4 (25%)" in text
    assert "deleted 4/4 (100%)" in text
    assert "Deleted 4 tasks" in text
    assert "in 4 batches" in text
    assert TaskLog.objects.count() == 1


def test_command_rejects_a_bad_age() -> None:
    with pytest.raises(CommandError, match="--older-than: 'soon' is not a duration"):
        call_command("taskqueue_cleanup", "--older-than", "soon")


@override_settings(
    DJANGO_TASKQUEUE={"RETENTION": {"completed": None, "failed": None, "cancelled": None}}
)
def test_command_with_everything_kept() -> None:
    out = StringIO()
    call_command("taskqueue_cleanup", stdout=out)
    assert "Nothing to do" in out.getvalue()


def test_a_parent_and_its_child_expiring_together_go_in_one_batch() -> None:
    parent = factories.task("completed", completed_at=factories.ago(days=100), progress_rows=1)
    child = factories.task(
        "completed",
        completed_at=factories.ago(days=100),
        parent=parent,
        retry_of=parent,
        progress_rows=1,
    )
    result = housekeeping.purge_finished(batch_size=10)
    assert result.tasks["completed"] == 2
    assert not TaskLog.objects.filter(pk__in=[parent.pk, child.pk]).exists()


@override_settings(DJANGO_TASKQUEUE={"RETENTION": None})
def test_retention_none_keeps_everything() -> None:
    factories.task("completed", completed_at=factories.ago(days=3650), progress_rows=1)
    assert housekeeping.purge_finished().cutoffs == {}
    assert TaskLog.objects.count() == 1
