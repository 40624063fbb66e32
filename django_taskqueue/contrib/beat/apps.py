"""App configuration of the django-celery-beat integration."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TaskQueueBeatConfig(AppConfig):
    """Holds the beat management commands; it has no models."""

    name = "django_taskqueue.contrib.beat"
    label = "django_taskqueue_beat"
    verbose_name = _("Task queue: beat schedules")
