"""The TaskLog changelist: columns, filters, search, permissions and query counts."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_taskqueue.admin.filters import MAX_OWNERS, distinct_task_types
from django_taskqueue.admin.pagination import CappedCountPaginator
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories

pytestmark = pytest.mark.django_db

URL = reverse("admin:django_taskqueue_tasklog_changelist")


def _listed(response: Any) -> set[Any]:
    return {task.pk for task in response.context["cl"].result_list}


def _owners(n: int) -> list[Any]:
    return [get_user_model().objects.create_user(f"owner{i:02d}") for i in range(n)]


def test_columns_render_badge_progress_owner_link_and_duration(admin_client: Any) -> None:
    owner = get_user_model().objects.create_user("carol")
    task = factories.task(
        TaskStatus.COMPLETED,
        owner=owner,
        file_name="data.csv",
        started_at=factories.ago(seconds=75),
        completed_at=factories.ago(seconds=5),
        **factories.SAMPLE_TASK,
    )
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<span class="tq-badge tq-status-completed">Completed</span>' in html
    assert 'class="tq-progress-fill tq-status-completed" style="width: 100%"' in html
    assert f'href="{URL}?owner={owner.pk}"' in html
    assert "data.csv" in html
    assert "1 min 10 s" in html
    assert task.celery_task_id[:8] in html
    # No add button: tasks are created by running them.
    assert reverse("admin:django_taskqueue_tasklog_add") not in html


def test_newest_first_and_only_created_at_sortable(admin_client: Any) -> None:
    old = factories.task(created_at=factories.ago(days=2), **factories.SAMPLE_TASK)
    new = factories.task(created_at=factories.ago(minutes=1), **factories.SAMPLE_TASK)
    response = admin_client.get(URL)
    assert [t.pk for t in response.context["cl"].result_list] == [new.pk, old.pk]
    cl = response.context["cl"]
    assert cl.sortable_by == ("created_at",)


def test_heavy_columns_are_left_out_of_the_list_query(admin_client: Any) -> None:
    factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(URL)
    listing = [
        q["sql"]
        for q in queries
        if 'ORDER BY "django_taskqueue_tasklog"."created_at" DESC' in q["sql"]
    ]
    assert listing, [q["sql"] for q in queries]
    assert all('"traceback"' not in sql and '"result"' not in sql for sql in listing)
    assert all(
        'INNER JOIN "auth_user"' in sql or 'LEFT OUTER JOIN "auth_user"' in sql for sql in listing
    )


def test_no_unbounded_count(admin_client: Any) -> None:
    for _ in range(3):
        factories.task(**factories.SAMPLE_TASK)
    for query in ("", "?status__exact=pending", "?q=tests"):
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(URL + query).status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
        assert counts, query
        assert all("LIMIT" in sql for sql in counts), counts


def test_query_count_does_not_grow_with_rows_owners_or_pages(admin_client: Any) -> None:
    def queries_for(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(path).status_code == 200
        return len(captured)

    factories.task(**factories.SAMPLE_TASK)
    few = queries_for(URL)
    owners = _owners(5)
    for i in range(120):
        factories.task(
            [TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED][i % 3],
            owner=owners[i % 5],
            task_type=f"type{i % 4}",
            args=[1, 2],
        )
    many = queries_for(URL)
    assert few == many
    assert queries_for(URL + "?p=2") == many
    assert queries_for(URL + "?status__exact=failed") == many
    assert queries_for(URL + f"?owner={owners[0].pk}") == many
    assert queries_for(URL + "?task_type=type1&status__exact=pending") == many


def test_exact_query_count(admin_client: Any, django_assert_num_queries: Any) -> None:
    owners = _owners(3)
    for i in range(30):
        factories.task(owner=owners[i % 3], **factories.SAMPLE_TASK)
    # session, user, task types, owners, capped count, the page (tasks joined with owners).
    with django_assert_num_queries(6):
        admin_client.get(URL)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(TaskStatus.FAILED, 1), (TaskStatus.COMPLETED, 2), (TaskStatus.PENDING, 1)],
)
def test_status_filter(admin_client: Any, status: str, expected: int) -> None:
    factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)
    response = admin_client.get(URL, {"status__exact": status})
    listed = response.context["cl"].result_list
    assert len(listed) == expected
    assert {t.status for t in listed} == {status}


def test_task_type_filter_lists_only_present_types(admin_client: Any) -> None:
    image = factories.task(task_type="image", args=[1, 2])
    factories.task(task_type="document", args=[1, 2])
    factories.task(task_type="", args=[1, 2])
    assert distinct_task_types() == ["document", "image"]
    response = admin_client.get(URL, {"task_type": "image"})
    assert _listed(response) == {image.pk}
    html = response.content.decode()
    assert "?task_type=document" in html


def test_owner_filter(admin_client: Any) -> None:
    alice, bob = _owners(2)
    nobody = get_user_model().objects.create_user("no-tasks-here")
    mine = factories.task(owner=alice, **factories.SAMPLE_TASK)
    factories.task(owner=bob, **factories.SAMPLE_TASK)
    system = factories.task(owner=None, **factories.SAMPLE_TASK)
    response = admin_client.get(URL, {"owner": str(alice.pk)})
    assert _listed(response) == {mine.pk}
    assert _listed(admin_client.get(URL, {"owner": "none"})) == {system.pk}
    html = response.content.decode()
    assert f"?owner={bob.pk}" in html
    # Only people who own tasks are offered.
    assert f"?owner={nobody.pk}" not in html
    # A selected owner outside the list is still shown (and the filter still applies).
    response = admin_client.get(URL, {"owner": str(nobody.pk)})
    assert _listed(response) == set()
    assert "no-tasks-here" in response.content.decode()


def test_owner_filter_is_bounded(admin_client: Any) -> None:
    owners = _owners(MAX_OWNERS + 5)
    for owner in owners:
        factories.task(owner=owner, **factories.SAMPLE_TASK)
    response = admin_client.get(URL)
    spec = next(
        f
        for f in response.context["cl"].filter_specs
        if getattr(f, "parameter_name", None) == "owner"
    )
    # "No owner" plus at most MAX_OWNERS people.
    assert len(spec.lookup_choices) == MAX_OWNERS + 1


def test_bad_owner_value_is_not_a_server_error(admin_client: Any) -> None:
    response = admin_client.get(URL, {"owner": "not-a-number"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


NUL_PARAMETERS = [
    {"task_type": "\x00"},
    {"status__exact": "\x00"},
    {"q": "a\x00"},
    {"owner": "\x00"},
    {"created_at__gte": "\x00"},
    {"p": "\x00"},
    {"\x00": "1"},
]


def _refuses_nul(client: Any, params: dict[str, str]) -> None:
    response = client.get(URL, params)
    assert response.status_code == 302, params
    assert response["Location"].endswith("?e=1")
    # The page the admin redirects to says the lookup was bad, without a 500.
    assert client.get(URL, {**params, "e": "1"}).status_code == 200


@pytest.mark.parametrize("params", NUL_PARAMETERS)
def test_a_nul_in_any_filter_or_search_is_a_bad_lookup(admin_client: Any, params: Any) -> None:
    factories.task(task_type="report", args=[1, 2])
    _refuses_nul(admin_client, params)


@pytest.mark.integration
@pytest.mark.parametrize("params", NUL_PARAMETERS)
def test_a_nul_in_a_filter_on_postgresql(admin_client: Any, params: Any) -> None:
    # PostgreSQL refuses NUL in a text parameter: ?task_type=%00 and
    # ?status__exact=%00 were 500s.
    factories.task(task_type="report", args=[1, 2])
    _refuses_nul(admin_client, params)


def test_created_at_presets_and_range(admin_client: Any) -> None:
    recent = factories.task(created_at=factories.ago(hours=1), **factories.SAMPLE_TASK)
    old = factories.task(created_at=factories.ago(days=40), **factories.SAMPLE_TASK)
    html = admin_client.get(URL).content.decode()
    assert 'name="created_at__gte"' in html
    assert 'type="date"' in html
    since = factories.ago(days=3).date().isoformat()
    response = admin_client.get(URL, {"created_at__gte": since})
    assert _listed(response) == {recent.pk}
    before = factories.ago(days=10).date().isoformat()
    response = admin_client.get(URL, {"created_at__lt": before})
    assert _listed(response) == {old.pk}
    # The form shows the chosen date back.
    assert f'value="{before}"' in response.content.decode()
    # ...and keeps the other filters when it is submitted.
    html = admin_client.get(URL, {"status__exact": "pending", "created_at__lt": before})
    form = html.content.decode().split('class="tq-date-range"')[1].split("</form>")[0]
    assert '<input type="hidden" name="status__exact" value="pending">' in form
    assert 'type="hidden" name="created_at__lt"' not in form


def test_created_at_bad_date_is_not_a_server_error(admin_client: Any) -> None:
    response = admin_client.get(URL, {"created_at__gte": "2026-13-45"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_search_by_celery_id_file_name_and_task_name(admin_client: Any) -> None:
    target = factories.task(
        task_name="reports.monthly", file_name="november-sales.xlsx", **factories.SAMPLE_TASK
    )
    factories.task(task_name="tests.add", file_name="other.csv", **factories.SAMPLE_TASK)
    assert _listed(admin_client.get(URL, {"q": target.celery_task_id})) == {target.pk}
    assert _listed(admin_client.get(URL, {"q": str(target.pk)})) == {target.pk}
    assert _listed(admin_client.get(URL, {"q": "sales"})) == {target.pk}
    assert _listed(admin_client.get(URL, {"q": "monthly"})) == {target.pk}
    assert _listed(admin_client.get(URL, {"q": "nothing-like-it"})) == set()


def test_custom_celery_id_is_found_exactly(admin_client: Any) -> None:
    target = factories.task(**factories.SAMPLE_TASK)
    TaskLog.objects.filter(pk=target.pk).update(celery_task_id="nightly-export-42")
    assert _listed(admin_client.get(URL, {"q": "nightly-export-42"})) == {target.pk}


def test_capped_count_in_the_page(admin_client: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    for _ in range(5):
        factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK)
    response = admin_client.get(URL, {"status__exact": "failed", "q": "tests"})
    cl = response.context["cl"]
    assert cl.result_count == 3
    assert cl.paginator.is_capped
    html = response.content.decode()
    assert "more than 3" in html


def test_lineage_lookups_are_allowed(admin_client: Any) -> None:
    parent = factories.task(**factories.SAMPLE_TASK)
    child = factories.task(parent=parent, **factories.SAMPLE_TASK)
    response = admin_client.get(URL, {"parent__id__exact": str(parent.pk)})
    assert _listed(response) == {child.pk}


def test_staff_without_view_permission_is_refused(client: Any) -> None:
    client.force_login(factories.user("nobody", staff=True))
    assert client.get(URL).status_code == 403


def test_staff_with_view_permission_gets_no_actions(client: Any) -> None:
    client.force_login(factories.user("viewer", staff=True, perms=("view_tasklog",)))
    factories.task(**factories.SAMPLE_TASK)
    response = client.get(URL)
    assert response.status_code == 200
    assert response.context["action_form"] is None or not [
        name for name, _ in response.context["action_form"].fields["action"].choices if name
    ]


def test_actions_follow_permissions_and_status_filter(client: Any) -> None:
    def offered(user: Any, query: dict[str, str] | None = None) -> set[str]:
        client.force_login(user)
        form = client.get(URL, query or {}).context["action_form"]
        return {name for name, _ in form.fields["action"].choices if name} if form else set()

    factories.task(**factories.SAMPLE_TASK)
    both = factories.user(
        "both", staff=True, perms=("view_tasklog", "cancel_tasklog", "retry_tasklog")
    )
    assert offered(both) == {"cancel_tasks", "retry_tasks"}
    assert offered(
        factories.user("canceller", staff=True, perms=("view_tasklog", "cancel_tasklog"))
    ) == {"cancel_tasks"}
    assert offered(
        factories.user("retrier", staff=True, perms=("view_tasklog", "retry_tasklog"))
    ) == {"retry_tasks"}
    # Only what can apply to the statuses shown.
    assert offered(both, {"status__exact": "failed"}) == {"retry_tasks"}
    assert offered(both, {"status__exact": "completed"}) == set()
    assert offered(both, {"status__exact": "processing"}) == {"cancel_tasks"}
