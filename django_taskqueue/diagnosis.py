"""What to do about a recording failure that a setup mistake causes.

Most recording failures are passing (the database restarts) and
:class:`~django_taskqueue.failurelog.FailureLog` reports them as an outage. One
is a mistake that lasts until someone acts: the package is installed (or
upgraded) but ``manage.py migrate`` was not run, so its tables (or some of their
columns) do not exist and the writes fail. :func:`explain` recognises it and
says what to do, so that the log holds one line per process that names the fix
rather than tracebacks.
"""

from __future__ import annotations

import threading
import time

from django.db import OperationalError, ProgrammingError, connections, router

#: Seconds a look at the database's tables is trusted: the tables may be created
#: (``migrate`` run) while a worker runs.
RECHECK_AFTER = 60.0

_lock = threading.Lock()
# (when, database alias, the advice: None if the schema is complete) of the latest look.
_looked: tuple[float, str, str | None] | None = None


def forget() -> None:
    """Drop the latest look at the tables (the next error that names one looks again)."""
    global _looked  # noqa: PLW0603
    _looked = None


def package_tables() -> list[str]:
    """The database tables of the package's models."""
    from django.apps import apps

    config = apps.get_app_config("django_taskqueue")
    return [model._meta.db_table for model in config.get_models(include_auto_created=True)]


def missing_tables(alias: str) -> tuple[str, ...]:
    """The package's tables that database ``alias`` does not have (one query)."""
    present = set(connections[alias].introspection.table_names())
    return tuple(table for table in package_tables() if table not in present)


def unapplied_migrations(alias: str) -> list[str]:
    """The package's migrations that database ``alias`` has not applied (reads every app's)."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    return sorted(
        name
        for app, name in loader.graph.nodes
        if app == "django_taskqueue" and (app, name) not in loader.applied_migrations
    )


def advice(alias: str) -> str | None:
    """What to do if database ``alias`` lacks the package's tables or migrations, else ``None``."""
    missing = missing_tables(alias)
    if missing:
        return (
            f"django_taskqueue: the database {alias!r} has no table {', '.join(missing)}: "
            "run `manage.py migrate` to create the package's tables. Tasks run, but are not "
            "recorded until then (said once per process)."
        )
    unapplied = unapplied_migrations(alias)
    if unapplied:
        return (
            f"django_taskqueue: the database {alias!r} lacks the package's migrations "
            f"{', '.join(unapplied)}: run `manage.py migrate`. Tasks run, but recording them "
            "fails until then (said once per process)."
        )
    return None


def explain(exc: BaseException) -> str | None:
    """The fix for ``exc`` if the package's tables or migrations are missing, else ``None``.

    Only a database error whose message names one of the package's tables
    (SQLite's ``no such table: ...``, PostgreSQL's ``relation "..." does not
    exist``, MySQL's ``Table '...' doesn't exist``, or a missing column of one)
    is looked into, by asking the database which tables and migrations it has;
    the answer is trusted for :data:`RECHECK_AFTER` seconds. Never raises.
    """
    global _looked  # noqa: PLW0603 (one verdict per process, shared by its threads)
    if not isinstance(exc, (ProgrammingError, OperationalError)):
        return None
    try:
        text = str(exc).lower()
        tables = package_tables()
        if not any(table.lower() in text for table in tables):
            return None
        from django_taskqueue.models import TaskLog

        alias = router.db_for_write(TaskLog)
        now = time.monotonic()
        looked = _looked
        if looked is None or looked[1] != alias or now - looked[0] > RECHECK_AFTER:
            with _lock:
                looked = _looked = (now, alias, advice(alias))
    except Exception:
        return None  # the database cannot say (it is down, or the transaction is aborted)
    return looked[2]
