"""django_taskqueue.contrib.postgres on any database: the migration, the check, the docs."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder

from django_taskqueue.contrib.postgres.checks import check_database
from django_taskqueue.models import TaskLog

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "django_taskqueue_postgres"
INDEX_NAMES = {
    "taskqueue_file_name_trgm_idx",
    "taskqueue_celery_id_trgm_idx",
    "taskqueue_task_name_trgm_idx",
}


def _index_names() -> set[str]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TaskLog._meta.db_table)
    return set(constraints)


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    out = StringIO()
    call_command("makemigrations", APP, "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_migrations_are_shipped_with_the_package() -> None:
    migrations = ROOT / "django_taskqueue" / "contrib" / "postgres" / "migrations"
    assert (migrations / "__init__.py").exists()
    assert sorted(p.name for p in migrations.glob("[0-9]*.py")) == ["0001_trigram_search.py"]


@pytest.mark.skipif(
    connections["default"].vendor == "postgresql", reason="the no-op is off PostgreSQL"
)
@pytest.mark.django_db(transaction=True)
def test_migrates_as_a_no_op_off_postgresql() -> None:
    applied = MigrationRecorder(connection).applied_migrations()
    assert (APP, "0001_trigram_search") in applied
    before = _index_names()
    assert not before & INDEX_NAMES
    try:
        call_command("migrate", APP, "zero", verbosity=0)
        assert (APP, "0001_trigram_search") not in MigrationRecorder(
            connection
        ).applied_migrations()
        assert _index_names() == before
    finally:
        call_command("migrate", APP, verbosity=0)
    assert (APP, "0001_trigram_search") in MigrationRecorder(connection).applied_migrations()
    assert _index_names() == before


def test_check_is_quiet_on_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections["default"], "vendor", "postgresql")
    assert check_database() == []


def test_check_warns_on_another_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections["default"], "vendor", "mysql")
    messages = check_database()
    assert [m.id for m in messages] == ["django_taskqueue.W007"]
    assert "mysql database 'default'" in messages[0].msg


def test_check_is_registered_and_silenced_in_the_sqlite_test_settings() -> None:
    from django.core import checks

    found = [m for m in checks.run_checks() if m.id == "django_taskqueue.W007"]
    if connections["default"].vendor == "postgresql":
        assert found == []
    else:  # tests/settings.py silences it: manage.py check does not report it
        assert len(found) == 1
        assert found[0].is_silenced()
