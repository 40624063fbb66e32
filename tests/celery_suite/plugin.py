"""A pytest plugin that runs Celery's own test suite with every task tracked.

Load it into a run of Celery's tests (from the directory of Celery's sdist)::

    python -m pytest -p tests.celery_suite.plugin --taskqueue=tracked t/unit/tasks/test_tasks.py

``--taskqueue=tracked`` makes :class:`~django_taskqueue.TrackedTask` the default task
class of every Celery app the suite creates: nothing else changes, no test body, no
assertion, no task. ``--taskqueue=plain`` sets up the same Django project with
Celery's own task class, the run to compare with. Either way Django is configured
(``tests.celery_suite.settings``) on a fresh PostgreSQL database.

At the end of a tracked run the plugin checks that tracking was active (rows were
written), and with ``--taskqueue-audit`` it compares every recorded task with what
Celery stored in the result backend at ``TEST_BACKEND`` (see :mod:`.audit`); a
disagreement fails the run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

TRACKED_TASK = "django_taskqueue.tracked:TrackedTask"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("django-taskqueue")
    group.addoption(
        "--taskqueue",
        choices=("tracked", "plain"),
        default="tracked",
        help="tracked: every app's default task class is TrackedTask; plain: Celery's own",
    )
    group.addoption(
        "--taskqueue-audit",
        action="store_true",
        help="compare every TaskLog row with Celery's result backend at the end",
    )
    group.addoption(
        "--taskqueue-report",
        default="",
        help="write the audit's findings to this JSON file",
    )


def _fresh_database() -> None:
    """Drop and create the suite's database, so a run starts with no rows."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=str(db["HOST"]),
        port=str(db["PORT"]),
        user=str(db["USER"]),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        name = db["NAME"]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _track_every_app() -> None:
    """Make TrackedTask the task class of every app that does not name its own."""
    from celery.app import base

    original = base.Celery.__init__
    if getattr(original, "_taskqueue", False):
        return

    def __init__(self: Any, *args: Any, task_cls: Any = None, **kwargs: Any) -> None:
        original(self, *args, task_cls=task_cls or TRACKED_TASK, **kwargs)  # type: ignore[misc]

    __init__._taskqueue = True  # type: ignore[attr-defined]
    base.Celery.__init__ = __init__  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.celery_suite.settings"
    import django

    django.setup()
    from django.core.management import call_command

    _fresh_database()
    call_command("migrate", verbosity=0)
    from django.db import connections

    # The session worker forks pool processes: none may inherit an open connection.
    connections.close_all()
    if config.getoption("--taskqueue") == "tracked":
        _track_every_app()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if config.getoption("--taskqueue") != "tracked":
        return
    from django.db import connections

    from django_taskqueue.models import TaskLog

    connections.close_all()
    rows = TaskLog.objects.count()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter is not None else print
    write(f"django-taskqueue: {rows} tasks recorded")
    if rows == 0 and session.testscollected:
        write("django-taskqueue: tracking was not active (no rows): failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if config.getoption("--taskqueue-audit"):
        from tests.celery_suite.audit import audit

        findings = audit(config.getoption("--taskqueue-report") or None)
        for line in findings.summary():
            write(f"django-taskqueue: {line}")
        if not findings.ok:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
