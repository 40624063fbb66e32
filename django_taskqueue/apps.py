"""App configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TaskQueueConfig(AppConfig):
    """Wires the system checks and the Celery signal receivers."""

    name = "django_taskqueue"
    label = "django_taskqueue"
    verbose_name = _("Task queue")
    # Pinned so a project's DEFAULT_AUTO_FIELD (or Django's default changing)
    # never produces a migration for this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Local imports: both modules import models and Celery.
        from django_taskqueue import checks, receivers

        checks.register()
        receivers.connect()
