"""The API's descriptions read as Markdown, not as the Sphinx markup of the docstrings."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from tests import factories
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

#: What must never reach an API reader: a Sphinx role, or a double-backquoted literal.
SPHINX = re.compile(r":[\w-]+:`|``")


def test_roles_and_literals_become_markdown_code() -> None:
    from django_taskqueue.api.docstrings import markdown_description

    text = (
        "Every query goes through :meth:`TaskLogQuerySet.for_user\n"
        "    <django_taskqueue.querysets.TaskLogQuerySet.for_user>`; see\n"
        ":class:`~django_taskqueue.models.TaskLog`, :py:func:`!celery.group`,\n"
        ":mod:`django_taskqueue.api.urls` and ``API_PERMISSION_CLASSES``."
    )
    assert markdown_description(text) == (
        "Every query goes through `TaskLogQuerySet.for_user`; see\n"
        "`TaskLog`, `celery.group`,\n"
        "`django_taskqueue.api.urls` and `API_PERMISSION_CLASSES`."
    )


def test_markdown_stays_as_it_is() -> None:
    from django_taskqueue.api.docstrings import markdown_description

    text = "A `code` span, a time 10:30, a URL https://example.com/a:b and **bold**."
    assert markdown_description(text) == text


@pytest.fixture
def staff_client(staff: Any) -> Any:
    return client_for(staff)


@pytest.fixture
def task_id(staff: Any) -> str:
    return str(factories.task(owner=staff, **factories.FILE_TASK).pk)


def test_the_browsable_api_shows_no_sphinx_markup(staff_client: Any, task_id: str) -> None:
    for url in ("/api/tasks/", f"/api/tasks/{task_id}/", f"/api/tasks/{task_id}/events/"):
        response = staff_client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        page = response.content.decode()
        # DRF's template: the description is the block after the page's <h1>.
        description = re.search(
            r'<div class="page-header">.*?</div>\s*<div class="pull-left">(.*?)</div>',
            page,
            re.DOTALL,
        )
        assert description, url
        text = html.unescape(description.group(1))
        assert text.strip(), url
        assert not SPHINX.search(text), (url, text)
        if url == "/api/tasks/":
            # The viewset's docstring names the per-user query with a :meth: role.
            assert "`TaskLogQuerySet.for_user`" in text, text


def test_options_descriptions_show_no_sphinx_markup(staff_client: Any, task_id: str) -> None:
    urls = (
        "/api/tasks/",
        "/api/tasks/create_task/",
        f"/api/tasks/{task_id}/",
        f"/api/tasks/{task_id}/cancel/",
        f"/api/tasks/{task_id}/retry/",
    )
    for url in urls:
        response = staff_client.options(url)
        assert response.status_code == 200, url
        description = response.json()["description"]
        assert description, url
        assert not SPHINX.search(description), (url, description)
    create = staff_client.options("/api/tasks/create_task/").json()["description"]
    assert "`task(file_path, **metadata)`" in create


def test_the_schema_descriptions_show_no_sphinx_markup(file_root: Path) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    described = [
        (path, method, operation["description"])
        for path, item in schema["paths"].items()
        if path.startswith("/api/tasks/")
        for method, operation in item.items()
        if operation.get("description")
    ]
    assert described
    wrong = [found for found in described if SPHINX.search(found[2])]
    assert not wrong, wrong
