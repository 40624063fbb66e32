"""Settings of the fault suite: the test settings, pointed at private servers.

The suite starts its own PostgreSQL and Redis (``tests/faults/conftest.py``) so
that it may stop, freeze and restart them; these settings point the test
process, its worker processes and its housekeeper at them. Their ports come from
``TASKQUEUE_FAULTS_PG_PORT`` and ``TASKQUEUE_FAULTS_REDIS_PORT``, or are chosen
free here and written to the environment, which the processes the suite starts
inherit. Run with ``pytest --ds tests.faults.settings -m faults`` (``tox -e faults``).
"""

from __future__ import annotations

import os

from tests.servers import free_port
from tests.settings import *  # noqa: F403


def _port(variable: str) -> int:
    value = os.environ.get(variable)
    if not value:
        value = os.environ[variable] = str(free_port())
    return int(value)


TASKQUEUE_FAULTS = True
FAULTS_PG_PORT = _port("TASKQUEUE_FAULTS_PG_PORT")
FAULTS_REDIS_PORT = _port("TASKQUEUE_FAULTS_REDIS_PORT")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        # A worker process started by a test points NAME at the test database.
        "NAME": os.environ.get("TASKQUEUE_WORKER_DB_NAME", "postgres"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": str(FAULTS_PG_PORT),
        "TEST": {"NAME": "test_taskqueue_faults"},
    }
}

CELERY_BROKER_URL = f"redis://127.0.0.1:{FAULTS_REDIS_PORT}/0"
CELERY_RESULT_BACKEND = f"redis://127.0.0.1:{FAULTS_REDIS_PORT}/1"
#: Seconds before Redis gives a dead worker's unacknowledged messages back; the
#: workers look for such messages every second (kombu's restore sweep). A worker
#: started with ``TASKQUEUE_FAULTS_VISIBILITY_TIMEOUT`` gets another (a redelivery
#: experiment gives its worker one shorter than its task's body).
VISIBILITY_TIMEOUT = int(os.environ.get("TASKQUEUE_FAULTS_VISIBILITY_TIMEOUT", "8"))
# A connection kept in a pool would outlive a Redis restart and fail its next
# read: these processes connect for each use instead.
CELERY_BROKER_POOL_LIMIT = 0
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
