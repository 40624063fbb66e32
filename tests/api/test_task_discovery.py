"""The API starts and re-runs tasks whose module the web process has not imported.

With Celery's lazy autodiscovery (the layout of Celery's Django guide) only the
worker imports a host's ``tasks`` modules; these requests used to be 400s and 409s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rest_framework")

from django_taskqueue.models import TaskLog
from tests import factories
from tests.conftest import UnimportedTasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def lazy_types(file_root: Path, settings: Any, unimported_tasks: UnimportedTasks) -> dict[str, str]:
    """TASK_TYPES of the API tests plus two types of the package nothing imported yet."""
    types = {
        **settings.DJANGO_TASKQUEUE["TASK_TYPES"],
        "resize": unimported_tasks.resize,
        "thumbnail": unimported_tasks.thumbnail,
    }
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "TASK_TYPES": types}
    return types


def test_create_task_starts_a_task_from_the_module_its_name_names(
    api: Any, file_root: Path, lazy_types: dict[str, str], celery_app: Any
) -> None:
    body = {"file_path": str(file_root / "a.txt"), "task_type": "resize"}
    response = api.post("/api/tasks/create_task/", body, format="json")
    assert response.status_code == 201, response.content
    log = TaskLog.objects.get(pk=response.json()["id"])
    assert (log.task_name, log.task_type) == (lazy_types["resize"], "resize")


def test_bulk_create_starts_a_task_of_an_installed_app(
    api: Any,
    file_root: Path,
    lazy_types: dict[str, str],
    unimported_tasks: UnimportedTasks,
    settings: Any,
    celery_app: Any,
) -> None:
    # Its name does not lead to its module: Celery's autodiscovery finds it.
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, unimported_tasks.package]
    body = {
        "file_paths": [str(file_root / "a.txt"), str(file_root / "b.txt")],
        "task_type": "thumbnail",
        "parallel": False,
    }
    response = api.post("/api/tasks/bulk_create/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["files_count"] == 2


def test_retry_runs_again_a_task_whose_module_was_not_imported(
    api: Any, alice: Any, file_root: Path, lazy_types: dict[str, str], celery_app: Any
) -> None:
    failed = factories.task(
        "failed",
        owner=alice,
        task_name=lazy_types["resize"],
        args=[str(file_root / "a.txt")],
        task_type="file",
    )
    response = api.post(f"/api/tasks/{failed.pk}/retry/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["retry_of"] == str(failed.pk)


def test_a_task_type_no_module_defines_is_a_400_that_says_what_to_do(
    api: Any, file_root: Path, settings: Any, unimported_tasks: UnimportedTasks
) -> None:
    settings.DJANGO_TASKQUEUE = {
        **settings.DJANGO_TASKQUEUE,
        "TASK_TYPES": {"typo": f"{unimported_tasks.package}.tasks.resise"},
    }
    body = {"file_path": str(file_root / "a.txt"), "task_type": "typo"}
    response = api.post("/api/tasks/create_task/", body, format="json")
    assert response.status_code == 400
    (message,) = response.json()["task_type"]
    assert message.startswith("The task type 'typo' cannot be started: ")
    assert f"nor does '{unimported_tasks.package}.tasks'" in message
    assert not TaskLog.objects.exists()
