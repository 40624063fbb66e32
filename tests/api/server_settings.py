"""Settings of the web servers that tests/api/test_stream_servers.py starts.

The test settings, plus a cache that every server process shares (Redis, as a
production deployment would have it) and the ``DJANGO_TASKQUEUE`` keys the
test passes in ``TASKQUEUE_TEST_SERVER_SETTINGS`` (JSON).
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DJANGO_TASKQUEUE

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["TASKQUEUE_TEST_CACHE"],
        # One prefix per server, so no slot outlives the test that took it.
        "KEY_PREFIX": os.environ["TASKQUEUE_TEST_CACHE_PREFIX"],
    }
}
# The test users' passwords are hashed cheaply (tests/api/conftest.py).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DJANGO_TASKQUEUE = {
    **DJANGO_TASKQUEUE,
    **json.loads(os.environ.get("TASKQUEUE_TEST_SERVER_SETTINGS", "{}")),
}
