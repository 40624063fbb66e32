"""Request fields take only the JSON type the schema states: no guessing from "yes" or 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue.models import TaskLog
from tests import factories

LIST = "/api/tasks/"


@pytest.mark.django_db
@pytest.mark.parametrize("parallel", [0, 1, "true", "false", "yes", "on"])
def test_bulk_create_parallel_must_be_a_json_boolean(
    api: Any, file_root: Path, parallel: Any
) -> None:
    body = {"file_paths": [str(file_root / "a.txt")], "task_type": "file", "parallel": parallel}
    response = api.post(f"{LIST}bulk_create/", body, format="json")
    assert response.status_code == 400, response.content
    assert "boolean" in str(response.json()["parallel"])
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("force", [0, 1, "true", "on"])
def test_retry_force_must_be_a_json_boolean(api: Any, alice: Any, force: Any) -> None:
    failed = factories.task("failed", owner=alice, **factories.FILE_TASK)
    response = api.post(f"{LIST}{failed.pk}/retry/", {"force": force}, format="json")
    assert response.status_code == 400, response.content
    assert "boolean" in str(response.json()["force"])
    assert not TaskLog.objects.filter(retry_of=failed).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("reason", [5, 1.5, True, ["why"], {"why": 1}])
def test_cancel_reason_must_be_a_json_string(api: Any, alice: Any, reason: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    response = api.post(f"{LIST}{task.pk}/cancel/", {"reason": reason}, format="json")
    assert response.status_code == 400, response.content
    assert "reason" in response.json()
    task.refresh_from_db()
    assert task.status == "pending"


@pytest.mark.django_db
def test_json_booleans_and_strings_are_taken(api: Any, alice: Any) -> None:
    task = factories.task(owner=alice, **factories.FILE_TASK)
    response = api.post(f"{LIST}{task.pk}/cancel/", {"reason": "not needed"}, format="json")
    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert (task.status, task.error_message) == ("cancelled", "not needed")


def test_the_schema_states_the_types(file_root: Path) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    components = schema["components"]["schemas"]
    assert components["BulkCreate"]["properties"]["parallel"]["type"] == "boolean"
    assert components["Retry"]["properties"]["force"]["type"] == "boolean"
    # A reason is a string without NUL, or blank: two string branches.
    reason = components["Cancel"]["properties"]["reason"]["oneOf"]
    assert {branch["type"] for branch in reason} == {"string"}
    assert reason[0]["maxLength"] == 1000
