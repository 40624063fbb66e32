"""App configuration of the example's jobs app."""

from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The jobs app: tasks, the report download view and the demo commands."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
