"""The example's pages under ``manage.py runserver``, as ``manage.py demo`` serves them.

- The API docs (Swagger UI, ReDoc) load nothing from a CDN: drf-spectacular-sidecar
  ships them as static files, and the example's settings point drf-spectacular at
  them. The tests read both pages and fetch every file they reference.
- The home page follows the signed-in user's running tasks with the live progress
  widget, over the API's event stream.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.api.servers import free_port
from tests.example.support import MANAGE, ROOT, example_env, needs_example_deps

pytestmark = [
    needs_example_deps,
    pytest.mark.skipif(
        any(
            importlib.util.find_spec(name) is None
            for name in ("rest_framework", "drf_spectacular", "drf_spectacular_sidecar")
        ),
        reason="the API docs need the drf extra and drf-spectacular-sidecar (the example group)",
    ),
]


class References(HTMLParser):
    """The URLs a page loads: ``src`` of scripts and images, ``href`` of links."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {"script": "src", "img": "src", "link": "href"}
        wanted = names.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def get(port: int, path: str, **headers: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def example_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's data folder, its database migrated."""
    data = tmp_path_factory.mktemp("example-pages")
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=example_env(data),
        check=True,
        timeout=300,
    )
    return data


@pytest.fixture(scope="module")
def example_server(example_data: Path) -> Iterator[int]:
    """The example under ``manage.py runserver`` (DEBUG: it serves the static files)."""
    data = example_data
    port = free_port()
    log_path = data / "runserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=example_env(data, DJANGO_DEBUG="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"runserver exited:\n{log_path.read_text()}")
            with contextlib.suppress(OSError):
                get(port, "/api/schema/")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"runserver did not answer:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            "/api/docs/",
            {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"},
        ),
        ("/api/redoc/", {"redoc.standalone.js"}),
    ],
)
def test_the_docs_pages_load_only_local_static_files(
    example_server: int, page: str, expected: set[str]
) -> None:
    status, content_type, body = get(example_server, page)
    assert status == 200, body[:500]
    assert content_type.startswith("text/html")
    html = body.decode()
    # Nothing from another site: no absolute URL at all, in attributes or inline script.
    assert "://" not in html, [line for line in html.splitlines() if "://" in line]
    parser = References()
    parser.feed(html)
    files = [url for url in parser.urls if url.startswith("/static/")]
    assert {Path(url).name for url in files} >= expected, parser.urls
    assert all(url.startswith("/") and not url.startswith("//") for url in parser.urls)
    for url in parser.urls:
        status, content_type, content = get(example_server, url)
        assert status == 200, url
        assert len(content) > 100, url
        if url.endswith(".js"):
            assert "javascript" in content_type, (url, content_type)
        elif url.endswith(".css"):
            assert content_type.startswith("text/css"), (url, content_type)


def test_the_schema_the_pages_read_is_served(example_server: int) -> None:
    status, _, body = get(example_server, "/api/schema/")
    assert status == 200
    assert b"openapi:" in body or b'"openapi"' in body


#: Run in the example (``manage.py shell``): alice, a running task of hers, her session.
SIGN_IN_WITH_A_RUNNING_TASK = """
import json, uuid
from django.contrib.auth import get_user_model
from django.test import Client
from django_taskqueue import lifecycle
from django_taskqueue.progress import ProgressWrite

user = get_user_model().objects.create_user("alice-pages", password="alice")
task = lifecycle.create_task_log(
    str(uuid.uuid4()), task_name="jobs.tasks.process_image", task_type="image",
    file_name="sunrise.png", owner=user,
)
lifecycle.mark_started(task.celery_task_id)
lifecycle.record_progress(ProgressWrite(40, "resized", None, True), pk=task.pk)
client = Client()
client.force_login(user)
print(json.dumps({"pk": str(task.pk), "session": client.cookies["sessionid"].value}))
"""


def test_the_home_page_follows_running_tasks_live(example_server: int, example_data: Path) -> None:
    made = subprocess.run(
        [sys.executable, str(MANAGE), "shell", "-c", SIGN_IN_WITH_A_RUNNING_TASK],
        cwd=ROOT,
        env=example_env(example_data),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(made.stdout.strip().splitlines()[-1])
    pk, cookie = found["pk"], f"sessionid={found['session']}"

    status, _, body = get(example_server, "/", Cookie=cookie)
    assert status == 200
    html = body.decode()
    assert f'data-tq-task="{pk}"' in html
    assert f'data-tq-stream-url="/api/tasks/{pk}/stream/"' in html
    assert f'data-tq-poll-url="/api/tasks/{pk}/"' in html
    assert 'role="progressbar"' in html
    assert 'aria-valuenow="40"' in html
    parser = References()
    parser.feed(html)
    assert "/static/django_taskqueue/progress.js" in parser.urls
    for url in parser.urls:
        status, _, content = get(example_server, url)
        assert status == 200, url
        assert content, url

    # The stream the widget opens answers the signed-in user with the task's state.
    conn = http.client.HTTPConnection("127.0.0.1", example_server, timeout=20)
    try:
        conn.request(
            "GET",
            f"/api/tasks/{pk}/stream/",
            headers={"Cookie": cookie, "Accept": "text/event-stream"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        while True:
            line = response.readline()
            assert line, "the stream ended before its first event"
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                break
        assert event["status"] == "processing"
        assert event["progress"] == 40
        assert event["progress_message"] == "resized"
    finally:
        conn.close()


#: Run in the example: a user who is not staff signs in on the site's page and starts a task.
SIGN_IN_AND_START = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from django_taskqueue.models import TaskLog

get_user_model().objects.create_user("bob-pages", password="bob")
client = Client()
login = client.post("/accounts/login/", {"username": "bob-pages", "password": "bob", "next": "/"})
home = client.get("/").content.decode()
start = client.post("/start/", {"kind": "image"})
task = TaskLog.objects.get(owner__username="bob-pages")
after = client.get("/").content.decode()
print(json.dumps({
    "login": [login.status_code, login["Location"]],
    "offers_start": "Resize a sample image" in home,
    "start": [start.status_code, start["Location"]],
    "task": [str(task.pk), task.task_name, task.status, task.file_name],
    "started_message": "Started: resize a sample image." in after,
    "widget": f'data-tq-task="{task.pk}"' in after,
}))
"""


def test_a_user_signs_in_on_the_site_and_starts_a_task_from_the_home_page(
    example_server: int, example_data: Path
) -> None:
    status, _, body = get(example_server, "/accounts/login/")
    assert status == 200
    assert b'name="username"' in body
    status, _, body = get(example_server, "/")
    assert b'href="/accounts/login/?next=/"' in body

    made = subprocess.run(
        [sys.executable, str(MANAGE), "shell", "-c", SIGN_IN_AND_START],
        cwd=ROOT,
        # A small sample video: the page makes the samples it needs on first use.
        env=example_env(example_data, EXAMPLE_VIDEO_MB="1"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found = json.loads(made.stdout.strip().splitlines()[-1])
    # The admin's login refuses users who are not staff; the site's own page does not.
    assert found["login"] == [302, "/"]
    assert found["offers_start"]
    assert found["start"] == [302, "/"]
    _, task_name, status_now, file_name = found["task"]
    assert task_name == "jobs.tasks.process_image"
    assert status_now == "pending"  # no worker here
    assert file_name == "sunrise.png"
    assert found["started_message"]
    assert found["widget"]
