"""App configuration of the example's jobs app."""

from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The jobs app: tasks, the report download view and the demo commands."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the tasks in every process, the web server included: Celery's
        # autodiscovery runs only in workers, and the API starts tasks by name (TASK_TYPES),
        # which needs them registered where the request is served.
        from jobs import tasks  # noqa: F401
