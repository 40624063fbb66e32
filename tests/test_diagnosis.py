"""Recording into a database without the package's tables: one line that says to migrate."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from django_taskqueue import diagnosis
from django_taskqueue.models import TaskLog
from django_taskqueue.tracked import record_safely

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_diagnosis() -> Iterator[None]:
    diagnosis.forget()
    yield
    diagnosis.forget()


@pytest.fixture
def without_tables() -> None:
    """The package's tables dropped for the test (inside its transaction, so they come back)."""
    # Referencing tables first; PostgreSQL and SQLite both roll DDL back.
    tables = sorted(diagnosis.package_tables(), key=lambda t: t == TaskLog._meta.db_table)
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DROP TABLE {connection.ops.quote_name(table)}")


def write(kind: str) -> None:
    # A savepoint of its own, so that on PostgreSQL the test's transaction survives the error.
    with transaction.atomic():
        if kind == "created":
            TaskLog.objects.create(celery_task_id="t1", task_name="tests.add")
        else:
            TaskLog.objects.filter(celery_task_id="t1").update(status=kind)


def records(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django_taskqueue"]


def test_missing_tables_are_one_line_that_says_migrate(without_tables: None, caplog: Any) -> None:
    """Before: one ERROR line with a traceback per kind of write, none saying what to do."""
    with caplog.at_level(logging.INFO, logger="django_taskqueue"):
        for _ in range(5):
            for kind in ("created", "processing", "progress", "completed"):
                assert record_safely(kind, "t1", write, kind) is None
    lines = records(caplog)
    assert [(r.levelname, r.exc_info) for r in lines] == [("ERROR", None)], lines
    message = lines[0].getMessage()
    assert "run `manage.py migrate`" in message
    assert TaskLog._meta.db_table in message
    assert "'default'" in message


def test_another_error_about_the_tables_is_not_taken_for_missing_ones(caplog: Any) -> None:
    """A query that names an existing table and fails is an ordinary recording failure."""

    def bad_query() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SELECT no_such_column FROM {TaskLog._meta.db_table}")

    with caplog.at_level(logging.INFO, logger="django_taskqueue"):
        record_safely("progress", "t1", bad_query)
    (line,) = records(caplog)
    assert "could not record progress" in line.getMessage()
    assert "migrate" not in line.getMessage()


def test_errors_that_name_no_table_are_not_looked_into() -> None:
    from django.db import OperationalError

    assert diagnosis.explain(OperationalError("connection refused")) is None
    assert diagnosis.explain(ValueError(TaskLog._meta.db_table)) is None


def test_unapplied_migrations_say_migrate(caplog: Any) -> None:
    """The package upgraded, ``migrate`` not run: a column of a new migration is missing."""
    assert diagnosis.unapplied_migrations("default") == []  # the test database is migrated
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MAX(name) FROM django_migrations WHERE app = %s", ["django_taskqueue"]
        )
        (latest,) = cursor.fetchone()
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = %s AND name = %s",
            ["django_taskqueue", latest],
        )

    def new_column() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {TaskLog._meta.db_table}.no_such_column FROM {TaskLog._meta.db_table}"
            )

    with caplog.at_level(logging.INFO, logger="django_taskqueue"):
        for _ in range(3):
            record_safely("progress", "t1", new_column)
    (line,) = records(caplog)
    assert f"lacks the package's migrations {latest}: run `manage.py migrate`" in line.getMessage()
