"""Packaging facts: import without settings, migrations in step with the models."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def test_import_without_django_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", "import django_taskqueue; print(django_taskqueue.__version__)"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == __import__("django_taskqueue").__version__


def test_lazy_public_names() -> None:
    import django_taskqueue
    from django_taskqueue.tracked import TrackedTask

    assert django_taskqueue.TrackedTask is TrackedTask
    with pytest.raises(AttributeError):
        django_taskqueue.nothing_here  # noqa: B018


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    out = StringIO()
    call_command("makemigrations", "django_taskqueue", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "auto_field", ["django.db.models.BigAutoField", "django.db.models.AutoField"]
)
def test_no_migrations_under_another_default_auto_field(auto_field: str) -> None:
    with override_settings(DEFAULT_AUTO_FIELD=auto_field):
        out = StringIO()
        call_command("makemigrations", "django_taskqueue", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_migration_numbers_are_unique() -> None:
    names = [p.stem for p in (ROOT / "django_taskqueue" / "migrations").glob("[0-9]*.py")]
    numbers = [name.split("_", 1)[0] for name in names]
    assert names
    assert len(numbers) == len(set(numbers)), sorted(names)


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "django_taskqueue" / "py.typed").exists()


def test_project_urls_name_the_repository_and_the_docs() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with (ROOT / "pyproject.toml").open("rb") as f:
        urls = tomllib.load(f)["project"]["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues", "Source"}
    assert all(url.startswith("https://") for url in urls.values())
    # The README and the docs point at the same places.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert urls["Documentation"] in readme
    assert urls["Source"] in (ROOT / "docs" / "conf.py").read_text(encoding="utf-8")
