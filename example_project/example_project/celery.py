"""The example project's Celery app (Celery's documented Django layout)."""

from __future__ import annotations

import os

from celery import Celery

from django_taskqueue.publishing import bound_publish_waits

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
# Every CELERY_* setting in settings.py configures this app.
app.config_from_object("django.conf:settings", namespace="CELERY")
# A down or frozen Redis answers a web request (503) within PUBLISH_TIMEOUT instead of
# blocking it: socket timeouts and a short result-backend retry policy, merged in here.
bound_publish_waits(app)
# Finds jobs/tasks.py and django_taskqueue/tasks.py (the housekeeping tasks).
app.autodiscover_tasks()
