"""The live progress widget in headless Chromium, against a live server.

The test writes a task's progress and its end through the lifecycle functions
(as a worker would) while the page is open, and watches the bar move and the
end show: over the event stream (across its reconnections), by polling when the
stream is refused or the browser has no ``EventSource``, and in the admin
without the API. Screenshots go to ``TASKQUEUE_SCREENSHOT_DIR`` when it is set.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.urls import reverse

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from django_taskqueue.progress import ProgressWrite
from django_taskqueue.status import TaskStatus
from tests.browser import BROWSER_MARKS, screenshot_dir, start_chromium

pytestmark = BROWSER_MARKS

needs_api = pytest.mark.skipif(not django_settings.HAS_DRF, reason="the API needs the drf extra")

#: What one widget shows, read in the page (the parts may sit outside the widget).
READ_STATE = """
const id = arguments[0];
const root = document.querySelector('[data-tq-task="' + id + '"]');
if (!root) { return null; }
const part = (name) => root.querySelector('[data-tq-part="' + name + '"]')
    || document.querySelector('[data-tq-for="' + id + '"][data-tq-part="' + name + '"]');
const text = (name) => { const e = part(name); return e ? e.textContent.trim() : null; };
const ended = part("ended");
return {
    mode: root.getAttribute("data-tq-mode"),
    via: root.getAttribute("data-tq-via"),
    status: root.getAttribute("data-tq-status"),
    now: part("bar").getAttribute("aria-valuenow"),
    width: part("fill").style.width,
    percent: text("percent"),
    label: text("status"),
    message: text("message"),
    ended: ended ? !ended.hidden : null,
};
"""


@pytest.fixture
def requests_seen(live_server: Any, transactional_db: Any) -> Iterator[list[dict[str, str]]]:
    """The path and ``Last-Event-ID`` of each request the live server receives.

    At the end it waits for the requests still open (the streams of a page just
    closed end within their short life) so none reads the database after the test.
    """
    seen: list[dict[str, str]] = []
    open_requests = [0]

    def started(sender: Any, environ: dict[str, Any], **kwargs: Any) -> None:
        open_requests[0] += 1
        seen.append(
            {
                "path": environ.get("PATH_INFO", ""),
                "last_event_id": environ.get("HTTP_LAST_EVENT_ID", ""),
            }
        )

    def finished(sender: Any, **kwargs: Any) -> None:
        open_requests[0] -= 1

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        yield seen
    finally:
        deadline = time.monotonic() + 15
        while open_requests[0] > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        request_started.disconnect(started)
        request_finished.disconnect(finished)


@pytest.fixture
def browser(tmp_path: Path, requests_seen: list[dict[str, str]]) -> Iterator[Any]:
    driver = start_chromium(tmp_path / "chromium-profile", width=900, height=700)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fast_stream(settings: Any) -> None:
    """Streams that read every 0.2 s and end after 2 s, so a test sees them reconnect."""
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "API_STREAM_POLL_INTERVAL": 0.2,
        "API_STREAM_MAX_SECONDS": 2,
    }
    # No stream slot left over from another test.
    cache.clear()


@pytest.fixture
def signed_in(live_server: Any, browser: Any, admin_user: Any) -> Any:
    """The browser, signed in to the live server as a superuser."""
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert browser.find_element(By.ID, "site-name")
    return browser


def task_in(status: str, *, file_name: str, progress: int = 0, message: str = "") -> TaskLog:
    """A task moved to ``status`` by the lifecycle functions."""
    task = lifecycle.create_task_log(
        str(uuid.uuid4()), task_name="imports.csv", task_type="document", file_name=file_name
    )
    if status == TaskStatus.PENDING:
        return task
    lifecycle.mark_started(task.celery_task_id, worker="worker@test")
    if progress or message:
        step(task, progress, message)
    if status == TaskStatus.COMPLETED:
        lifecycle.mark_completed(task.celery_task_id, result={"rows": 1200})
    elif status == TaskStatus.FAILED:
        lifecycle.mark_failed(
            task.celery_task_id, error_message="ValueError: row 314 has 9 columns, expected 8"
        )
    task.refresh_from_db()
    assert task.status == status
    return task


def step(task: TaskLog, progress: int, message: str) -> None:
    lifecycle.record_progress(ProgressWrite(progress, message, None, True), pk=task.pk)


def finish(task: TaskLog, message: str) -> None:
    lifecycle.mark_completed(
        task.celery_task_id,
        result={"ok": True},
        progress=ProgressWrite(100, message, None, True),
    )


def state(browser: Any, task: TaskLog) -> dict[str, Any] | None:
    result: dict[str, Any] | None = browser.execute_script(READ_STATE, str(task.pk))
    return result


def wait_for(browser: Any, task: TaskLog, timeout: float = 20.0, **expected: Any) -> dict[str, Any]:
    """Wait until the widget of ``task`` shows ``expected``; what it shows then."""
    deadline = time.monotonic() + timeout
    while True:
        shown = state(browser, task)
        if shown is not None and all(shown.get(k) == v for k, v in expected.items()):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"the widget never showed {expected}; it shows {shown}")
        time.sleep(0.1)


def page_url(live_server: Any, *tasks: TaskLog, **options: Any) -> str:
    query = "&".join(
        [*(f"id={task.pk}" for task in tasks), *(f"{k}={v}" for k, v in options.items())]
    )
    return f"{live_server.url}{reverse('progress-page')}?{query}"


def shoot(driver: Any, path: Path) -> None:
    """Save the page: the window fitted to the document's height."""
    # The window's outer size includes the browser's frame: measure the gap once.
    inner = driver.execute_script("return window.innerHeight")
    outer = driver.get_window_size()["height"]
    content = driver.execute_script(
        "return Math.ceil(document.body.getBoundingClientRect().bottom)"
    )
    driver.set_window_size(900, min(int(content) + 40 + outer - int(inner), 1400))
    driver.execute_script("document.documentElement.style.overflow = 'hidden'")
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5_000


@needs_api
def test_the_bar_follows_the_stream_across_reconnections_to_the_end(
    live_server: Any,
    signed_in: Any,
    fast_stream: None,
    requests_seen: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    browser = signed_in
    main = task_in(
        TaskStatus.PROCESSING, file_name="customers-2026.csv", progress=10, message="reading rows"
    )
    queued = task_in(TaskStatus.PENDING, file_name="orders-november.csv")
    done = task_in(
        TaskStatus.COMPLETED, file_name="products.csv", progress=100, message="1,200 rows imported"
    )
    failed = task_in(TaskStatus.FAILED, file_name="suppliers.xlsx", progress=35, message="row 314")
    browser.get(page_url(live_server, main, queued, done, failed))

    first = wait_for(browser, main, mode="stream", now="10")
    assert first["label"] == "Processing"
    assert first["message"] == "reading rows"
    wait_for(browser, queued, mode="stream", label="Pending")
    # Tasks that ended are shown as they ended, and followed no more.
    assert state(browser, done) == {
        **state(browser, done),  # type: ignore[dict-item]
        "mode": "done",
        "now": "100",
        "label": "Completed",
        "message": "1,200 rows imported",
    }
    failed_shown = state(browser, failed)
    assert failed_shown is not None
    assert failed_shown["label"] == "Failed"
    assert failed_shown["message"] == "ValueError: row 314 has 9 columns, expected 8"

    step(main, 40, "12,000 of 30,000 rows")
    shown = wait_for(browser, main, now="40", message="12,000 of 30,000 rows")
    assert shown["width"] == "40%"
    assert shown["percent"] == "40%"
    assert shown["via"] == "stream"
    time.sleep(0.6)  # the bar's transition
    shoot(browser, screenshot_dir(tmp_path) / "live-progress.png")

    # Past the stream's 2 s life: the browser has reconnected (with Last-Event-ID).
    time.sleep(2.5)
    step(main, 75, "22,500 of 30,000 rows")
    wait_for(browser, main, now="75", mode="stream")

    finish(main, "30,000 rows imported")
    end = wait_for(browser, main, mode="done")
    assert end == {
        "mode": "done",
        "via": "stream",
        "status": "completed",
        "now": "100",
        "width": "100%",
        "percent": "100%",
        "label": "Completed",
        "message": "30,000 rows imported",
        "ended": True,
    }

    stream_path = reverse("django_taskqueue_api:tasklog-stream", args=[main.pk])
    detail_path = reverse("django_taskqueue_api:tasklog-detail", args=[main.pk])
    streams = [r for r in requests_seen if r["path"] == stream_path]
    assert len(streams) >= 2, requests_seen
    assert not streams[0]["last_event_id"]
    assert all(r["last_event_id"] for r in streams[1:]), streams
    assert not [r for r in requests_seen if r["path"] == detail_path]
    # The stream closed at the end: no new stream request once the end was shown.
    count = len([r for r in requests_seen if r["path"] == stream_path])
    time.sleep(1.5)
    assert len([r for r in requests_seen if r["path"] == stream_path]) == count


@needs_api
def test_a_refused_stream_falls_back_to_polling(
    live_server: Any,
    signed_in: Any,
    fast_stream: None,
    settings: Any,
    requests_seen: list[dict[str, str]],
) -> None:
    # One stream per user: the page asks for two, the second is answered 429.
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_STREAM_MAX_PER_USER": 1}
    browser = signed_in
    first = task_in(TaskStatus.PROCESSING, file_name="a.csv", progress=5, message="start")
    second = task_in(TaskStatus.PROCESSING, file_name="b.csv", progress=5, message="start")
    browser.get(page_url(live_server, first, second, max_streams=2, poll_interval=0.3))

    modes = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        modes = {t.pk: (state(browser, t) or {}).get("mode") for t in (first, second)}
        if sorted(map(str, modes.values())) == ["poll", "stream"]:
            break
        time.sleep(0.1)
    assert sorted(map(str, modes.values())) == ["poll", "stream"], modes
    polling = first if modes[first.pk] == "poll" else second

    for task in (first, second):
        step(task, 50, "halfway")
    for task in (first, second):
        wait_for(browser, task, now="50", message="halfway")
    assert (state(browser, polling) or {})["via"] == "poll"
    for task in (first, second):
        finish(task, "done")
    for task in (first, second):
        wait_for(browser, task, mode="done", now="100", label="Completed", ended=True)

    stream_paths = {
        reverse("django_taskqueue_api:tasklog-stream", args=[t.pk]) for t in (first, second)
    }
    detail = reverse("django_taskqueue_api:tasklog-detail", args=[polling.pk])
    assert len([r for r in requests_seen if r["path"] in stream_paths]) >= 2
    assert len([r for r in requests_seen if r["path"] == detail]) >= 2


@needs_api
def test_without_eventsource_the_widget_polls(
    live_server: Any,
    signed_in: Any,
    fast_stream: None,
    requests_seen: list[dict[str, str]],
) -> None:
    browser = signed_in
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"}
    )
    task = task_in(TaskStatus.PROCESSING, file_name="c.csv", progress=20, message="reading")
    browser.get(page_url(live_server, task, poll_interval=0.3))
    assert browser.execute_script("return typeof window.EventSource") == "undefined"

    wait_for(browser, task, mode="poll", now="20", via="poll")
    step(task, 60, "writing")
    wait_for(browser, task, now="60", message="writing")
    lifecycle.mark_failed(task.celery_task_id, error_message="OSError: disk full")
    end = wait_for(browser, task, mode="done")
    assert end["label"] == "Failed"
    assert end["status"] == "failed"
    assert end["message"] == "OSError: disk full"
    assert end["ended"] is True
    stream = reverse("django_taskqueue_api:tasklog-stream", args=[task.pk])
    assert not [r for r in requests_seen if r["path"] == stream]


@pytest.mark.urls("tests.urls_admin_only")
def test_the_admin_pages_update_live_without_the_api(
    live_server: Any, signed_in: Any, requests_seen: list[dict[str, str]]
) -> None:
    from selenium.webdriver.common.by import By

    browser = signed_in
    listed = task_in(
        TaskStatus.PROCESSING, file_name="big-import.csv", progress=20, message="24,000 rows"
    )
    task_in(TaskStatus.COMPLETED, file_name="small.csv", progress=100)

    # The changelist: the running row's bar and its status badge.
    browser.get(f"{live_server.url}{reverse('admin:django_taskqueue_tasklog_changelist')}")
    wait_for(browser, listed, mode="poll", now="20", label="Processing")
    step(listed, 45, "54,000 rows")
    wait_for(browser, listed, now="45", via="poll")
    finish(listed, "120,000 rows")
    wait_for(browser, listed, mode="done", now="100", label="Completed")
    badge = browser.find_element(By.CSS_SELECTOR, f'[data-tq-for="{listed.pk}"]')
    assert "tq-status-completed" in (badge.get_attribute("class") or "")

    # The task's page: bar, status and message rows, and the notice at the end.
    opened = task_in(
        TaskStatus.PROCESSING, file_name="catalogue.xlsx", progress=30, message="sheet 1 of 3"
    )
    browser.get(
        f"{live_server.url}{reverse('admin:django_taskqueue_tasklog_change', args=[opened.pk])}"
    )
    wait_for(browser, opened, mode="poll", now="30", message="sheet 1 of 3", ended=False)
    step(opened, 66, "sheet 2 of 3")
    wait_for(browser, opened, now="66", message="sheet 2 of 3")
    finish(opened, "3 sheets imported")
    end = wait_for(browser, opened, mode="done")
    assert end["label"] == "Completed"
    assert end["message"] == "3 sheets imported"
    assert end["ended"] is True

    live_path = reverse("admin:django_taskqueue_tasklog_live", args=[opened.pk])
    assert [r for r in requests_seen if r["path"] == live_path]
    assert not [r for r in requests_seen if "/stream/" in r["path"]]
