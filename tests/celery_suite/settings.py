"""Django settings for running Celery's own test suite with the package installed.

The suite's apps keep their own brokers and result backends; these settings give
them a Django project (the Django fix-up is active in both runs, tracked and not) and
the PostgreSQL database the package records into.
"""

from __future__ import annotations

import os

SECRET_KEY = "celery-suite-only-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_taskqueue",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("TASKQUEUE_CELERY_SUITE_DB", "test_dtq_celery_suite"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "OPTIONS": {"connect_timeout": 10, "options": "-c statement_timeout=60000"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None
