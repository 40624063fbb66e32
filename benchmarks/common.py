"""What the benchmark scripts share: their own PostgreSQL database, and Django on it."""

from __future__ import annotations

import os


def postgres_database(name: str, *, rebuild: bool = False) -> None:
    """Create the database ``name`` on the local server (dropping it first with ``rebuild``)."""
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if rebuild:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_on(name: str) -> None:
    """Set Django up with the test settings pointed at the database ``name``, migrated."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TASKQUEUE_TEST_DB="postgres",
        TASKQUEUE_WORKER_DB_NAME=name,  # tests.settings points NAME at it
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
