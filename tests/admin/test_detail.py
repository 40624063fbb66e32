"""The task page: read-only record, pretty JSON, capped history, lineage, buttons."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_taskqueue import lifecycle
from django_taskqueue.admin.history import INLINE_CAP
from django_taskqueue.admin.tasklog import LINEAGE_CAP
from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.status import EventType, TaskStatus
from tests import factories

pytestmark = pytest.mark.django_db


def change_url(task: TaskLog) -> str:
    return reverse("admin:django_taskqueue_tasklog_change", args=[task.pk])


def _events(task: TaskLog, n: int) -> None:
    TaskEventLog.objects.bulk_create(
        TaskEventLog(task=task, event_type=EventType.PROGRESS, message=f"step {i}")
        for i in range(n)
    )


def test_record_is_read_only_with_pretty_json_and_traceback(admin_client: Any) -> None:
    task = factories.task(
        TaskStatus.FAILED,
        args=[1, {"nested": True}],
        metadata={"source": "upload", "rows": 3},
        kwargs={"mode": "fast"},
        task_type="sample",
        **factories.BOOM,
    )
    response = admin_client.get(change_url(task))
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<pre class="tq-json">{\n  &quot;rows&quot;: 3,\n  '
        "&quot;source&quot;: &quot;upload&quot;\n}</pre>" in html
    )
    assert "&quot;nested&quot;: true" in html
    assert '<pre class="tq-traceback"><code>Traceback' in html
    # Escaped: a traceback is text, never markup.
    assert "ValueError: &lt;boom&gt;" in html
    assert '<span class="tq-badge tq-status-failed">Failed</span>' in html
    # Nothing to submit: no editable field, no save button.
    assert 'name="_save"' not in html
    assert 'name="task_name"' not in html
    assert 'name="status"' not in html


def test_post_to_the_record_is_refused(admin_client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    response = admin_client.post(change_url(task), {"status": "completed"})
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.status == TaskStatus.PROCESSING
    assert admin_client.get(reverse("admin:django_taskqueue_tasklog_add")).status_code == 403


def test_error_section_only_when_there_is_an_error(admin_client: Any) -> None:
    ok = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    assert "tq-traceback" not in admin_client.get(change_url(ok)).content.decode()
    assert ">Error</h2>" not in admin_client.get(change_url(ok)).content.decode()


def test_history_is_newest_first_and_capped_with_a_link(admin_client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    _events(task, INLINE_CAP + 10)
    response = admin_client.get(change_url(task))
    html = response.content.decode()
    inline = next(
        f for f in response.context["inline_admin_formsets"] if f.opts.model is TaskEventLog
    )
    shown = inline.formset.get_queryset()
    assert len(shown) == INLINE_CAP
    assert inline.formset.has_more
    created = [row.created_at for row in shown]
    assert created == sorted(created, reverse=True)
    assert f"step {INLINE_CAP + 9}" in html
    assert "Only the newest rows are shown." in html
    rest = reverse("admin:django_taskqueue_taskeventlog_changelist") + f"?task__id__exact={task.pk}"
    assert rest in html
    # The full list, filtered by task, is read-only too.
    full = admin_client.get(rest)
    assert full.status_code == 200
    assert len(full.context["cl"].result_list) == task.events.count()
    assert {e.task_id for e in full.context["cl"].result_list} == {task.pk}


def test_progress_history_inline(admin_client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    for percent in (20, 60):
        lifecycle.record_progress(
            ProgressWrite(percent, f"at {percent}", {"rows": percent}, True), pk=task.pk
        )
    html = admin_client.get(change_url(task)).content.decode()
    assert html.index("at 60") < html.index("at 20")
    assert "Only the newest rows are shown." not in html
    progress_url = reverse("admin:django_taskqueue_taskprogress_changelist")
    assert admin_client.get(progress_url + f"?task__id__exact={task.pk}").status_code == 200


def test_query_count_does_not_grow_with_history_or_lineage(admin_client: Any) -> None:
    def count(task: TaskLog) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(change_url(task)).status_code == 200
        return len(queries)

    small = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    big_parent = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    big = factories.task(TaskStatus.FAILED, parent=big_parent, **factories.SAMPLE_TASK)
    _events(big, 200)
    for _ in range(30):
        factories.task(parent=big, **factories.SAMPLE_TASK)
    for _ in range(3):
        factories.task(retry_of=big, **factories.SAMPLE_TASK)
    assert count(small) == count(big)


def test_exact_query_count(admin_client: Any, django_assert_num_queries: Any) -> None:
    task = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    admin_client.get(change_url(task))  # warms Django's content type cache
    # session, user, the task (with owner, parent, original run), children, reruns,
    # the canvas (one query joins its roots and groups, one lists it), progress history,
    # events. A task outside any canvas has no canvas parent or root to look up.
    with django_assert_num_queries(9):
        admin_client.get(change_url(task))


def test_lineage_links(admin_client: Any) -> None:
    parent = factories.task(TaskStatus.COMPLETED, task_name="bulk.parent", **factories.SAMPLE_TASK)
    original = factories.task(TaskStatus.FAILED, parent=parent, **factories.SAMPLE_TASK)
    rerun = factories.task(retry_of=original, task_name="tests.add", **factories.SAMPLE_TASK)
    children = [factories.task(parent=original, **factories.SAMPLE_TASK) for _ in range(25)]
    html = admin_client.get(change_url(original)).content.decode()
    assert change_url(parent) in html
    assert change_url(rerun) in html
    assert change_url(children[-1]) in html
    # Capped, with a link to the rest.
    assert f"?parent__id__exact={original.pk}" in html
    html = admin_client.get(change_url(rerun)).content.decode()
    assert change_url(original) in html


def test_buttons_follow_status_and_permissions(client: Any) -> None:
    running = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    failed = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    both = factories.user(
        "both", staff=True, perms=("view_tasklog", "cancel_tasklog", "retry_tasklog")
    )
    viewer = factories.user("viewer", staff=True, perms=("view_tasklog",))
    client.force_login(both)
    html = client.get(change_url(running)).content.decode()
    assert 'id="tq-cancel"' in html
    assert 'id="tq-retry"' not in html
    html = client.get(change_url(failed)).content.decode()
    assert 'id="tq-cancel"' not in html
    assert 'id="tq-retry"' in html
    client.force_login(viewer)
    html = client.get(change_url(running)).content.decode()
    assert 'id="tq-cancel"' not in html
    html = client.get(change_url(failed)).content.decode()
    assert 'id="tq-retry"' not in html
    # The history inlines show for whoever may see the task.
    assert "events (newest first)" in html.lower()


def test_cancel_button(admin_client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    url = reverse("admin:django_taskqueue_tasklog_cancel", args=[task.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == change_url(task)
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    event = task.events.get(event_type=EventType.CANCELLED)
    assert event.metadata["by_username"] == "admin"
    assert "The task was cancelled." in response.content.decode()
    # Again: refused, and said why.
    response = admin_client.post(url, follow=True)
    assert "already cancelled" in response.content.decode()


def test_cancel_button_permission_and_missing_task(client: Any) -> None:
    task = factories.task(TaskStatus.PROCESSING, **factories.SAMPLE_TASK)
    client.force_login(factories.user("viewer", staff=True, perms=("view_tasklog",)))
    url = reverse("admin:django_taskqueue_tasklog_cancel", args=[task.pk])
    assert client.post(url).status_code == 403
    task.refresh_from_db()
    assert task.status == TaskStatus.PROCESSING
    client.force_login(
        factories.user("canceller", staff=True, perms=("view_tasklog", "cancel_tasklog"))
    )
    missing = reverse("admin:django_taskqueue_tasklog_cancel", args=["not-a-uuid"])
    assert client.post(missing).status_code == 404


def test_retry_button(admin_client: Any, celery_app: Any) -> None:
    task = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    url = reverse("admin:django_taskqueue_tasklog_retry", args=[task.pk])
    response = admin_client.post(url)
    new = TaskLog.objects.get(retry_of=task)
    assert response.status_code == 302
    assert response["Location"] == change_url(new)
    assert new.status == TaskStatus.RETRYING
    assert new.args == task.args
    # A completed task is not run again; the page says why.
    done = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    response = admin_client.post(
        reverse("admin:django_taskqueue_tasklog_retry", args=[done.pk]), follow=True
    )
    assert "only failed or cancelled tasks can be retried" in response.content.decode()
    assert not TaskLog.objects.filter(retry_of=done).exists()


def test_retry_button_permission(client: Any) -> None:
    task = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    client.force_login(
        factories.user("canceller", staff=True, perms=("view_tasklog", "cancel_tasklog"))
    )
    assert (
        client.post(reverse("admin:django_taskqueue_tasklog_retry", args=[task.pk])).status_code
        == 403
    )
    assert not TaskLog.objects.filter(retry_of=task).exists()


def test_history_lists_are_read_only(admin_client: Any) -> None:
    task = factories.task(**factories.SAMPLE_TASK)
    event = task.events.get()
    assert (
        admin_client.get(
            reverse("admin:django_taskqueue_taskeventlog_change", args=[event.pk])
        ).status_code
        == 200
    )
    assert admin_client.get(reverse("admin:django_taskqueue_taskeventlog_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:django_taskqueue_taskeventlog_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert TaskEventLog.objects.filter(pk=event.pk).exists()


def test_history_lists_visible_to_task_viewers(client: Any) -> None:
    task = factories.task(**factories.SAMPLE_TASK)
    client.force_login(factories.user("viewer", staff=True, perms=("view_tasklog",)))
    url = reverse("admin:django_taskqueue_taskeventlog_changelist") + f"?task__id__exact={task.pk}"
    assert client.get(url).status_code == 200
    client.force_login(factories.user("nobody", staff=True))
    assert client.get(url).status_code == 403


def test_canvas_links(admin_client: Any) -> None:
    root = factories.task(TaskStatus.COMPLETED, task_name="tests.first", **factories.SAMPLE_TASK)
    root_id = root.celery_task_id
    TaskLog.objects.filter(pk=root.pk).update(celery_root_id=root_id)
    step = factories.task(
        TaskStatus.FAILED,
        celery_root_id=root_id,
        celery_parent_id=root_id,
        celery_group_id="header-1",
        **factories.SAMPLE_TASK,
    )
    # A member of the same group that is its own root (a chord header sent from outside a task).
    member = factories.task(
        celery_root_id="elsewhere", celery_group_id="header-1", **factories.SAMPLE_TASK
    )
    unrelated = factories.task(**factories.SAMPLE_TASK)
    html = admin_client.get(change_url(step)).content.decode()
    assert "header-1" in html
    assert change_url(root) in html
    assert change_url(member) in html
    assert change_url(unrelated) not in html
    html = admin_client.get(change_url(root)).content.decode()
    assert "this task" in html
    assert change_url(step) in html
    # A parent with no row (an untracked task) is named, not linked.
    orphan = factories.task(
        celery_parent_id="untracked-parent",
        celery_root_id="untracked-parent",
        **factories.SAMPLE_TASK,
    )
    html = admin_client.get(change_url(orphan)).content.decode()
    assert "untracked-parent" in html
    assert "not recorded" in html


def test_canvas_list_is_capped_with_links_to_the_rest(admin_client: Any) -> None:
    root = factories.task(**factories.SAMPLE_TASK)
    TaskLog.objects.filter(pk=root.pk).update(celery_root_id=root.celery_task_id)
    for _ in range(LINEAGE_CAP + 2):
        factories.task(
            celery_root_id=root.celery_task_id,
            celery_parent_id=root.celery_task_id,
            **factories.SAMPLE_TASK,
        )
    html = admin_client.get(change_url(root)).content.decode()
    assert f"?celery_root_id={root.celery_task_id}" in html
    listed = admin_client.get(
        reverse("admin:django_taskqueue_tasklog_changelist"),
        {"celery_root_id": root.celery_task_id},
    )
    assert listed.status_code == 200
    assert listed.content.decode().count("tq-status") >= LINEAGE_CAP
