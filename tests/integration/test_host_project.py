"""A new host project, laid out as Celery's Django guide lays it out, over real HTTP.

The project is written to a temporary directory: ``proj/celery.py`` calls
``app.autodiscover_tasks()``, ``proj/__init__.py`` imports the app, the task lives
in ``shop/tasks.py`` and no ``AppConfig.ready()`` imports it. Celery's autodiscovery
is lazy: only a worker imports ``shop.tasks``, so the web process has to find the
task that ``TASK_TYPES`` names by itself. The project is migrated into a PostgreSQL
database of its own, served by gunicorn (which runs no system checks, so nothing
imports the task at startup) and worked by a real ``celery -A proj worker`` on
Redis; every process imports the same ``django_taskqueue`` as this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg import sql

import django_taskqueue
from tests.api.servers import web_server
from tests.live import BROKER_URL, wait_for, worker_process

pytestmark = pytest.mark.integration

#: The directory that holds the ``django_taskqueue`` this test imports.
SOURCE_ROOT = Path(django_taskqueue.__file__).resolve().parent.parent
#: The host project's database, next to the test database of this run.
DATABASE = os.environ.get("TASKQUEUE_TEST_DB_NAME", "test_django_taskqueue") + "_host"
TASK_TYPES = {"count": "shop.tasks.count_bytes"}

PROJECT = {
    "manage.py": """
        #!/usr/bin/env python
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
    """,
    "proj/__init__.py": """
        from .celery import app as celery_app

        __all__ = ("celery_app",)
    """,
    "proj/celery.py": """
        import os

        from celery import Celery

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

        app = Celery("proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.autodiscover_tasks()
    """,
    "proj/settings.py": """
        import json
        import os
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "host-project-test"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
        INSTALLED_APPS = [
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "rest_framework",
            "django_filters",
            "drf_spectacular",
            "django_taskqueue",
            "django_taskqueue.contrib.postgres",
            "shop",
        ]
        MIDDLEWARE = [
            "django.middleware.security.SecurityMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ]
        ROOT_URLCONF = "proj.urls"
        TEMPLATES = [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ]
        WSGI_APPLICATION = "proj.wsgi.application"
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ["HOST_DATABASE"],
                "USER": os.environ.get("PGUSER", "postgres"),
                "HOST": os.environ.get("PGHOST", "127.0.0.1"),
                "PORT": os.environ.get("PGPORT", "5432"),
                "OPTIONS": {"connect_timeout": 5, "options": "-c statement_timeout=30s"},
            }
        }
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
        USE_TZ = True
        STATIC_URL = "static/"
        MEDIA_ROOT = BASE_DIR / "media"

        REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
        DJANGO_TASKQUEUE = {
            "TASK_TYPES": json.loads(os.environ["HOST_TASK_TYPES"]),
            "ALLOWED_FILE_ROOTS": [str(MEDIA_ROOT)],
        }
        CELERY_BROKER_URL = os.environ["HOST_BROKER_URL"]
        CELERY_RESULT_BACKEND = os.environ["HOST_BROKER_URL"]
        CELERY_DB_REUSE_MAX = 200
    """,
    "proj/urls.py": """
        from django.urls import include, path

        urlpatterns = [path("api/", include("django_taskqueue.api.urls"))]
    """,
    "proj/wsgi.py": """
        import os

        from django.core.wsgi import get_wsgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
        application = get_wsgi_application()
    """,
    "shop/__init__.py": "",
    "shop/apps.py": """
        from django.apps import AppConfig


        class ShopConfig(AppConfig):
            name = "shop"
    """,
    "shop/tasks.py": """
        from celery import shared_task

        from django_taskqueue import TrackedTask


        @shared_task(base=TrackedTask, bind=True)
        def count_bytes(self, file_path, **options):
            self.update_progress(50, message="reading")
            with open(file_path, "rb") as file:
                return len(file.read())
    """,
}


def write_project(root: Path) -> Path:
    """The project's files under ``root/site``, and a file to work on in its media folder."""
    project = root / "site"
    for name, text in PROJECT.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (project / "media").mkdir()
    (project / "media" / "order.csv").write_bytes(b"x" * 1234)
    return project


def project_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DJANGO_SETTINGS_MODULE", "TASKQUEUE_TEST_DB", "CELERY_SKIP_CHECKS"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="proj.settings",
        # The same django_taskqueue as this test, not one installed in the environment.
        PYTHONPATH=str(SOURCE_ROOT),
        HOST_DATABASE=DATABASE,
        HOST_BROKER_URL=BROKER_URL,
        HOST_TASK_TYPES=json.dumps(TASK_TYPES),
    )
    env.update(extra)
    return env


def manage(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=project_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _admin_sql(statement: sql.Composed) -> None:
    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The host project, migrated into a fresh database, with the user ``alice``."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
    _admin_sql(drop)
    _admin_sql(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    try:
        project = write_project(tmp_path_factory.mktemp("host"))
        migrated = manage(project, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        created = manage(
            project,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_user('alice', password='pw-alice')",
        )
        assert created.returncode == 0, created.stdout + created.stderr
        yield project
    finally:
        _admin_sql(drop)


def test_create_task_over_http_finds_the_autodiscovered_task(project: Path, tmp_path: Path) -> None:
    env = project_env()
    with (
        worker_process(tmp_path, app_module="proj", cwd=project, env=env, concurrency=1),
        web_server("sync", tmp_path, env=env, cwd=project) as server,
    ):
        base = f"http://127.0.0.1:{server.port}/api/tasks/"
        auth = ("alice", "pw-alice")
        body = {"file_path": str(project / "media" / "order.csv"), "task_type": "count"}
        response = requests.post(f"{base}create_task/", json=body, auth=auth, timeout=30)
        assert response.status_code == 201, (response.status_code, response.text, server.log)
        task_id = response.json()["id"]

        def finished() -> Any:
            detail = requests.get(f"{base}{task_id}/", auth=auth, timeout=10).json()
            return detail if detail["status"] in ("completed", "failed", "cancelled") else None

        detail = wait_for(finished, timeout=60, interval=0.2, what="the task to end")
        assert (detail["status"], detail["progress"]) == ("completed", 100), detail
        assert detail["task_type"] == "count"


def test_check_passes_for_the_autodiscovered_task(project: Path) -> None:
    checked = manage(project, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_check_names_the_task_type_that_names_no_task(project: Path) -> None:
    checked = manage(
        project, "check", HOST_TASK_TYPES=json.dumps({**TASK_TYPES, "typo": "shop.tasks.cuont"})
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "django_taskqueue.E019" in checked.stderr
    assert "TASK_TYPES']['typo']" in checked.stderr
    assert "'count'" not in checked.stderr
