"""The live progress widget's template tags: ``{% load taskqueue %}``."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.template import Context, Template
from django.urls import reverse

from django_taskqueue import lifecycle, live
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.status import TaskStatus

pytestmark = pytest.mark.django_db

needs_api = pytest.mark.skipif(not settings.HAS_DRF, reason="the API needs the drf extra")


def running(progress: int = 40, message: str = "resized", **fields: Any) -> TaskLog:
    fields.setdefault("task_name", "tests.add")
    task = lifecycle.create_task_log(str(uuid.uuid4()), **fields)
    lifecycle.mark_started(task.celery_task_id)
    lifecycle.record_progress(ProgressWrite(progress, message, None, True), pk=task.pk)
    return TaskLog.objects.get(pk=task.pk)


def render(source: str, **context: Any) -> str:
    return Template("{% load taskqueue %}" + source).render(Context(context))


def attribute(html: str, name: str) -> str | None:
    """The value of the first ``name="..."`` attribute in ``html``."""
    found = re.search(rf'\s{re.escape(name)}="([^"]*)"', html)
    return None if found is None else found.group(1)


@needs_api
def test_a_running_task_follows_the_api_stream_and_polls_its_detail() -> None:
    task = running(40, "resized", file_name="photos.zip")
    html = render("{% task_progress task %}", task=task)
    assert attribute(html, "data-tq-task") == str(task.pk)
    assert attribute(html, "data-tq-stream-url") == reverse(
        "django_taskqueue_api:tasklog-stream", args=[task.pk]
    )
    assert attribute(html, "data-tq-poll-url") == reverse(
        "django_taskqueue_api:tasklog-detail", args=[task.pk]
    )
    assert attribute(html, "data-tq-status") == "processing"
    assert attribute(html, "data-tq-mode") == "waiting"
    # An accessible progress bar, its value, its name, and the state as text.
    assert 'role="progressbar"' in html
    assert attribute(html, "aria-valuenow") == "40"
    assert attribute(html, "aria-valuemin") == "0"
    assert attribute(html, "aria-valuemax") == "100"
    assert attribute(html, "aria-valuetext") == "40% resized"
    assert attribute(html, "aria-label") == "Progress of photos.zip"
    assert 'style="width: 40%"' in html
    assert '<span class="tq-progress-label" data-tq-part="percent">40%</span>' in html
    assert ">Processing</span>" in html
    assert '<span class="tq-live-message" data-tq-part="message">resized</span>' in html
    # The notice that the task ended while the page was open, hidden until then.
    assert 'data-tq-part="ended" hidden' in html


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (TaskStatus.COMPLETED, "Completed"),
        (TaskStatus.FAILED, "Failed"),
        (TaskStatus.CANCELLED, "Cancelled"),
    ],
)
def test_an_ended_task_is_shown_as_it_ended_and_followed_no_more(status: str, shown: str) -> None:
    task = running(60, "halfway")
    if status == TaskStatus.COMPLETED:
        lifecycle.mark_completed(task.celery_task_id, result={"ok": True})
    elif status == TaskStatus.FAILED:
        lifecycle.mark_failed(task.celery_task_id, error_message="ValueError: bad row 7")
    else:
        lifecycle.mark_cancelled(pk=task.pk, reason="no longer needed")
    task.refresh_from_db()
    html = render("{% task_progress task %}", task=task)
    assert "data-tq-stream-url" not in html
    assert "data-tq-poll-url" not in html
    assert attribute(html, "data-tq-mode") == "static"
    assert f">{shown}</span>" in html
    assert 'data-tq-part="ended"' not in html
    message = re.search(r'data-tq-part="message">([^<]*)<', html)
    assert message is not None
    expected = {
        "completed": "halfway",
        "failed": "ValueError: bad row 7",
        "cancelled": "no longer needed",
    }[status]
    assert message.group(1) == expected
    if status == TaskStatus.COMPLETED:
        assert attribute(html, "aria-valuenow") == "100"


@pytest.mark.urls("tests.urls_admin_only")
def test_without_the_api_the_widget_shows_the_rendered_state_or_polls_what_it_is_given() -> None:
    task = running()
    html = render("{% task_progress task %}", task=task)
    assert "data-tq-stream-url" not in html
    assert "data-tq-poll-url" not in html
    assert attribute(html, "data-tq-mode") == "static"
    assert attribute(html, "aria-valuenow") == "40"

    html = render("{% task_progress task poll_url=url %}", task=task, url="/my/status/")
    assert attribute(html, "data-tq-poll-url") == "/my/status/"
    assert "data-tq-stream-url" not in html
    assert attribute(html, "data-tq-mode") == "waiting"


@needs_api
def test_stream_and_poll_can_be_turned_off_or_pointed_elsewhere() -> None:
    task = running()
    html = render("{% task_progress task stream=False %}", task=task)
    assert "data-tq-stream-url" not in html
    assert attribute(html, "data-tq-poll-url") == reverse(
        "django_taskqueue_api:tasklog-detail", args=[task.pk]
    )
    html = render("{% task_progress task poll=False %}", task=task)
    assert "data-tq-poll-url" not in html
    assert attribute(html, "data-tq-stream-url") is not None
    html = render(
        "{% task_progress task stream_url='/s/' poll_url='/p/' poll_interval=0.5 %}", task=task
    )
    assert attribute(html, "data-tq-stream-url") == "/s/"
    assert attribute(html, "data-tq-poll-url") == "/p/"
    assert attribute(html, "data-tq-poll-interval") == "500"


def test_compact_shows_the_bar_and_percentage_with_the_message_as_its_tooltip() -> None:
    task = running(25, "page 3 of 12")
    html = render("{% task_progress task compact=True label='Import' %}", task=task)
    assert "tq-live-compact" in html
    assert 'data-tq-part="status"' not in html
    assert 'data-tq-part="message"' not in html
    assert attribute(html, "title") == "25% page 3 of 12"
    assert attribute(html, "aria-label") == "Import"


def test_what_the_task_says_is_escaped() -> None:
    task = running(10, '<img src=x onerror="alert(1)">', file_name="<b>x</b>.csv")
    html = render("{% task_progress task %}", task=task)
    assert "<img" not in html
    assert "<b>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_media_includes_the_stylesheet_the_configuration_and_the_deferred_script() -> None:
    html = render("{% task_progress_media %}")
    assert '<link rel="stylesheet" href="/static/django_taskqueue/progress.css">' in html
    assert '<script src="/static/django_taskqueue/progress.js" defer></script>' in html
    config = re.search(
        r'<script id="taskqueue-progress-config" type="application/json">(.*?)</script>',
        html,
        re.S,
    )
    assert config is not None
    data = json.loads(config.group(1))
    assert data["labels"]["processing"] == "Processing"
    assert set(data["labels"]) == {status.value for status in TaskStatus}
    assert data["terminal"] == ["cancelled", "completed", "failed"]
    assert data["maxStreams"] == 2

    html = render("{% task_progress_media max_streams=1 stylesheet=False %}")
    assert "progress.css" not in html
    assert '"maxStreams": 1' in html


@pytest.mark.parametrize(("cap", "streams"), [(1, 1), (2, 2), (5, 2), (None, 2)])
def test_a_page_opens_no_more_streams_than_one_user_may_hold(
    settings: Any, cap: int | None, streams: int
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_MAX_PER_USER": cap}
    assert live.media_context()["config"]["maxStreams"] == streams


def test_the_script_and_the_stylesheet_ship_with_the_package() -> None:
    for name in ("progress.js", "progress.css"):
        path = finders.find(f"django_taskqueue/{name}")
        assert path, name
    # The admin's stylesheet takes the badges and bars from the widget's.
    admin_css = finders.find("django_taskqueue/admin.css")
    assert admin_css
    with open(str(admin_css)) as handle:
        assert '@import url("progress.css");' in handle.read()


@needs_api
def test_the_stream_sends_what_the_widget_shows() -> None:
    from django_taskqueue.api.stream import STREAM_FIELDS

    assert STREAM_FIELDS == live.LIVE_FIELDS
    task = running(30, "half")
    state = live.live_state(task)
    assert state["id"] == str(task.pk)
    assert set(state) == {"id", *live.LIVE_FIELDS}
