"""Bad input over the API is a 400 (or a JSON 404) with a message, never a 500.

Each test here reproduces an answer that was a 500, an HTML page, a wrong
status, or a request that left a row behind. The ones marked ``integration``
need PostgreSQL, where the defect lived (it refuses NUL characters in text and
lone surrogates in JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue.models import TaskLog
from tests import factories

CREATE = "/api/tasks/create_task/"
BULK = "/api/tasks/bulk_create/"


@pytest.fixture(autouse=True)
def _tasks(celery_app: Any) -> Iterator[None]:
    """The sample tasks registered; what a test publishes is purged afterwards (no worker runs)."""
    yield
    celery_app.control.purge()


def deep_json(levels: int) -> str:
    """A JSON object nested ``levels`` deep, as text (Python could not build it to encode)."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def post_raw(api: Any, url: str, body: str | bytes, content_type: str = "application/json") -> Any:
    return api.post(url, body, content_type=content_type)


def create_body(root: Path, metadata: str, task_type: str = "file") -> str:
    return f'{{"file_path": "{root}/a.txt", "task_type": "{task_type}", "metadata": {metadata}}}'


def bulk_body(root: Path, metadata: str, task_type: str = "file") -> str:
    return (
        f'{{"file_paths": ["{root}/a.txt", "{root}/b.txt"], "task_type": "{task_type}", '
        f'"metadata": {metadata}}}'
    )


# --- depth and size of the body -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("levels", [40, 300, 5000, 200_000])
@pytest.mark.parametrize("body", [create_body, bulk_body])
def test_deeply_nested_metadata_is_a_400_that_says_the_limit(
    api: Any, file_root: Path, levels: int, body: Any
) -> None:
    # 300 levels were accepted (and killed the worker, see
    # tests/integration/test_poison.py); a few thousand made DRF's parser raise
    # RecursionError, a 500.
    response = post_raw(
        api, CREATE if body is create_body else BULK, body(file_root, deep_json(levels))
    )
    assert response.status_code == 400, response.content[:300]
    detail = response.json()["detail"]
    assert f"{levels + 1} levels deep" in detail
    assert "the limit is 32 (API_JSON_MAX_DEPTH)" in detail
    assert not TaskLog.objects.exists()


@pytest.mark.django_db
def test_the_depth_limit_is_a_setting_and_counts_the_body(
    api: Any, file_root: Path, settings: Any
) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_JSON_MAX_DEPTH": 4}
    # The body is level 1, so metadata may nest 3 levels.
    ok = post_raw(api, CREATE, create_body(file_root, '{"x": {"y": {}}}'))
    assert ok.status_code == 201, ok.content
    too_deep = post_raw(api, CREATE, create_body(file_root, '{"x": {"y": {"z": []}}}'))
    assert too_deep.status_code == 400
    assert "the limit is 4 (API_JSON_MAX_DEPTH)" in too_deep.json()["detail"]
    # Brackets inside strings are text, not nesting.
    text = post_raw(api, CREATE, create_body(file_root, '{"x": "[[[[[[{{{{{{\\"]]]"}'))
    assert text.status_code == 201, text.content
    assert TaskLog.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"reason": "\xff"}', "application/json", "not utf-8 text"),
        ('{"reason": "x"', "application/json", "JSON parse error"),
        ('{"reason": NaN}', "application/json", "not JSON compliant"),
        ("[" * 40 + "]" * 39, "application/json", "API_JSON_MAX_DEPTH"),
        ('{"reason": "x"}', "application/json; charset=bz2_codec", "not bz2_codec text"),
        ('{"reason": "x"}', "application/json; charset=utf-16", "not utf-16 text"),
    ],
)
def test_every_parse_error_is_a_400_in_json(
    api: Any, alice: Any, body: Any, content_type: str, message: str
) -> None:
    log = factories.task(owner=alice, **factories.FILE_TASK)
    response = post_raw(api, f"/api/tasks/{log.pk}/cancel/", body, content_type)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert message in response.json()["detail"]
    log.refresh_from_db()
    assert log.status == "pending"


@pytest.mark.django_db
def test_a_body_over_django_s_upload_limit_is_a_400_in_json(
    api: Any, file_root: Path, settings: Any
) -> None:
    # Django raises RequestDataTooBig when DRF reads the body: its HTML 400 page.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post_raw(api, CREATE, create_body(file_root, f'{{"x": "{"y" * 20_000}"}}'))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "(10000 bytes, DATA_UPLOAD_MAX_MEMORY_SIZE)" in response.json()["detail"]
    assert not TaskLog.objects.exists()


# --- metadata the task cannot take ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("task_type", "metadata", "message"),
    [
        # The docs' own example, against a task without **options.
        ("sample", '{"quality": "high"}', "unexpected keyword argument 'quality'"),
        # The path is the first positional argument; "self" is the task.
        ("file", '{"file_path": "/etc/passwd"}', "multiple values for argument 'file_path'"),
        ("file", '{"self": 1}', "multiple values for argument 'self'"),
    ],
)
@pytest.mark.parametrize("body", [create_body, bulk_body])
def test_metadata_the_task_cannot_take_is_a_400_and_leaves_no_row(
    api: Any, file_root: Path, task_type: str, metadata: str, message: str, body: Any
) -> None:
    # It was a 500 after a row was written and left failed (publish_failed).
    response = post_raw(
        api, CREATE if body is create_body else BULK, body(file_root, metadata, task_type)
    )
    assert response.status_code == 400, response.content
    (error,) = response.json()["metadata"]
    assert message in error
    assert not TaskLog.objects.exists()


# --- characters no database stores --------------------------------------------------------


NUL_AND_SURROGATES = [
    ('{"q": "a\\u0000b"}', "metadata['q'] contains the character U+0000 (NUL)"),
    ('{"q\\u0000": 1}', "metadata key 'q\\x00' contains the character U+0000"),
    ('{"a": [1, {"b": "\\ud800"}]}', "metadata['a'][1]['b'] contains the character U+D800"),
    ('{"\\udc00": 1}', "U+DC00 (a lone surrogate)"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("metadata", "message"), NUL_AND_SURROGATES)
@pytest.mark.parametrize("body", [create_body, bulk_body])
def test_nul_and_lone_surrogates_in_metadata_are_a_400(
    api: Any, file_root: Path, metadata: str, message: str, body: Any
) -> None:
    response = post_raw(api, CREATE if body is create_body else BULK, body(file_root, metadata))
    assert response.status_code == 400, response.content
    assert message in response.json()["metadata"][0]
    assert not TaskLog.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize(("metadata", "message"), NUL_AND_SURROGATES)
def test_nul_and_lone_surrogates_in_metadata_on_postgresql(
    api: Any, file_root: Path, metadata: str, message: str
) -> None:
    # PostgreSQL refused them when the row was written: a DataError, a 500.
    response = post_raw(api, CREATE, create_body(file_root, metadata))
    assert response.status_code == 400, response.content
    assert not TaskLog.objects.exists()


# --- ids and pages ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("celery_task_id", ["%00", "a%00b", "x" * 256])
def test_a_celery_id_that_cannot_exist_is_a_400(api: Any, celery_task_id: str) -> None:
    response = api.get(f"/api/tasks/status/{celery_task_id}/")
    assert response.status_code == 400
    assert "at most 255 characters and no NUL" in response.json()["celery_task_id"][0]


@pytest.mark.integration
@pytest.mark.django_db
def test_a_nul_celery_id_on_postgresql(api: Any, alice: Any) -> None:
    # PostgreSQL refuses NUL in a text parameter: the lookup raised, a 500.
    response = api.get("/api/tasks/status/%00/")
    assert response.status_code == 400
    log = factories.task(owner=alice, **factories.FILE_TASK)
    assert api.get(f"/api/tasks/status/{log.celery_task_id}/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "not-a-uuid/",
        "%00/",
        "not-a-uuid/cancel/",
        "123/events/",
        "00000000-0000-0000-0000-000000000000/no-such-action/",
        "status/",
    ],
)
def test_paths_that_name_no_task_are_a_404_in_json(api: Any, path: str) -> None:
    # They fell through the router's UUID pattern to Django's HTML 404 page.
    response = api.get(f"/api/tasks/{path}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


@pytest.mark.django_db
def test_a_post_to_such_a_path_is_a_404_in_json_not_a_csrf_page(alice: Any) -> None:
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/tasks/not-a-uuid/cancel/", {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.django_db
@pytest.mark.parametrize("sub", ["events", "progress-history"])
def test_a_bad_page_of_a_sub_resource_is_a_400(api: Any, alice: Any, sub: str) -> None:
    log = factories.task(owner=alice, **factories.FILE_TASK)
    for page in ("x", "0"):
        response = api.get(f"/api/tasks/{log.pk}/{sub}/", {"page": page})
        assert response.status_code == 400, response.content
        assert "is not a page number" in response.json()["page"][0]


# --- bulk_create: the length first --------------------------------------------------------


@pytest.mark.django_db
def test_bulk_create_checks_the_list_length_before_any_path(
    api: Any, file_root: Path, settings: Any
) -> None:
    # DRF's ListField resolved every path on the disk first, then counted them.
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_BULK_MAX_FILES": 3}
    paths = [f"/nope/{i}" for i in range(4)]
    response = api.post(BULK, {"file_paths": paths, "task_type": "file"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "file_paths": ["4 files were given; the limit is 3 (API_BULK_MAX_FILES)."]
    }
    ok = api.post(BULK, {"file_paths": paths[:3], "task_type": "file"}, format="json")
    assert set(ok.json()["file_paths"]) == {"0", "1", "2"}  # within the limit: each is checked


def test_the_schema_states_the_rules(settings: Any) -> None:
    from drf_spectacular.generators import SchemaGenerator

    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "API_BULK_MAX_FILES": 7}
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    paths, components = schema["paths"], schema["components"]["schemas"]
    status = paths["/api/tasks/status/{celery_task_id}/"]["get"]
    (parameter,) = status["parameters"]
    assert parameter["schema"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[^/\\u0000]+$",
    }
    assert "400" in status["responses"]
    file_paths = components["BulkCreate"]["properties"]["file_paths"]
    assert (file_paths["minItems"], file_paths["maxItems"]) == (1, 7)
    reason = components["Cancel"]["properties"]["reason"]["oneOf"][0]
    assert (reason["maxLength"], reason["pattern"]) == (1000, "^[^\\u0000]+$")
    listing = paths["/api/tasks/"]["get"]
    page = next(p for p in listing["parameters"] if p["name"] == "page")
    assert page["schema"] == {"type": "integer", "minimum": 1}
    assert "400" in listing["responses"]
    for sub in ("events", "progress-history"):
        assert "400" in paths[f"/api/tasks/{{id}}/{sub}/"]["get"]["responses"]
