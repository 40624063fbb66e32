"""The OpenAPI schema: every endpoint, request, response and error, without warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import factories

pytest.importorskip("rest_framework")

OPERATIONS = {
    ("GET", "/api/tasks/"),
    ("POST", "/api/tasks/create_task/"),
    ("POST", "/api/tasks/bulk_create/"),
    ("GET", "/api/tasks/progress/"),
    ("GET", "/api/tasks/status/{celery_task_id}/"),
    ("GET", "/api/tasks/{id}/"),
    ("POST", "/api/tasks/{id}/cancel/"),
    ("POST", "/api/tasks/{id}/retry/"),
    ("GET", "/api/tasks/{id}/events/"),
    ("GET", "/api/tasks/{id}/progress-history/"),
    ("GET", "/api/tasks/{id}/stream/"),
}


@pytest.mark.django_db
def test_the_schema_describes_every_endpoint_without_warnings(file_root: Path) -> None:
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    assert not GENERATOR_STATS._warn_cache, GENERATOR_STATS._warn_cache
    assert not GENERATOR_STATS._error_cache, GENERATOR_STATS._error_cache
    found = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/api/tasks/")
        for method in item
    }
    assert found == OPERATIONS
    create = schema["paths"]["/api/tasks/create_task/"]["post"]
    assert set(create["responses"]) == {
        "200",
        "201",
        "400",
        "401",
        "403",
        "415",
        "422",
        "429",
        "503",
    }
    assert "file" in schema["components"]["schemas"]["TaskTypeEnum"]["enum"]
    cancel = schema["paths"]["/api/tasks/{id}/cancel/"]["post"]["responses"]
    assert cancel["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Conflict"
    }


@pytest.mark.django_db
def test_the_schema_and_docs_pages_are_served(client: Any) -> None:
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/redoc/").status_code == 200


@pytest.mark.django_db
def test_an_empty_query_value_is_documented_and_read_as_not_given(
    file_root: Path, api: Any, alice: Any
) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    query = {
        (path, parameter["name"]): parameter
        for path, item in schema["paths"].items()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query" and path.startswith("/api/tasks/")
    }
    assert ("/api/tasks/", "to_date") in query
    assert ("/api/tasks/{id}/events/", "page_size") in query
    assert [key for key, parameter in query.items() if not parameter.get("allowEmptyValue")] == []

    # What the schema says is what the API does: every list parameter left empty.
    done = factories.task("completed", owner=alice, **factories.FILE_TASK)
    factories.task(owner=alice, **factories.FILE_TASK)
    names = sorted(name for path, name in query if path == "/api/tasks/")
    empty = api.get("/api/tasks/?" + "&".join(f"{name}=" for name in names))
    assert empty.status_code == 200, empty.json()
    assert empty.json()["count"] == 2
    events = api.get(f"/api/tasks/{done.pk}/events/?page=&page_size=")
    assert events.status_code == 200, events.json()
    assert events.json()["count"] == api.get(f"/api/tasks/{done.pk}/events/").json()["count"]
