"""Idempotency keys: ``submit(idempotency_key=...)`` and the ``Idempotency-Key`` header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django.core.exceptions import ValidationError
from django.db import IntegrityError

from django_taskqueue import lifecycle
from django_taskqueue.exceptions import PublishError
from django_taskqueue.models import TaskLog
from tests.api.conftest import client_for
from tests.live import wait_for

CREATE = "/api/tasks/create_task/"


def post(api: Any, body: dict[str, Any], key: str | None) -> Any:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return api.post(CREATE, body, format="json", **headers)


def test_a_repeated_key_starts_the_task_once(worker: Any, file_root: Path, alice: Any) -> None:
    api = client_for(alice)
    body = {"file_path": str(file_root / "a.txt"), "task_type": "file"}
    first = post(api, body, "upload 42")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    again = post(api, body, "upload 42")
    assert again.status_code == 200, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["celery_task_id"] == first.json()["celery_task_id"]
    pk = first.json()["id"]
    wait_for(lambda: TaskLog.objects.get(pk=pk).status == "completed", what="the task")
    assert TaskLog.objects.filter(owner=alice).count() == 1
    assert TaskLog.objects.get(pk=pk).events.filter(event_type="started").count() == 1
    # Without a key, or with another one, each request starts a task.
    assert post(api, body, None).status_code == 201
    assert post(api, body, "upload 43").status_code == 201
    assert TaskLog.objects.filter(owner=alice).count() == 3


@pytest.mark.django_db(transaction=True)
def test_keys_belong_to_their_owner(file_root: Path, alice: Any, bob: Any) -> None:
    body = {"file_path": str(file_root / "a.txt"), "task_type": "file"}
    mine = post(client_for(alice), body, "k")
    theirs = post(client_for(bob), body, "k")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_a_key_reused_for_another_file_is_a_422(file_root: Path, alice: Any) -> None:
    api = client_for(alice)
    assert (
        post(api, {"file_path": str(file_root / "a.txt"), "task_type": "file"}, "k").status_code
        == 201
    )
    response = post(api, {"file_path": str(file_root / "b.txt"), "task_type": "file"}, "k")
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "idempotency_key_reused"
    assert "a.txt" in response.json()["detail"]
    # The refused request made no row. (Counted among alice's rows: with committed
    # transactions, a worker thread of an earlier test may still record a message of
    # its own here.)
    assert list(TaskLog.objects.filter(owner=alice).values_list("file_name", flat=True)) == [
        "a.txt"
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", " leading-space", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_a_400(api: Any, file_root: Path, key: str) -> None:
    response = post(api, {"file_path": str(file_root / "a.txt"), "task_type": "file"}, key)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_idempotency_key"
    assert not TaskLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_key_whose_publish_failed_is_free_again(
    file_root: Path, alice: Any, dead_broker: Any, celery_app: Any
) -> None:
    api = client_for(alice)
    body = {"file_path": str(file_root / "a.txt"), "task_type": "file"}
    response = post(api, body, "k")
    assert response.status_code == 503
    assert response.json()["code"] == "broker_unavailable"
    assert int(response["Retry-After"]) >= 1
    failed = TaskLog.objects.get(pk=response.json()["id"])
    assert (failed.status, failed.error_code, failed.idempotency_key) == (
        "failed",
        "publish_failed",
        None,
    )
    assert failed.events.get(event_type="failed").metadata["idempotency_key"] == "k"
    celery_app.set_current()  # the broker is back
    again = post(api, body, "k")
    assert again.status_code == 201, again.content
    assert TaskLog.objects.get(idempotency_key="k").pk != failed.pk


@pytest.mark.django_db(transaction=True)
def test_submit_with_a_key(celery_app: Any, alice: Any, bob: Any) -> None:
    from tests.tasks import add, echo

    first = add.submit(args=(1, 2), owner=alice, idempotency_key="nightly-2024-01-01")
    again = add.submit(args=(1, 2), owner=alice, idempotency_key="nightly-2024-01-01")
    assert again.pk == first.pk
    system = add.submit(args=(1, 2), idempotency_key="nightly-2024-01-01")
    assert system.pk != first.pk  # no owner: the system's own key space
    assert add.submit(args=(1, 2), idempotency_key="nightly-2024-01-01").pk == system.pk
    assert add.submit(args=(1, 2), owner=bob, idempotency_key="nightly-2024-01-01").pk not in {
        first.pk,
        system.pk,
    }
    with pytest.raises(ValidationError) as caught:
        echo.submit(owner=alice, idempotency_key="nightly-2024-01-01")
    assert caught.value.code == "idempotency_key_reused"
    assert TaskLog.objects.filter(task_name="tests.echo").count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_database_keeps_one_row_per_key_and_owner(alice: Any) -> None:
    # What settles two requests racing with one key: the second insert is
    # refused, and create_idempotent_task_log then returns the first row.
    first = lifecycle.create_task_log("first", owner=alice, idempotency_key="k", task_name="t")
    with pytest.raises(IntegrityError):
        lifecycle.create_task_log("second", owner=alice, idempotency_key="k", task_name="t")
    lifecycle.create_task_log("system-1", idempotency_key="k")
    with pytest.raises(IntegrityError):
        lifecycle.create_task_log("system-2", idempotency_key="k")
    # Rows without a key are not constrained.
    lifecycle.create_task_log("plain-1", owner=alice)
    lifecycle.create_task_log("plain-2", owner=alice)
    log, created = lifecycle.create_idempotent_task_log(
        "third", owner=alice, idempotency_key="k", task_name="t"
    )
    assert (log.pk, created) == (first.pk, False)
    assert TaskLog.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_submit_raises_publish_error_and_fails_the_row(dead_broker: Any) -> None:
    from tests.tasks import add

    with pytest.raises(PublishError) as caught:
        add.submit(args=(1, 2), idempotency_key="k")
    assert caught.value.sent is False
    assert caught.value.task_log is not None
    log = TaskLog.objects.get(pk=caught.value.task_log.pk)
    assert (log.status, log.error_code, log.idempotency_key) == ("failed", "publish_failed", None)
