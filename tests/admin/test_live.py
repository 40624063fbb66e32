"""Live progress in the admin: the status view the widget polls, and the widgets on its pages."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from django_taskqueue.admin.tasklog import TaskLogAdmin
from django_taskqueue.status import TaskStatus
from tests import factories

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:django_taskqueue_tasklog_changelist")


def live_url(pk: Any) -> str:
    return reverse("admin:django_taskqueue_tasklog_live", args=[pk])


def widgets(html: str) -> dict[str, str]:
    """Each widget's opening tag, by the task id it follows."""
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r'<span class="tq-live[^"]*" data-tq-task="([^"]+)"[^>]*>', html)
    }


def test_the_status_view_answers_the_task_state_in_json(admin_client: Client) -> None:
    task = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    response = admin_client.get(live_url(task.pk))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["id"] == str(task.pk)
    assert body["status"] == "processing"
    assert body["progress"] == 40
    assert body["progress_message"] == "resized"
    assert body["error_message"] == ""
    assert body["started_at"] is not None
    assert body["completed_at"] is None


def test_the_status_view_of_a_failed_task_says_why(admin_client: Client) -> None:
    task = factories.task(TaskStatus.FAILED, **factories.SAMPLE_TASK, **factories.BOOM)
    body = admin_client.get(live_url(task.pk)).json()
    assert body["status"] == "failed"
    assert body["error_message"] == "ValueError: boom"
    assert body["error_code"] == "ValueError"


def test_the_status_view_checks_permissions_like_the_change_view(client: Client) -> None:
    task = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    # Staff without the view permission: 403, also for an id that does not exist.
    client.force_login(factories.user("nobody", staff=True))
    assert client.get(live_url(task.pk)).status_code == 403
    assert client.get(live_url(uuid.uuid4())).status_code == 403
    assert client.get(live_url(task.pk)).json() == {"detail": "Permission denied."}
    # With it: the task, and a 404 for an unknown or malformed id.
    client.force_login(factories.user("viewer", staff=True, perms=("view_tasklog",)))
    assert client.get(live_url(task.pk)).status_code == 200
    assert client.get(live_url(uuid.uuid4())).status_code == 404
    assert client.get(live_url("not-a-uuid")).status_code == 404
    # Signed out: the admin's login page, as for every admin view.
    client.logout()
    response = client.get(live_url(task.pk))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_the_status_view_answers_only_get(admin_client: Client) -> None:
    task = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    assert admin_client.post(live_url(task.pk)).status_code == 405


def test_the_changelist_follows_its_running_rows(admin_client: Client) -> None:
    active = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    pending = factories.task(TaskStatus.PENDING, **factories.SAMPLE_TASK)
    done = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    html = admin_client.get(CHANGELIST).content.decode()
    found = widgets(html)
    assert set(found) == {str(active.pk), str(pending.pk), str(done.pk)}
    for task in (active, pending):
        tag = found[str(task.pk)]
        assert f'data-tq-poll-url="{live_url(task.pk)}"' in tag
        assert "tq-live-compact" in tag
        if settings.HAS_DRF:
            stream = reverse("django_taskqueue_api:tasklog-stream", args=[task.pk])
            assert f'data-tq-stream-url="{stream}"' in tag
        # The status column's badge is kept current too.
        assert f'data-tq-for="{task.pk}" data-tq-part="status"' in html
    assert "data-tq-poll-url" not in found[str(done.pk)]
    assert 'data-tq-mode="static"' in found[str(done.pk)]
    assert f'data-tq-for="{done.pk}"' not in html
    assert '<script src="/static/django_taskqueue/progress.js" defer></script>' in html
    assert 'id="taskqueue-progress-config"' in html


@pytest.mark.urls("tests.urls_admin_only")
def test_without_the_api_the_admin_polls_its_own_view(admin_client: Client) -> None:
    task = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    html = admin_client.get(CHANGELIST).content.decode()
    tag = widgets(html)[str(task.pk)]
    assert f'data-tq-poll-url="{live_url(task.pk)}"' in tag
    assert "data-tq-stream-url" not in tag


def test_live_stream_false_keeps_the_admin_off_the_stream(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TaskLogAdmin, "live_stream", False)
    task = factories.task(
        TaskStatus.PROCESSING, progress=40, progress_message="resized", **factories.SAMPLE_TASK
    )
    tag = widgets(admin_client.get(CHANGELIST).content.decode())[str(task.pk)]
    assert "data-tq-stream-url" not in tag
    assert "data-tq-poll-url" in tag


def test_the_task_page_follows_a_running_task(admin_client: Client) -> None:
    task = factories.task(
        TaskStatus.PROCESSING,
        progress=55,
        progress_message="page 11 of 20",
        **factories.SAMPLE_TASK,
    )
    url = reverse("admin:django_taskqueue_tasklog_change", args=[task.pk])
    html = admin_client.get(url).content.decode()
    assert str(task.pk) in widgets(html)
    assert f'data-tq-for="{task.pk}" data-tq-part="status"' in html
    assert f'<span data-tq-for="{task.pk}" data-tq-part="message">page 11 of 20</span>' in html
    assert f'data-tq-for="{task.pk}" data-tq-part="ended" hidden' in html
    assert "progress.js" in html


def test_the_page_of_an_ended_task_follows_nothing(admin_client: Client) -> None:
    task = factories.task(TaskStatus.COMPLETED, **factories.SAMPLE_TASK)
    url = reverse("admin:django_taskqueue_tasklog_change", args=[task.pk])
    html = admin_client.get(url).content.decode()
    assert "data-tq-poll-url" not in html
    assert "data-tq-for" not in html
