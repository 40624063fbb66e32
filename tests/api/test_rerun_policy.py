"""What may be cancelled and run again over HTTP: the allow-lists, one active run, throttling."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue import actions, lifecycle
from django_taskqueue.models import TaskLog
from tests import factories
from tests.api.conftest import client_for
from tests.helpers import SIDE_QUEUE, purge_queue

LIST = "/api/tasks/"
CREATE = "/api/tasks/create_task/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _side_queue(celery_app: Any) -> Iterator[None]:
    # The tasks here are recorded on a queue no worker consumes; the re-runs go there too.
    yield
    purge_queue(celery_app)


def task_on_side_queue(owner: Any, status: str = "pending", **fields: Any) -> TaskLog:
    return factories.task(
        status, owner=owner, queue=SIDE_QUEUE, **{**factories.FILE_TASK, **fields}
    )


def retry(api: Any, task: TaskLog, **body: Any) -> Any:
    return api.post(f"{LIST}{task.pk}/retry/", body, format="json")


# --- only what the API could have started -------------------------------------------------


def test_a_task_the_host_started_is_not_run_again_over_http(
    api: Any, alice: Any, file_root: Path, celery_app: Any
) -> None:
    # The host starts a task of its own for alice (so she can follow it): not a TASK_TYPES task.
    pending = task_on_side_queue(
        alice, task_name="tests.echo", task_type="", args=["/etc/hostname"]
    )
    failed = task_on_side_queue(alice, "failed", task_name="tests.echo", args=["/etc/hostname"])
    superuser = factories.user("root", staff=True, is_superuser=True)
    for client in (api, client_for(superuser)):
        assert client.get(f"{LIST}{failed.pk}/").status_code == 200
        for task in (failed, pending):
            response = client.post(f"{LIST}{task.pk}/retry/", {"force": True}, format="json")
            assert response.status_code == 409, response.content
            body = response.json()
            assert "'tests.echo' is not one of the task types" in body["detail"]
            assert body["status"] == task.status
    assert TaskLog.objects.get(pk=pending.pk).status == "pending"
    assert not TaskLog.objects.filter(retry_of__isnull=False).exists()
    # Stopping starts nothing: the owner may cancel the host's task for her.
    response = api.post(f"{LIST}{pending.pk}/cancel/", {}, format="json")
    assert response.status_code == 200, response.content
    assert TaskLog.objects.get(pk=pending.pk).status == "cancelled"
    # Outside HTTP (the admin, the host's code) the host's own rules apply.
    assert actions.rerun(failed).retry_of_id == failed.pk


@pytest.mark.parametrize(
    "args", [[], [2, 3], ["{root}/a.txt", "{root}/b.txt"], [""], [{"path": "{root}/a.txt"}]]
)
def test_only_a_run_on_one_file_is_run_again_over_http(
    api: Any, alice: Any, file_root: Path, celery_app: Any, args: list[Any]
) -> None:
    # tests.add is the "sample" type, but the host called it with its own arguments.
    args = [a.replace("{root}", str(file_root)) if isinstance(a, str) else a for a in args]
    task = task_on_side_queue(alice, "failed", task_name="tests.add", task_type="sample", args=args)
    response = retry(api, task)
    assert response.status_code == 409, response.content
    assert "single file path" in response.json()["detail"]
    assert not TaskLog.objects.filter(retry_of=task).exists()


def test_a_bulk_run_of_a_task_type_can_be_cancelled(
    api: Any, alice: Any, file_root: Path, celery_app: Any
) -> None:
    parent, _ = lifecycle.create_bulk(
        "tests.process_file", [{"file_path": str(file_root / "a.txt")}], owner=alice
    )
    response = api.post(f"{LIST}{parent.pk}/cancel/", {}, format="json")
    assert response.status_code == 200, response.content
    other, _ = lifecycle.create_bulk("tests.echo", [{"file_path": "/x"}], owner=alice)
    assert api.post(f"{LIST}{other.pk}/cancel/", {}, format="json").status_code == 200


# --- the file is checked again -------------------------------------------------------------


def failed_file_task(owner: Any, path: Path) -> TaskLog:
    """A failed task as create_task records it: ``task(file_path)`` on a file in the roots."""
    return task_on_side_queue(
        owner, "failed", args=[str(path)], file_path=str(path), file_name=path.name
    )


def test_a_rerun_refuses_a_file_replaced_by_a_symlink_leaving_the_roots(
    api: Any, alice: Any, file_root: Path, tmp_path: Path, celery_app: Any
) -> None:
    task = failed_file_task(alice, file_root / "a.txt")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    os.remove(file_root / "a.txt")
    (file_root / "a.txt").symlink_to(secret)
    response = retry(api, task)
    assert response.status_code == 409, response.content
    assert response.json() == {
        "detail": f"{str(file_root / 'a.txt')!r} is outside the allowed directories.",
        "status": "failed",
    }
    assert not TaskLog.objects.filter(retry_of=task).exists()


@pytest.mark.parametrize("change", ["moved", "roots", "directory"])
def test_a_rerun_refuses_a_file_no_longer_allowed(
    api: Any, alice: Any, file_root: Path, tmp_path: Path, settings: Any, change: str
) -> None:
    task = failed_file_task(alice, file_root / "b.txt")
    if change == "moved":
        os.rename(file_root / "b.txt", tmp_path / "b.txt")
        expected = "does not exist"
    elif change == "roots":
        other = tmp_path / "other"
        other.mkdir()
        conf = settings.DJANGO_TASKQUEUE
        settings.DJANGO_TASKQUEUE = {**conf, "ALLOWED_FILE_ROOTS": [str(other)]}
        expected = "outside the allowed directories"
    else:
        os.remove(file_root / "b.txt")
        (file_root / "b.txt").mkdir()
        expected = "not a regular file"
    response = retry(api, task)
    assert response.status_code == 409, response.content
    assert expected in response.json()["detail"]
    assert not TaskLog.objects.filter(retry_of=task).exists()


@pytest.mark.django_db(transaction=True)
def test_a_rerun_runs_on_the_file_as_resolved_now(
    api: Any, alice: Any, file_root: Path, celery_app: Any
) -> None:
    real = file_root / "real"
    real.mkdir()
    (real / "d.txt").write_bytes(b"x" * 40)
    (file_root / "current").symlink_to(real, target_is_directory=True)
    task = failed_file_task(alice, file_root / "current" / "d.txt")
    response = retry(api, task)
    assert response.status_code == 200, response.content
    rerun = TaskLog.objects.get(pk=response.json()["id"])
    assert rerun.args == [str(real / "d.txt")]
    assert (rerun.file_path, rerun.file_name, rerun.file_size) == (str(real / "d.txt"), "d.txt", 40)


# --- one active run per lineage -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_task_has_one_active_rerun_at_a_time(
    api: Any, alice: Any, file_root: Path, celery_app: Any
) -> None:
    task = failed_file_task(alice, file_root / "a.txt")
    first = retry(api, task)
    assert first.status_code == 200, first.content
    rerun_id = first.json()["id"]
    for force in (False, True):
        response = retry(api, task, force=force)
        assert response.status_code == 409, response.content
        assert response.json() == {
            "detail": f"a run of this task is still retrying ({rerun_id}): wait for it to end, "
            "or retry that one with force if it is stuck",
            "status": "failed",
        }
    # The active run itself can be superseded, with force.
    rerun = TaskLog.objects.get(pk=rerun_id)
    assert retry(api, rerun).status_code == 409
    response = retry(api, rerun, force=True)
    assert response.status_code == 200, response.content
    rerun.refresh_from_db()
    assert (rerun.status, rerun.error_code) == ("cancelled", "superseded")
    assert TaskLog.objects.filter(status__in=["pending", "processing", "retrying"]).count() == 1


def test_a_rerun_counts_against_the_create_throttle(
    api: Any, alice: Any, file_root: Path, settings: Any
) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskqueue_create": "1/minute"},
    }
    done = task_on_side_queue(alice, "completed", args=[str(file_root / "a.txt")])
    # The create budget is spent (a refused request counts too)...
    assert api.post(CREATE, {"task_type": "file"}, format="json").status_code == 400
    # ... so a re-run, which starts a task, is throttled.
    response = retry(api, done)
    assert response.status_code == 429, response.content
    assert "throttled" in response.json()["detail"]
    # Cancelling starts nothing: only its own scope counts (a finished task is a 409).
    assert api.post(f"{LIST}{done.pk}/cancel/", {}, format="json").status_code == 409
    cache.clear()
