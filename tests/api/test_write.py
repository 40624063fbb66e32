"""Starting and acting on tasks over the API: create, bulk create, cancel, retry, throttling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue.models import TaskLog
from tests import factories
from tests.api.conftest import client_for
from tests.live import wait_for

LIST = "/api/tasks/"
CREATE = "/api/tasks/create_task/"
BULK = "/api/tasks/bulk_create/"


def status_of(pk: Any) -> str:
    return str(TaskLog.objects.values_list("status", flat=True).get(pk=pk))


# --- create_task: every 400 -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"task_type": "file"}, "file_path", "required"),
        ({"file_path": "{root}/a.txt"}, "task_type", "required"),
        ({"file_path": "{root}/a.txt", "task_type": "video"}, "task_type", "not a task type"),
        ({"file_path": "{root}/a.txt", "task_type": "untracked"}, "task_type", "TrackedTask"),
        ({"file_path": "{root}/a.txt", "task_type": "ghost"}, "task_type", "TrackedTask"),
        ({"file_path": "{root}/a.txt", "task_type": 5}, "task_type", "string"),
        ({"file_path": "a.txt", "task_type": "file"}, "file_path", "not an absolute path"),
        ({"file_path": "{root}/nope.txt", "task_type": "file"}, "file_path", "does not exist"),
        ({"file_path": "{root}", "task_type": "file"}, "file_path", "not a regular file"),
        ({"file_path": "/etc/hostname", "task_type": "file"}, "file_path", "outside"),
        ({"file_path": "{root}/../x", "task_type": "file"}, "file_path", "outside"),
        ({"file_path": "{root}/a\x00", "task_type": "file"}, "file_path", "NUL"),
        ({"file_path": ["x"], "task_type": "file"}, "file_path", "Not a valid string"),
        ({"file_path": "{root}/a.txt", "task_type": "file", "metadata": [1]}, "metadata", "object"),
        (
            {"file_path": "{root}/a.txt", "task_type": "file", "metadata": "x"},
            "metadata",
            "object",
        ),
        (
            {"file_path": "{root}/a.txt", "task_type": "file", "metadata": {"x": "y" * 9000}},
            "metadata",
            "limit",
        ),
    ],
)
def test_create_task_refuses_bad_input_with_a_message(
    api: Any, file_root: Path, body: dict[str, Any], field: str, message: str
) -> None:
    body = {
        k: v.replace("{root}", str(file_root)) if isinstance(v, str) else v for k, v in body.items()
    }
    response = api.post(CREATE, body, format="json")
    assert response.status_code == 400, response.content
    assert message in str(response.json()[field])
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_create_task_refuses_a_symlink_that_leaves_the_roots(
    api: Any, file_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (file_root / "link.txt").symlink_to(outside)
    response = api.post(
        CREATE, {"file_path": str(file_root / "link.txt"), "task_type": "file"}, format="json"
    )
    assert response.status_code == 400
    assert "outside" in response.json()["file_path"][0]


@pytest.mark.django_db
def test_create_task_refuses_an_overlong_path_before_resolving_it(
    api: Any, file_root: Path
) -> None:
    # 2 MB of "a/" used to be resolved first: minutes of CPU, and a 2 MB answer.
    path = f"{file_root}/" + "a/" * 1_000_000
    began = time.monotonic()
    response = api.post(CREATE, {"file_path": path, "task_type": "file"}, format="json")
    assert time.monotonic() - began < 5
    assert response.status_code == 400
    assert "the limit is 1024" in response.json()["file_path"][0]
    assert len(response.content) < 500
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_create_task_refuses_a_file_name_that_is_not_utf8(api: Any, file_root: Path) -> None:
    Path(os.fsdecode(os.fsencode(str(file_root)) + b"/caf\xe9.txt")).write_text("x")
    (name,) = [n for n in os.listdir(file_root) if n.startswith("caf")]  # "caf\udce9.txt"

    def post(url: str, body: dict[str, Any]) -> Any:
        # json.dumps escapes the lone surrogate ("\\udce9"), as a client sending os.listdir's
        # names would; the answer used to be a 500 when it was rendered back.
        return api.post(url, json.dumps(body), content_type="application/json")

    for path in (str(file_root / name), f"{file_root}/\ud800.txt"):
        response = post(CREATE, {"file_path": path, "task_type": "file"})
        assert response.status_code == 400, response.content
        assert "not valid UTF-8" in response.json()["file_path"][0]
    response = post(BULK, {"file_paths": [str(file_root / name)], "task_type": "file"})
    assert response.status_code == 400, response.content
    assert "not valid UTF-8" in response.json()["file_paths"]["0"][0]
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_create_task_without_allowed_roots_refuses_every_path(
    api: Any, file_root: Path, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "ALLOWED_FILE_ROOTS": []}
    response = api.post(
        CREATE, {"file_path": str(file_root / "a.txt"), "task_type": "file"}, format="json"
    )
    assert response.status_code == 400
    assert "ALLOWED_FILE_ROOTS" in response.json()["file_path"][0]


@pytest.mark.django_db
def test_non_json_bodies_are_refused(api: Any, file_root: Path) -> None:
    response = api.post(CREATE, "file_path=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    response = api.post(CREATE, "{not json", content_type="application/json")
    assert response.status_code == 400


# --- create_task with a worker ------------------------------------------------------------


def test_create_task_runs_the_task_with_the_file_and_metadata(
    worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    target = file_root / "sub" / "photo.jpg"
    target.parent.mkdir()
    target.write_bytes(b"p" * 2048)
    (file_root / "alias.jpg").symlink_to(target)  # a symlink inside the roots is fine
    response = api.post(
        CREATE,
        {
            "file_path": str(file_root / "alias.jpg"),
            "task_type": "file",
            "metadata": {"quality": "high", "resize": [1920, 1080]},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["task_type"] == "file"
    assert (body["file_name"], body["file_size"], body["progress"]) == ("photo.jpg", 2048, 0)
    assert {"id", "celery_task_id", "created_at"} <= set(body)
    wait_for(lambda: status_of(body["id"]) == "completed", what="the task to complete")
    log = TaskLog.objects.get(pk=body["id"])
    assert log.owner == alice
    assert log.file_path == str(target)
    assert log.args == [str(target)]
    assert log.kwargs == {"quality": "high", "resize": [1920, 1080]}
    assert log.metadata == log.kwargs
    assert log.result == {
        "file_path": str(target),
        "size": 2048,
        "options": {"quality": "high", "resize": [1920, 1080]},
    }


def test_a_file_swapped_for_a_symlink_after_create_task_is_not_read(
    worker: Any, file_root: Path, alice: Any, tmp_path: Path, settings: Any
) -> None:
    """The task opens its file with open_allowed_file, which checks the roots again."""
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "TASK_TYPES": {"read": "tests.read_file"},
    }
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    document = file_root / "a.txt"
    go = tmp_path / "go"
    response = client_for(alice).post(
        CREATE,
        {"file_path": str(document), "task_type": "read", "metadata": {"start_when": str(go)}},
        format="json",
    )
    assert response.status_code == 201, response.content
    # Between the request (which checked the path) and the run, the file becomes a symlink out.
    document.unlink()
    document.symlink_to(secret)
    go.touch()
    pk = response.json()["id"]
    wait_for(lambda: status_of(pk) in {"completed", "failed"}, what="the task to end")
    log = TaskLog.objects.get(pk=pk)
    assert (log.status, log.error_code) == ("failed", "FileNotAllowed"), log.result
    assert "outside the allowed directories" in log.error_message
    assert "SECRET" not in str(log.result)


@pytest.mark.django_db(transaction=True)
def test_create_task_answers_503_and_fails_the_row_when_the_broker_is_down(
    api: Any, file_root: Path, dead_broker: Any
) -> None:
    started = time.monotonic()
    response = api.post(
        CREATE, {"file_path": str(file_root / "a.txt"), "task_type": "file"}, format="json"
    )
    assert time.monotonic() - started < 15
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "broker_unavailable"
    assert "broker" in body["detail"]
    log = TaskLog.objects.get(pk=body["id"])
    assert (log.status, log.error_code) == ("failed", "publish_failed")
    assert not TaskLog.objects.filter(status="pending").exists()


# --- bulk_create ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"file_paths": [], "task_type": "file"}, "file_paths", "empty"),
        ({"file_paths": "{root}/a.txt", "task_type": "file"}, "file_paths", "list"),
        ({"file_paths": ["{root}/a.txt"], "task_type": "nope"}, "task_type", "not a task type"),
        (
            {"file_paths": ["{root}/a.txt"], "task_type": "file", "parallel": "x"},
            "parallel",
            "boolean",
        ),
        (
            {"file_paths": ["{root}/a.txt"], "task_type": "file", "metadata": 1},
            "metadata",
            "object",
        ),
    ],
)
def test_bulk_create_refuses_bad_input(
    api: Any, file_root: Path, body: dict[str, Any], field: str, message: str
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{root}", str(file_root))
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    response = api.post(BULK, {k: fill(v) for k, v in body.items()}, format="json")
    assert response.status_code == 400, response.content
    assert message in str(response.json()[field])
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_bulk_create_checks_every_path_before_starting_anything(api: Any, file_root: Path) -> None:
    paths = [str(file_root / "a.txt"), "/etc/passwd", str(file_root / "b.txt"), "/nope"]
    response = api.post(BULK, {"file_paths": paths, "task_type": "file"}, format="json")
    assert response.status_code == 400
    errors = response.json()["file_paths"]
    assert set(errors) == {"1", "3"}
    assert "outside" in errors["1"][0]
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_bulk_create_has_a_limit(api: Any, file_root: Path, settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_BULK_MAX_FILES": 2}
    paths = [str(file_root / name) for name in ("a.txt", "b.txt", "c.txt")]
    response = api.post(BULK, {"file_paths": paths, "task_type": "file"}, format="json")
    assert response.status_code == 400
    assert "limit is 2" in response.json()["file_paths"][0]


@pytest.mark.parametrize("parallel", [True, False])
def test_bulk_create_runs_every_file_and_the_parent_aggregates(
    worker: Any, file_root: Path, alice: Any, parallel: bool
) -> None:
    api = client_for(alice)
    paths = [str(file_root / name) for name in ("a.txt", "b.txt", "c.txt")]
    response = api.post(
        BULK,
        {"file_paths": paths, "task_type": "file", "parallel": parallel, "metadata": {"k": 1}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["files_count"], body["parallel"]) == ("processing", 3, parallel)
    parent = TaskLog.objects.get(pk=body["id"])
    assert parent.celery_task_id == body["celery_task_id"]
    wait_for(lambda: status_of(parent.pk) == "completed", what="the bulk task to complete")
    children = list(TaskLog.objects.filter(parent=parent).order_by("file_name"))
    assert [c.file_name for c in children] == ["a.txt", "b.txt", "c.txt"]
    assert {c.status for c in children} == {"completed"}
    assert [(c.result or {}).get("size") for c in children] == [10, 20, 30]
    assert {c.owner_id for c in children} == {alice.pk}
    assert all(c.kwargs == {"k": 1} for c in children)
    # Each child ran once, under the id its row was created with.
    assert all(c.events.filter(event_type="created").count() == 1 for c in children)
    assert not TaskLog.objects.exclude(pk=parent.pk).exclude(parent=parent).exists()
    parent.refresh_from_db()
    assert parent.progress == 100
    assert parent.result == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0}
    if not parallel:
        starts = [c.started_at for c in sorted(children, key=lambda c: c.args[0])]
        assert all(starts)
        assert starts == sorted(s for s in starts if s)


def test_a_failing_child_fails_the_bulk_and_breaks_the_chain(
    worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    paths = [str(file_root / name) for name in ("a.txt", "b.txt")]
    response = api.post(
        BULK,
        {
            "file_paths": paths,
            "task_type": "file",
            "parallel": False,
            "metadata": {"fail_unless": str(file_root / "missing")},
        },
        format="json",
    )
    assert response.status_code == 201
    parent_id = response.json()["id"]
    wait_for(lambda: status_of(parent_id) == "failed", what="the bulk task to fail")
    first, second = TaskLog.objects.filter(parent_id=parent_id).order_by("file_name")
    assert (first.status, first.error_code) == ("failed", "FileNotFoundError")
    assert (second.status, second.error_code) == ("cancelled", "chain_broken")


@pytest.mark.django_db(transaction=True)
def test_bulk_create_answers_503_and_fails_every_row_when_the_broker_is_down(
    api: Any, file_root: Path, dead_broker: Any
) -> None:
    paths = [str(file_root / name) for name in ("a.txt", "b.txt")]
    response = api.post(BULK, {"file_paths": paths, "task_type": "file"}, format="json")
    assert response.status_code == 503
    parent = TaskLog.objects.get(pk=response.json()["id"])
    assert (parent.status, parent.error_code) == ("failed", "publish_failed")
    assert set(TaskLog.objects.values_list("status", flat=True)) == {"failed"}


# --- cancel ------------------------------------------------------------------------------


def test_cancel_stops_a_running_task(worker: Any, file_root: Path, alice: Any) -> None:
    api = client_for(alice)
    response = api.post(
        CREATE,
        {"file_path": str(file_root / "a.txt"), "task_type": "file", "metadata": {"seconds": 20}},
        format="json",
    )
    pk = response.json()["id"]
    wait_for(lambda: TaskLog.objects.get(pk=pk).progress > 0, what="the task to report progress")
    response = api.post(f"{LIST}{pk}/cancel/", {"reason": "changed my mind"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"status": "cancelled", "cancelled_children": 0}
    log = TaskLog.objects.get(pk=pk)
    assert (log.status, log.error_message) == ("cancelled", "changed my mind")
    assert log.cancelled_at is not None
    # The worker notices at its next progress report and stops: no completion.
    wait_for(
        lambda: log.events.filter(message="the running task stopped at a cancel check").exists(),
        what="the worker to stop the task",
    )
    log.refresh_from_db()
    assert log.status == "cancelled"
    assert log.result is None
    assert not log.events.filter(event_type="completed").exists()


@pytest.mark.django_db
def test_cancelling_a_finished_task_is_a_409(
    api: Any, alice: Any, celery_app: Any, file_root: Path
) -> None:
    for status in ("completed", "failed", "cancelled"):
        task = factories.task(status, owner=alice, ran=True, **factories.FILE_TASK)
        response = api.post(f"{LIST}{task.pk}/cancel/", {}, format="json")
        assert response.status_code == 409
        assert response.json() == {
            "detail": f"the task is already {status} and cannot be cancelled",
            "status": status,
        }


@pytest.mark.django_db
def test_cancel_reason_is_checked(api: Any, alice: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    response = api.post(f"{LIST}{task.pk}/cancel/", {"reason": "x" * 1001}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    assert status_of(task.pk) == "pending"


def test_cancelling_a_bulk_task_cancels_its_children(
    worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    paths = [str(file_root / name) for name in ("a.txt", "b.txt", "c.txt")]
    response = api.post(
        BULK,
        {"file_paths": paths, "task_type": "file", "parallel": False, "metadata": {"seconds": 20}},
        format="json",
    )
    parent_id = response.json()["id"]
    wait_for(
        lambda: TaskLog.objects.filter(parent_id=parent_id, progress__gt=0).exists(),
        what="the first child to report progress",
    )
    response = api.post(f"{LIST}{parent_id}/cancel/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["cancelled_children"] == 3
    assert set(TaskLog.objects.filter(parent_id=parent_id).values_list("status", flat=True)) == {
        "cancelled"
    }


# --- retry -------------------------------------------------------------------------------


def test_retry_runs_a_failed_task_again_with_the_same_arguments(
    worker: Any, file_root: Path, alice: Any
) -> None:
    api = client_for(alice)
    marker = file_root / "ready"
    metadata = {"fail_unless": str(marker), "tag": "again"}
    response = api.post(
        CREATE,
        {"file_path": str(file_root / "b.txt"), "task_type": "file", "metadata": metadata},
        format="json",
    )
    first_id = response.json()["id"]
    wait_for(lambda: status_of(first_id) == "failed", what="the first run to fail")
    marker.write_text("now it works")
    response = api.post(f"{LIST}{first_id}/retry/", {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "retrying"
    assert body["retry_of"] == first_id
    assert body["retry_count"] == 1
    wait_for(lambda: status_of(body["id"]) == "completed", what="the rerun to complete")
    first, rerun = TaskLog.objects.get(pk=first_id), TaskLog.objects.get(pk=body["id"])
    assert first.status == "failed"  # the original keeps its end
    assert rerun.retry_of_id == first.pk
    assert (rerun.args, rerun.kwargs) == (first.args, first.kwargs)
    assert (rerun.result or {}).get("options") == metadata
    assert rerun.celery_task_id == body["celery_task_id"] != first.celery_task_id
    assert first.events.filter(event_type="rerun").exists()
    # The lineage is visible in the list too.
    rows = {r["id"]: r for r in api.get(LIST).json()["results"]}
    assert rows[body["id"]]["retry_of"] == first_id


@pytest.mark.django_db
def test_retry_refusals_are_409s(api: Any, alice: Any, celery_app: Any, file_root: Path) -> None:
    args = [str(file_root / "a.txt")]
    done = factories.task("completed", owner=alice, args=args, **factories.FILE_TASK)
    response = api.post(f"{LIST}{done.pk}/retry/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["status"] == "completed"
    assert "only failed or cancelled" in response.json()["detail"]
    running = factories.task(owner=alice, args=args, **factories.FILE_TASK)
    response = api.post(f"{LIST}{running.pk}/retry/", {"force": False}, format="json")
    assert response.status_code == 409
    assert "pass force" in response.json()["detail"]
    # "ghost" is a TASK_TYPES entry whose Celery task is not registered.
    unregistered = factories.task(
        "failed", owner=alice, task_name="tests.not_registered", args=args, task_type="file"
    )
    response = api.post(f"{LIST}{unregistered.pk}/retry/", {}, format="json")
    assert response.status_code == 409
    assert "not a registered TrackedTask" in response.json()["detail"]
    redacted = factories.task(
        "failed", owner=alice, args=args, kwargs={"password": "x"}, **factories.FILE_TASK
    )
    assert redacted.args_redacted
    response = api.post(f"{LIST}{redacted.pk}/retry/", {}, format="json")
    assert response.status_code == 409
    assert "redacted" in response.json()["detail"]
    response = api.post(f"{LIST}{done.pk}/retry/", {"force": "maybe"}, format="json")
    assert response.status_code == 400
    assert TaskLog.objects.filter(retry_of__isnull=False).count() == 0


@pytest.mark.django_db(transaction=True)
def test_retry_with_force_supersedes_a_stuck_task(
    api: Any, alice: Any, file_root: Path, celery_app: Any
) -> None:
    from django_taskqueue import lifecycle

    stuck = factories.task(owner=alice, args=[str(file_root / "a.txt")], **factories.FILE_TASK)
    lifecycle.mark_started(stuck.celery_task_id)
    response = api.post(f"{LIST}{stuck.pk}/retry/", {"force": True}, format="json")
    assert response.status_code == 200
    stuck.refresh_from_db()
    # Cancelled, so that a worker still running it stops at its next cancel check.
    assert (stuck.status, stuck.error_code) == ("cancelled", "superseded")
    assert TaskLog.objects.get(pk=response.json()["id"]).status == "retrying"


@pytest.mark.django_db(transaction=True)
def test_retry_answers_503_when_the_broker_is_down(
    api: Any, alice: Any, file_root: Path, dead_broker: Any
) -> None:
    failed = factories.task(
        "failed", owner=alice, args=[str(file_root / "a.txt")], **factories.FILE_TASK
    )
    response = api.post(f"{LIST}{failed.pk}/retry/", {}, format="json")
    assert response.status_code == 503
    rerun = TaskLog.objects.get(pk=response.json()["id"])
    assert (rerun.status, rerun.error_code, rerun.retry_of_id) == (
        "failed",
        "publish_failed",
        failed.pk,
    )


# --- throttling --------------------------------------------------------------------------


@pytest.mark.django_db
def test_write_scopes_are_throttled_when_the_host_sets_a_rate(
    api: Any, alice: Any, file_root: Path, settings: Any
) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskqueue_control": "2/minute"},
    }
    task = factories.task("completed", owner=alice, **factories.FILE_TASK)
    codes = [api.post(f"{LIST}{task.pk}/cancel/", {}, format="json").status_code for _ in range(3)]
    assert codes == [409, 409, 429]
    assert "throttled" in api.post(f"{LIST}{task.pk}/retry/", {}, format="json").json()["detail"]
    # Reads and the unthrottled create scope are not limited.
    assert api.get(LIST).status_code == 200
    bad = api.post(CREATE, {"file_path": "/x", "task_type": "file"}, format="json")
    assert bad.status_code == 400
    cache.clear()


def test_sample_file_paths_are_real(file_root: Path) -> None:
    assert os.path.getsize(file_root / "c.txt") == 30
