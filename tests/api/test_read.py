"""Reading over the API: list, filters, pages, detail, history, progress, status; isolation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite
from tests import factories
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

LIST = "/api/tasks/"


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


# --- isolation and permissions ------------------------------------------------------


def test_users_see_their_own_tasks_and_staff_see_all(alice: Any, bob: Any, staff: Any) -> None:
    mine = factories.task(owner=alice, **factories.FILE_TASK)
    theirs = factories.task(owner=bob, **factories.FILE_TASK)
    system = factories.task(**factories.FILE_TASK)
    assert ids(client_for(alice).get(LIST)) == {str(mine.pk)}
    assert ids(client_for(bob).get(LIST)) == {str(theirs.pk)}
    assert ids(client_for(staff).get(LIST)) == {str(mine.pk), str(theirs.pk), str(system.pk)}


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "events/"),
        ("get", "progress-history/"),
        ("get", "stream/"),
        ("post", "cancel/"),
        ("post", "retry/"),
    ],
)
def test_another_users_task_is_a_404(alice: Any, bob: Any, method: str, suffix: str) -> None:
    theirs = factories.task(owner=bob, **factories.FILE_TASK)
    response = getattr(client_for(alice), method)(f"{LIST}{theirs.pk}/{suffix}", format="json")
    assert response.status_code == 404
    assert "detail" in response.json()
    theirs.refresh_from_db()
    assert theirs.status == "pending"


def test_another_users_task_by_celery_id_is_a_404(alice: Any, bob: Any) -> None:
    theirs = factories.task(owner=bob, **factories.FILE_TASK)
    response = client_for(alice).get(f"{LIST}status/{theirs.celery_task_id}/")
    assert response.status_code == 404


def test_staff_see_other_users_tasks_but_need_the_permission_to_act(
    alice: Any, staff: Any, file_root: Path
) -> None:
    from django.contrib.auth.models import Permission

    task = factories.task(owner=alice, **factories.FILE_TASK)
    client = client_for(staff)
    assert client.get(f"{LIST}{task.pk}/").status_code == 200
    response = client.post(f"{LIST}{task.pk}/cancel/", {}, format="json")
    assert response.status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="cancel_tasklog"))
    response = client_for(staff).post(f"{LIST}{task.pk}/cancel/", {}, format="json")
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.status == "cancelled"


def test_anonymous_requests_are_refused(alice: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    for url in (LIST, f"{LIST}{task.pk}/", f"{LIST}progress/"):
        response = client_for(None).get(url)
        assert response.status_code == 401, url  # Basic auth comes first: a challenge
        assert response["WWW-Authenticate"].startswith("Basic")


def test_basic_token_and_session_authentication_all_work(alice: Any) -> None:
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    task = factories.task(owner=alice, **factories.FILE_TASK)
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    session = APIClient()
    assert session.login(username="alice", password="pw-alice")
    for client in (client_for(alice), token, session):
        assert ids(client.get(LIST)) == {str(task.pk)}
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token nope")
    assert wrong.get(LIST).status_code == 401


def test_session_authentication_enforces_csrf_on_writes(alice: Any) -> None:
    from rest_framework.test import APIClient

    task = factories.task(owner=alice, **factories.FILE_TASK)
    session = APIClient(enforce_csrf_checks=True)
    session.login(username="alice", password="pw-alice")
    response = session.post(f"{LIST}{task.pk}/cancel/", {}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_permission_policy_is_a_setting(alice: Any, settings: Any) -> None:
    factories.task(owner=alice, **factories.FILE_TASK)
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    }
    assert client_for(alice).get(LIST).status_code == 403


# --- list: shape, filters, ordering, pagination ----------------------------------------


def test_list_shape(api: Any, alice: Any) -> None:
    task = factories.task(
        owner=alice,
        file_name="photo.jpg",
        file_size=2048,
        file_path="/x/photo.jpg",
        **factories.FILE_TASK,
    )
    body = api.get(LIST).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 1
    row = body["results"][0]
    assert row["id"] == str(task.pk)
    assert row["celery_task_id"] == task.celery_task_id
    assert row["status"] == "pending"
    assert row["task_type"] == "file"
    assert (row["file_name"], row["file_size"], row["progress"]) == ("photo.jpg", 2048, 0)
    assert row["completed_at"] is None
    assert row["owner"] == alice.pk
    assert "traceback" not in row


def test_status_filter_takes_one_or_several(api: Any, alice: Any) -> None:
    pending = factories.task(owner=alice, **factories.FILE_TASK)
    done = factories.task("completed", owner=alice, **factories.FILE_TASK)
    failed = factories.task("failed", owner=alice, **factories.FILE_TASK)
    assert ids(api.get(LIST, {"status": "completed"})) == {str(done.pk)}
    both = {str(done.pk), str(failed.pk)}
    assert ids(api.get(LIST, {"status": ["completed", "failed"]})) == both
    assert ids(api.get(LIST, {"status": "completed,failed"})) == both
    assert ids(api.get(LIST, {"status": "pending"})) == {str(pending.pk)}


def test_bad_filter_values_are_400s_that_say_what_is_wrong(api: Any) -> None:
    response = api.get(LIST, {"status": "finished"})
    assert response.status_code == 400
    assert "finished is not a status" in response.json()["status"][0]
    response = api.get(LIST, {"from_date": "yesterday"})
    assert response.status_code == 400
    assert "YYYY-MM-DD" in response.json()["from_date"][0]
    response = api.get(LIST, {"to_date": "2024-02-30"})
    assert response.status_code == 400
    response = api.get(LIST, {"ordering": "traceback"})
    assert response.status_code == 400
    assert api.get(LIST, {"parent": "not-a-uuid"}).status_code == 400


def test_task_type_search_and_parent_filters(api: Any, alice: Any) -> None:
    image = factories.task(
        owner=alice, task_type="image", file_name="Holiday.JPG", task_name="tests.process_file"
    )
    doc = factories.task(owner=alice, task_type="document", task_name="imports.csv")
    assert ids(api.get(LIST, {"task_type": "image"})) == {str(image.pk)}
    assert ids(api.get(LIST, {"search": "holiday"})) == {str(image.pk)}
    assert ids(api.get(LIST, {"search": "IMPORTS"})) == {str(doc.pk)}
    assert ids(api.get(LIST, {"search": doc.celery_task_id[:8]})) == {str(doc.pk)}
    parent, children = lifecycle.create_bulk(
        "tests.process_file", [{"file_path": "/a"}, {"file_path": "/b"}], owner=alice
    )
    assert ids(api.get(LIST, {"parent": str(parent.pk)})) == {str(c.pk) for c in children}


def test_date_filters_take_dates_and_date_times(api: Any, alice: Any) -> None:
    def at(day: int, hour: int = 12) -> TaskLog:
        task = factories.task(owner=alice, **factories.FILE_TASK)
        moment = timezone.make_aware(dt.datetime(2024, 1, day, hour))
        TaskLog.objects.filter(pk=task.pk).update(created_at=moment)
        return task

    first, second, third = at(1, 23), at(2), at(3, 0)
    assert ids(api.get(LIST, {"from_date": "2024-01-02"})) == {str(second.pk), str(third.pk)}
    # A date as the upper bound includes its whole day.
    assert ids(api.get(LIST, {"to_date": "2024-01-01"})) == {str(first.pk)}
    span = {"from_date": "2024-01-02", "to_date": "2024-01-02"}
    assert ids(api.get(LIST, span)) == {str(second.pk)}
    assert ids(api.get(LIST, {"to_date": "2024-01-02T12:00:00Z"})) == {
        str(first.pk),
        str(second.pk),
    }


def test_ordering(api: Any, alice: Any) -> None:
    small = factories.task(owner=alice, file_size=1, **factories.FILE_TASK)
    big = factories.task(owner=alice, file_size=9, **factories.FILE_TASK)
    rows = api.get(LIST, {"ordering": "-file_size"}).json()["results"]
    assert [r["id"] for r in rows] == [str(big.pk), str(small.pk)]
    rows = api.get(LIST, {"ordering": "file_size"}).json()["results"]
    assert [r["id"] for r in rows] == [str(small.pk), str(big.pk)]
    # Default: newest first.
    assert api.get(LIST).json()["results"][0]["id"] == str(big.pk)


def test_pagination_bounds(api: Any, alice: Any, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_PAGE_SIZE": 2,
        "API_MAX_PAGE_SIZE": 3,
    }
    for _ in range(5):
        factories.task(owner=alice, **factories.FILE_TASK)
    body = api.get(LIST).json()
    assert (body["count"], len(body["results"])) == (5, 2)
    assert "page=2" in body["next"]
    assert len(api.get(LIST, {"page_size": 100}).json()["results"]) == 3  # capped
    assert len(api.get(LIST, {"page_size": ""}).json()["results"]) == 2  # empty: the default
    # A size that is not a positive integer is a 400 that names it, as the schema says.
    for size in (0, -1, "x", "null", "1.5"):
        response = api.get(LIST, {"page_size": size})
        assert response.status_code == 400, response.content
        assert response.json() == {"page_size": [f"{str(size)!r} is not a positive integer."]}
    last = api.get(LIST, {"page": 3}).json()
    assert (len(last["results"]), last["next"]) == (1, None)
    assert api.get(LIST, {"page": 4}).status_code == 404  # past the end: nothing there
    # A page that is not a positive integer is a bad query parameter: a 400 that names it.
    for page in (0, -1, "x", "1.5"):
        response = api.get(LIST, {"page": page})
        assert response.status_code == 400, response.content
        assert response.json() == {"page": [f"{str(page)!r} is not a page number (1, 2, ...)."]}
    assert api.get(LIST, {"page": "last"}).json()["results"]


def test_list_query_count_does_not_grow_with_rows(api: Any, alice: Any) -> None:
    factories.task(owner=alice, **factories.FILE_TASK)
    with CaptureQueriesContext(connection) as one:
        assert api.get(LIST, {"status": "pending"}).status_code == 200
    for _ in range(20):
        factories.task(owner=alice, **factories.FILE_TASK)
    with CaptureQueriesContext(connection) as many:
        assert api.get(LIST, {"status": "pending"}).status_code == 200
    assert len(many) == len(one)


# --- detail, history, progress, status ---------------------------------------------------


def test_detail_has_the_computed_fields_history_and_events(api: Any, alice: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    lifecycle.mark_started(task.celery_task_id)
    lifecycle.record_progress(
        ProgressWrite(40, "resized", {"w": 1}, True), celery_task_id=task.celery_task_id
    )
    body = api.get(f"{LIST}{task.pk}/").json()
    assert body["status"] == "processing"
    assert body["progress"] == 40
    assert body["is_cancellable"] is True
    assert body["is_retryable"] is False
    assert body["elapsed_time"] >= 0
    assert body["error_message"] == ""
    assert body["retry_count"] == 0
    assert body["started_at"] is not None
    assert body["children"] is None
    assert [p["progress"] for p in body["progress_history"]] == [40]
    assert [e["event_type"] for e in body["events"]] == ["created", "started", "progress"]


def test_history_and_events_are_paginated_sub_resources(
    api: Any, alice: Any, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_PAGE_SIZE": 2}
    task = factories.task(owner=alice, **factories.FILE_TASK)
    lifecycle.mark_started(task.celery_task_id)
    for percent in (10, 20, 30):
        lifecycle.record_progress(ProgressWrite(percent, f"{percent}", None, True), pk=task.pk)
    history = api.get(f"{LIST}{task.pk}/progress-history/").json()
    assert history["count"] == 3
    assert [row["progress"] for row in history["results"]] == [10, 20]
    page2 = api.get(f"{LIST}{task.pk}/progress-history/", {"page": 2}).json()
    assert [row["progress"] for row in page2["results"]] == [30]
    events = api.get(f"{LIST}{task.pk}/events/", {"page_size": 10}).json()
    assert [e["event_type"] for e in events["results"]] == [
        "created",
        "started",
        "progress",
        "progress",
        "progress",
    ]


def test_progress_summary_counts_what_the_caller_may_see(alice: Any, bob: Any, staff: Any) -> None:
    factories.task(owner=alice, **factories.FILE_TASK)
    factories.task("completed", owner=alice, **factories.FILE_TASK)
    factories.task("failed", owner=bob, **factories.FILE_TASK)
    assert client_for(alice).get(f"{LIST}progress/").json() == {
        "pending": 1,
        "processing": 0,
        "retrying": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "total": 2,
    }
    assert client_for(staff).get(f"{LIST}progress/").json()["total"] == 3


def test_status_by_celery_id_without_a_result_backend(
    api: Any, alice: Any, dead_broker: Any
) -> None:
    dead_broker.conf.result_backend = None  # Celery's DisabledBackend
    failed = factories.task("failed", owner=alice, **factories.FILE_TASK)
    body = api.get(f"{LIST}status/{failed.celery_task_id}/").json()
    assert body["id"] == str(failed.pk)
    assert body["status"] == "failed"
    assert body["ready"] is True
    assert body["result"] is None
    assert body["error"] == {"message": "it broke", "code": "ValueError"}
    assert body["celery"] == {"backend": None, "state": None, "ready": None, "error": None}
    assert api.get(f"{LIST}status/no-such-id/").status_code == 404


def test_unknown_ids_are_404s(api: Any) -> None:
    assert api.get(f"{LIST}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert api.get(f"{LIST}not-a-uuid/").status_code == 404


def test_a_detail_url_ignores_list_filters(api: Any, alice: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    assert api.get(f"{LIST}{task.pk}/", {"status": "completed"}).status_code == 200


def test_bulk_parent_detail_counts_its_children(api: Any, alice: Any) -> None:
    parent, _ = lifecycle.create_bulk(
        "tests.process_file", [{"file_path": "/a"}, {"file_path": "/b"}], owner=alice
    )
    body = api.get(f"{LIST}{parent.pk}/").json()
    assert body["children"]["pending"] == 2
    assert body["children"]["total"] == 2


def test_another_user_cannot_be_named_in_status_counts(alice: Any) -> None:
    eve = factories.user("eve")
    factories.task(owner=alice, **factories.FILE_TASK)
    assert client_for(eve).get(f"{LIST}progress/").json()["total"] == 0


def test_date_times_with_any_offset_or_at_the_calendar_edges_are_accepted(api: Any) -> None:
    for value in (
        "2024-01-26T22:23:56+16:39",
        "0001-01-01T00:00:00+10:00",
        "9999-12-31T23:59:59-10:00",
        "9999-12-31",
    ):
        for name in ("from_date", "to_date"):
            assert api.get(LIST, {name: value}).status_code == 200, (name, value)


def test_canvas_fields_and_filters(api: Any, alice: Any) -> None:
    root = factories.task(owner=alice, celery_root_id="root-1", **factories.FILE_TASK)
    root_id = root.celery_task_id
    TaskLog.objects.filter(pk=root.pk).update(celery_root_id=root_id)
    step = factories.task(
        owner=alice,
        celery_root_id=root_id,
        celery_parent_id=root_id,
        celery_group_id="g1",
        **factories.FILE_TASK,
    )
    member = factories.task(
        owner=alice, celery_root_id="other-root", celery_group_id="g1", **factories.FILE_TASK
    )
    factories.task(owner=alice, **factories.FILE_TASK)  # outside the canvas
    assert ids(api.get(LIST, {"root_id": root_id})) == {str(root.pk), str(step.pk)}
    assert ids(api.get(LIST, {"group_id": "g1"})) == {str(step.pk), str(member.pk)}
    assert ids(api.get(LIST, {"celery_parent_id": root_id})) == {str(step.pk)}
    body = api.get(f"{LIST}{step.pk}/").json()
    assert (body["celery_parent_id"], body["celery_root_id"], body["celery_group_id"]) == (
        root_id,
        root_id,
        "g1",
    )
    listed = api.get(LIST, {"root_id": root_id}).json()["results"]
    assert {row["celery_root_id"] for row in listed} == {root_id}
