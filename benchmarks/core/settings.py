"""Django settings of the throughput benchmark (PostgreSQL + Redis, like production)."""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_celery_results",
    "django_taskqueue",
    "benchmarks.core",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_DB", "bench_tq_core"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/9")
CELERY_RESULT_BACKEND = "django-db"
# The same for every variant: one connection per worker process, not one per task.
CELERY_DB_REUSE_MAX = 1000
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The package runs with its defaults (heartbeats, progress throttling, async commits).
DJANGO_TASKQUEUE: dict[str, object] = {}
