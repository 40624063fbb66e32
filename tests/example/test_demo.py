"""The README's demo command: it comes up, its tasks complete, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.example.support import (
    MANAGE,
    ROOT,
    Proc,
    descendants,
    example_env,
    in_sessions,
    linux_only,
    needs_example_deps,
    still_running,
)

pytestmark = [needs_example_deps, linux_only]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Output:
    """Collects a process's output in a thread, so its pipe never fills up."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(10)
        self._stream.close()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode("utf-8", "replace")


def api(url: str, user: str, data: dict[str, Any] | None = None) -> Any:
    """Call the example's API as ``user`` (HTTP Basic auth; the password is the username)."""
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data else None)
    token = base64.b64encode(f"{user}:{user}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_demo_runs_its_tasks_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    # The README's command, on a fresh data folder instead of example_project/var/.
    process = subprocess.Popen(
        [sys.executable, str(MANAGE.relative_to(ROOT)), "demo", "--port", str(port)],
        cwd=ROOT,
        env=example_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process)
    seen: set[Proc] = set()
    try:
        deadline = time.monotonic() + 240
        while "demo tasks " not in output.text:
            seen.update(descendants(process.pid))
            assert process.poll() is None, f"the demo exited early:\n{output.text}"
            assert time.monotonic() < deadline, f"the demo tasks did not finish:\n{output.text}"
            time.sleep(0.2)
        seen.update(descendants(process.pid))

        finished = re.search(r"demo tasks finished in [\d.]+s: (?P<counts>.*)", output.text)
        assert finished, output.text
        counts = {status: int(n) for n, status in re.findall(r"(\d+) (\w+)", finished["counts"])}
        assert set(counts) == {"completed"}, output.text
        assert counts["completed"] >= 14
        assert "admin / admin" in output.text
        assert f"http://127.0.0.1:{port}/admin/" in output.text

        # The web server answers while the demo runs, the admin and (when mounted) the API docs.
        status, body = get(f"http://127.0.0.1:{port}/admin/login/")
        assert status == 200
        assert "csrfmiddlewaretoken" in body
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        # The admin's overview exists (anonymous: redirected to the login page).
        status, body = get(f"http://127.0.0.1:{port}/admin/django_taskqueue/tasklog/overview/")
        assert status == 200
        assert "csrfmiddlewaretoken" in body
        if "API:" in output.text:
            status, schema = get(f"http://127.0.0.1:{port}/api/schema/")
            assert status == 200
            assert "/api/tasks/" in schema
            assert get(f"http://127.0.0.1:{port}/api/docs/")[0] == 200
            assert get(f"http://127.0.0.1:{port}/api/redoc/")[0] == 200
            # Start a task over the API, as alice, and follow it to the end.
            created = api(
                f"http://127.0.0.1:{port}/api/tasks/create_task/",
                "alice",
                {
                    "file_path": str(tmp_path / "media" / "samples" / "sales.csv"),
                    "task_type": "report",
                    "metadata": {"format": "xlsx"},
                },
            )
            assert created["status"] == "pending"
            status_url = f"http://127.0.0.1:{port}/api/tasks/status/{created['celery_task_id']}/"
            until = time.monotonic() + 60
            while (state := api(status_url, "alice"))["status"] != "completed":
                assert state["status"] in {"pending", "processing"}, state
                assert time.monotonic() < until, state
                time.sleep(0.3)
            assert state["result"]["format"] == "xlsx"
            assert state["result"]["download_url"].startswith("/reports/")

        # Worker (with its pool), beat and web server: each the leader of its own session.
        leaders = {p for p in seen if p.ppid == process.pid}
        assert len(leaders) >= 3, seen
        assert len(seen) >= 5, seen
        sessions = {p.sid for p in leaders}
        assert all(p.pid == p.sid for p in leaders)

        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, output.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        output.join()

    assert "All child processes have exited." in output.text
    assert still_running(seen) == []
    assert in_sessions(sessions) == []
    # Everything the demo wrote went to the data folder it was given.
    assert (tmp_path / "db.sqlite3").is_file()
    assert (tmp_path / "media" / "samples" / "video.bin").stat().st_size == 50 << 20


def test_demo_stops_cleanly_on_sigterm_before_its_tasks_finish(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), "demo", "--no-web", "--no-beat"],
        cwd=ROOT,
        env=example_env(tmp_path, EXAMPLE_VIDEO_MB="4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process)
    seen: set[Proc] = set()
    try:
        deadline = time.monotonic() + 180
        # Stop it in the middle: once the tasks are submitted.
        while "Submitted" not in output.text:
            seen.update(descendants(process.pid))
            assert process.poll() is None, f"the demo exited early:\n{output.text}"
            assert time.monotonic() < deadline, output.text
            time.sleep(0.1)
        seen.update(descendants(process.pid))
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, output.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        output.join()
    assert "SIGTERM received: stopping" in output.text
    assert "All child processes have exited." in output.text
    assert seen
    assert still_running(seen) == []
