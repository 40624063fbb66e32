"""The admin in a real browser: headless Chromium from Debian, driven by Selenium.

Logs in, filters the changelist, opens a task, cancels it, opens the overview,
and saves a screenshot of each page (to ``TASKQUEUE_SCREENSHOT_DIR`` when set,
else a temporary directory). Selenium is given the driver's path, so
selenium-manager never downloads a browser or a driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories
from tests.browser import BROWSER_MARKS, screenshot_dir, start_chromium

pytestmark = BROWSER_MARKS


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return screenshot_dir(tmp_path)


def _shoot(driver: Any, path: Path) -> None:
    """Save the whole page: grow the window to the document's height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1500, min(max(int(height) + 120, 700), 2400))
    driver.save_screenshot(str(path))
    driver.set_window_size(1500, 1000)
    assert path.stat().st_size > 10_000


def _sample_data() -> TaskLog:
    user_model = get_user_model()
    alice = user_model.objects.create_user("alice", password="pw")
    bob = user_model.objects.create_user("bob", password="pw")
    names = ["report-2026-11.csv", "invoices.xlsx", "photos.zip", "catalogue.pdf"]
    for hour in range(0, 24, 2):
        for n, status in enumerate(
            [TaskStatus.COMPLETED, TaskStatus.COMPLETED, TaskStatus.COMPLETED, TaskStatus.FAILED]
        ):
            if n == 3 and hour % 6:
                continue
            factories.task(
                status,
                task_name="imports.csv" if n % 2 else "tests.add",
                task_type="document" if n % 2 else "sample",
                owner=alice if n % 2 else bob,
                file_name=names[n],
                file_size=1024 * (n + 1) * 37,
                created_at=factories.ago(hours=hour, minutes=30),
                started_at=factories.ago(hours=hour, minutes=29),
                completed_at=factories.ago(hours=hour, minutes=29 - 2 * n - 1),
                args=[1, 2],
                **factories.BOOM,
            )
    factories.task(TaskStatus.PENDING, owner=alice, file_name="queued.csv", **factories.SAMPLE_TASK)
    factories.task(
        TaskStatus.RETRYING, owner=bob, task_name="imports.csv", task_type="document", args=[1, 2]
    )
    factories.task(
        TaskStatus.PROCESSING,
        owner=bob,
        task_name="imports.csv",
        task_type="document",
        file_name="stuck.csv",
        started_at=factories.ago(hours=2),
        heartbeat_at=factories.ago(hours=1),
        args=[1, 2],
    )
    target = factories.task(
        TaskStatus.PROCESSING,
        owner=alice,
        task_name="imports.csv",
        task_type="document",
        file_name="big-import.csv",
        file_size=48_000_000,
        started_at=factories.ago(minutes=3),
        metadata={"source": "upload", "rows": 120_000},
        args=[1, 2],
    )
    from django_taskqueue import lifecycle
    from django_taskqueue.progress import ProgressWrite

    for percent in (10, 25, 40, 55):
        lifecycle.record_progress(
            ProgressWrite(percent, f"{percent * 1200} rows", None, True), pk=target.pk
        )
    return target


def test_admin_in_headless_chromium(
    live_server: Any, browser: Any, screenshots: Path, admin_user: Any
) -> None:
    from selenium.webdriver.common.by import By

    target = _sample_data()

    # Log in.
    browser.get(f"{live_server.url}/admin/login/?next=/admin/django_taskqueue/tasklog/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert browser.find_element(By.ID, "result_list")
    # Fold the navigation sidebar so the screenshots show the whole list.
    browser.find_element(By.ID, "toggle-nav-sidebar").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#result_list .tq-badge")
    _shoot(browser, screenshots / "admin-changelist.png")

    # Filter: status processing, then the task type.
    browser.find_element(
        By.CSS_SELECTOR, "#changelist-filter a[href*='status__exact=processing']"
    ).click()
    browser.find_element(
        By.CSS_SELECTOR, "#changelist-filter a[href*='task_type=document']"
    ).click()
    assert "status__exact=processing" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 2
    _shoot(browser, screenshots / "admin-changelist-filtered.png")

    # Open the task.
    browser.find_element(By.CSS_SELECTOR, f"#result_list a[href*='{target.pk}']").click()
    assert target.celery_task_id in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "pre.tq-json")
    _shoot(browser, screenshots / "admin-task.png")

    # Cancel it from its page.
    browser.find_element(By.ID, "tq-cancel").click()
    message = browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success")
    assert "cancelled" in message.text.lower()
    target.refresh_from_db()
    assert target.status == TaskStatus.CANCELLED
    assert not browser.find_elements(By.ID, "tq-cancel")
    _shoot(browser, screenshots / "admin-task-cancelled.png")

    # The overview.
    browser.find_element(By.LINK_TEXT, "OVERVIEW").click()
    assert browser.find_elements(By.CSS_SELECTOR, "svg.tq-chart")
    assert browser.find_element(By.ID, "tq-stuck")
    assert browser.find_element(By.ID, "tq-failures")
    _shoot(browser, screenshots / "admin-overview.png")
