"""The system check of the PostgreSQL search indexes (listed in ``docs/checks.md``)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Tags, Warning
from django.core.checks import register as register_check
from django.db import connections, router

from django_taskqueue.checks import TAG, docs_url


def check_database(**kwargs: Any) -> list[CheckMessage]:
    """Warn when the database that holds ``TaskLog`` is not PostgreSQL: no index is made."""
    from django_taskqueue.models import TaskLog

    alias = router.db_for_write(TaskLog)
    vendor = connections[alias].vendor  # the backend class's attribute: no connection opened
    if vendor == "postgresql":
        return []
    return [
        Warning(
            "django_taskqueue.contrib.postgres is installed, but the tasks are stored in "
            f"the {vendor} database {alias!r}: its trigram indexes are only created on "
            "PostgreSQL, so it does nothing here.",
            hint=(
                "Remove it from INSTALLED_APPS, or, where this is intended (a SQLite test "
                'run), add "django_taskqueue.W007" to SILENCED_SYSTEM_CHECKS. '
                f"See {docs_url('W007')}"
            ),
            id="django_taskqueue.W007",
        )
    ]


def register() -> None:
    """Register the check (from ``AppConfig.ready()``)."""
    register_check(Tags.compatibility, TAG)(check_database)
