"""Finding a task by name in a process that has not imported its module (the web process).

A host laid out as Celery's Django guide says has its tasks imported by the
worker only (lazy autodiscovery); :mod:`django_taskqueue.registry` finds them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from django_taskqueue import actions, lifecycle, registry
from django_taskqueue.checks import check_task_types
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from tests import factories
from tests.conftest import UnimportedTasks


def task_types(settings: Any, **types: str) -> None:
    settings.DJANGO_TASKQUEUE = {**settings.DJANGO_TASKQUEUE, "TASK_TYPES": types}


def install(settings: Any, package: str) -> None:
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, package]


def test_a_registered_task_is_found_without_importing_anything(
    unimported_tasks: UnimportedTasks, celery_app: Any
) -> None:
    assert registry.tracked_task("tests.add") is celery_app.tasks["tests.add"]
    assert not registry._discovered.is_set()


def test_a_task_type_is_found_in_the_module_its_name_starts_with(
    unimported_tasks: UnimportedTasks, settings: Any
) -> None:
    task_types(settings, resize=unimported_tasks.resize)
    assert f"{unimported_tasks.package}.tasks" not in sys.modules
    assert registry.tracked_task(unimported_tasks.resize).name == unimported_tasks.resize


def test_the_tasks_of_installed_apps_are_discovered(
    unimported_tasks: UnimportedTasks, settings: Any
) -> None:
    # Its name does not lead to its module: only Celery's autodiscovery finds it.
    install(settings, unimported_tasks.package)
    assert registry.tracked_task(unimported_tasks.thumbnail).name == unimported_tasks.thumbnail


def test_a_stored_name_alone_imports_no_module(unimported_tasks: UnimportedTasks) -> None:
    with pytest.raises(ValidationError) as refused:
        registry.tracked_task(unimported_tasks.resize)
    assert refused.value.code == "not_registered"
    assert f"{unimported_tasks.package}.tasks" not in sys.modules
    assert registry._discovered.is_set()


def test_a_plain_celery_task_is_not_tracked(
    unimported_tasks: UnimportedTasks, settings: Any
) -> None:
    task_types(settings, plain=unimported_tasks.plain)
    with pytest.raises(ValidationError) as refused:
        registry.tracked_task(unimported_tasks.plain)
    assert refused.value.code == "not_tracked"
    assert "base=TrackedTask" in refused.value.messages[0]


def test_a_module_that_fails_to_import_is_named(
    unimported_tasks: UnimportedTasks, settings: Any, tmp_path: Path
) -> None:
    package = unimported_tasks.package
    (tmp_path / package / "broken.py").write_text("raise RuntimeError('no config here')\n")
    task_types(settings, broken=f"{package}.broken.job")
    with pytest.raises(ValidationError) as refused:
        registry.tracked_task(f"{package}.broken.job")
    assert refused.value.code == "not_registered"
    why = f"importing '{package}.broken' failed (RuntimeError: no config here)"
    assert why in refused.value.messages[0]


def test_discovery_goes_on_past_an_app_whose_tasks_fail_to_import(
    unimported_tasks: UnimportedTasks,
    settings: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = f"{unimported_tasks.package}_broken"
    (tmp_path / broken).mkdir()
    (tmp_path / broken / "__init__.py").write_text("")
    (tmp_path / broken / "tasks.py").write_text("import a_module_that_does_not_exist\n")
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, broken, unimported_tasks.package]
    with caplog.at_level(logging.WARNING, logger="django_taskqueue"):
        assert registry.tracked_task(unimported_tasks.thumbnail)
    assert f"Could not import the tasks of the app {broken}" in caplog.text


# --- the system check ---------------------------------------------------------------------


def test_check_passes_for_tasks_it_finds(unimported_tasks: UnimportedTasks, settings: Any) -> None:
    install(settings, unimported_tasks.package)
    task_types(settings, sample="tests.add", thumb=unimported_tasks.thumbnail)
    assert check_task_types() == []


def test_check_names_the_task_type_it_cannot_find(
    unimported_tasks: UnimportedTasks, settings: Any
) -> None:
    task_types(
        settings,
        sample="tests.add",
        typo="tests.ad",
        plain=unimported_tasks.plain,
    )
    errors = {error.id: error for error in check_task_types()}
    assert set(errors) == {"django_taskqueue.E019", "django_taskqueue.E020"}
    missing = errors["django_taskqueue.E019"].msg
    assert missing.startswith("DJANGO_TASKQUEUE['TASK_TYPES']['typo']: 'tests.ad' is not a ")
    assert "@shared_task(base=TrackedTask, bind=True)" in missing
    assert "['plain']" in errors["django_taskqueue.E020"].msg


def test_check_leaves_a_malformed_setting_to_E002(settings: Any) -> None:
    settings.DJANGO_TASKQUEUE = {"TASK_TYPES": ["image"]}
    assert check_task_types() == []
    settings.DJANGO_TASKQUEUE = {"TASK_TYPES": {"image": ""}}
    assert check_task_types() == []


# --- running again (the admin's path) ----------------------------------------------------


@pytest.mark.django_db
def test_rerun_finds_a_task_of_an_installed_app_not_imported_yet(
    unimported_tasks: UnimportedTasks, settings: Any, celery_app: Any
) -> None:
    install(settings, unimported_tasks.package)
    log = factories.task(task_name=unimported_tasks.thumbnail, args=["/srv/a.txt"])
    lifecycle.mark_failed(log.celery_task_id, error_message="boom")
    new = actions.rerun(TaskLog.objects.get(pk=log.pk))
    assert (new.task_name, new.status, new.retry_of_id) == (
        unimported_tasks.thumbnail,
        TaskStatus.RETRYING,
        log.pk,
    )


@pytest.mark.django_db
def test_rerun_refuses_a_task_no_module_defines(
    unimported_tasks: UnimportedTasks, celery_app: Any
) -> None:
    log = factories.task(task_name=unimported_tasks.resize)
    lifecycle.mark_failed(log.celery_task_id, error_message="boom")
    with pytest.raises(TransitionRefused, match="is not a registered TrackedTask"):
        actions.rerun(TaskLog.objects.get(pk=log.pk))
