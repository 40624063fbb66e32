"""Re-runs and sequential bulk runs on PostgreSQL, Redis and real workers (integration tier)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

import requests

from django_taskqueue.models import TaskLog
from tests import factories
from tests.api.conftest import client_for
from tests.helpers import SIDE_QUEUE, published, purge_queue
from tests.live import wait_for

pytestmark = pytest.mark.integration

LIST = "/api/tasks/"
CREATE = "/api/tasks/create_task/"


@pytest.fixture
def side_queue(celery_app: Any) -> Iterator[str]:
    yield SIDE_QUEUE
    purge_queue(celery_app)


@pytest.mark.parametrize("clients", [2, 8])
def test_concurrent_retries_of_one_task_start_one_rerun(
    live_server: Any,
    transactional_db: Any,
    file_root: Path,
    alice: Any,
    side_queue: str,
    clients: int,
) -> None:
    task = factories.task(
        "failed",
        owner=alice,
        args=[str(file_root / "a.txt")],
        queue=side_queue,
        **factories.FILE_TASK,
    )
    url = f"{live_server.url}{LIST}{task.pk}/retry/"
    start = threading.Barrier(clients)

    def post(_: int) -> requests.Response:
        with requests.Session() as session:
            session.auth = ("alice", "pw-alice")
            session.get(f"{live_server.url}{LIST}{task.pk}/", timeout=30)  # connect first
            start.wait()
            return session.post(url, json={}, timeout=30)

    with ThreadPoolExecutor(clients) as pool:
        responses = list(pool.map(post, range(clients)))
    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * (clients - 1), [r.text for r in responses]
    [rerun] = TaskLog.objects.filter(retry_of=task)
    for response in responses:
        if response.status_code == 409:
            assert f"still retrying ({rerun.pk})" in response.json()["detail"]


@pytest.mark.parametrize("terminate", [False, True], ids=["cooperative", "terminate"])
def test_force_stops_the_run_it_supersedes(
    live_worker: Any,
    file_root: Path,
    alice: Any,
    settings: Any,
    terminate: bool,
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_CANCEL_TERMINATE": terminate}
    hold = file_root / "hold"
    hold.write_text("while this exists")
    api = client_for(alice)
    # quiet: no progress reports, so no cancel point; only the revoke can stop it.
    metadata = {"hold_while": str(hold), "quiet": terminate}
    try:
        response = api.post(
            CREATE,
            {"file_path": str(file_root / "a.txt"), "task_type": "file", "metadata": metadata},
            format="json",
        )
        assert response.status_code == 201, response.content
        pk = response.json()["id"]
        wait_for(
            lambda: TaskLog.objects.get(pk=pk).status == "processing", what="the task to start"
        )
        response = api.post(f"{LIST}{pk}/retry/", {"force": True}, format="json")
        assert response.status_code == 200, response.content
        old = TaskLog.objects.get(pk=pk)
        expected = (
            "the worker terminated the task"
            if terminate
            else "the running task stopped at a cancel check"
        )
        wait_for(
            lambda: old.events.filter(event_type="revoked", message=expected).exists(),
            timeout=15,
            what=f"the worker to stop the superseded run ({expected})",
        )
        old.refresh_from_db()
        assert (old.status, old.error_code) == ("cancelled", "superseded")
    finally:
        hold.unlink(missing_ok=True)
    rerun_id = response.json()["id"]
    wait_for(
        lambda: TaskLog.objects.get(pk=rerun_id).status == "completed", what="the re-run to end"
    )
    old.refresh_from_db()
    assert old.status == "cancelled"
    assert not old.events.filter(event_type__in=["completed", "ignored"]).exists()


def test_a_sequential_run_of_300_files_completes_in_order(
    live_worker: Any, file_root: Path, alice: Any
) -> None:
    folder = file_root / "many"
    folder.mkdir()
    files = [folder / f"f{i:03d}.txt" for i in range(300)]
    for path in files:
        path.write_bytes(b"x")
    metadata = {"note": "x" * 8000}
    with published() as sent:
        response = client_for(alice).post(
            "/api/tasks/bulk_create/",
            {
                "file_paths": [str(p) for p in files],
                "task_type": "file",
                "parallel": False,
                "metadata": metadata,
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    # The request publishes the first file only, with one file's arguments.
    [first] = sent
    assert first.size < 20 * 1024, first.size
    parent_id = response.json()["id"]
    wait_for(
        lambda: TaskLog.objects.get(pk=parent_id).status != "processing",
        timeout=180,
        what="the run to end",
    )
    parent = TaskLog.objects.get(pk=parent_id)
    assert parent.result == {"total": 300, "completed": 300, "failed": 0, "cancelled": 0}
    runs = TaskLog.objects.filter(parent_id=parent_id).order_by("started_at")
    assert [run.file_path for run in runs] == [str(p) for p in files]
