"""GIN trigram indexes under the case-insensitive search of TaskLog (PostgreSQL only).

Written by hand: the indexes are on another app's table and on expressions, so they
are not part of any model state and ``makemigrations`` never writes or changes them.

Each index is on exactly the expression Django writes for ``icontains`` and ``iexact``
on PostgreSQL, ``UPPER("column"::text)`` (``DatabaseOperations.lookup_cast``), so the
planner matches ``UPPER("file_name"::text) LIKE UPPER('%term%')`` (the API's ``search``,
the admin's search) and ``UPPER("celery_task_id"::text) = UPPER('term')`` (the admin's
``=celery_task_id``) to them with no change to those queries.

The migration is not atomic: the indexes are built with ``CREATE INDEX CONCURRENTLY``,
which cannot run in a transaction, so that adding the app to a project whose task table
is already large does not block the workers' writes to it while the indexes are built.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, router

# (index name, TaskLog field): the names follow the model's own "taskqueue_*_idx".
INDEXES = (
    ("taskqueue_file_name_trgm_idx", "file_name"),
    ("taskqueue_celery_id_trgm_idx", "celery_task_id"),
    ("taskqueue_task_name_trgm_idx", "task_name"),
)


def _task_log(apps: Any, schema_editor: Any) -> Any:
    """The historical TaskLog, or None where there is nothing to do."""
    model = apps.get_model("django_taskqueue", "TaskLog")
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return None
    # The indexes go wherever the table is, whatever a router says about this app.
    if not router.allow_migrate_model(connection.alias, model):
        return None
    return model


def create_indexes(apps: Any, schema_editor: Any) -> None:
    model = _task_log(apps, schema_editor)
    if model is None:
        return
    quote = schema_editor.quote_name
    # A no-op (and no privilege needed) where it exists. Trusted since PostgreSQL 13:
    # a role with CREATE on the database may create it.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    table = quote(model._meta.db_table)
    # Outside a transaction, as migrate runs this migration; inside one (a caller that
    # wraps migrate in atomic()), where CONCURRENTLY is refused, a plain build.
    concurrently = "" if schema_editor.connection.in_atomic_block else " CONCURRENTLY"
    for name, field_name in INDEXES:
        column = quote(model._meta.get_field(field_name).column)
        # An interrupted concurrent build leaves an INVALID index behind, which
        # IF NOT EXISTS would keep: drop it and build again.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                [quote(name)],
            )
            row = cursor.fetchone()
        if row is not None and row[0]:
            schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {quote(name)}")
        schema_editor.execute(
            f"CREATE INDEX{concurrently} IF NOT EXISTS {quote(name)} ON {table} "
            f"USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop_indexes(apps: Any, schema_editor: Any) -> None:
    # pg_trgm stays: it may have been there before, and other indexes may use it.
    if _task_log(apps, schema_editor) is None:
        return
    concurrently = "" if schema_editor.connection.in_atomic_block else " CONCURRENTLY"
    for name, _field_name in INDEXES:
        schema_editor.execute(
            f"DROP INDEX{concurrently} IF EXISTS {schema_editor.quote_name(name)}"
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("django_taskqueue", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
    ]
