"""App configuration of the PostgreSQL search indexes."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TaskQueuePostgresConfig(AppConfig):
    """Holds the trigram-index migration and its system check; it has no models."""

    name = "django_taskqueue.contrib.postgres"
    # Not "postgres": that is django.contrib.postgres' label.
    label = "django_taskqueue_postgres"
    verbose_name = _("Task queue: PostgreSQL search indexes")

    def ready(self) -> None:
        from django_taskqueue.contrib.postgres import checks

        checks.register()
