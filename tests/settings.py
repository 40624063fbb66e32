"""Settings for the test suite.

``TASKQUEUE_TEST_DB=postgres`` switches to PostgreSQL (the integration tier);
``TASKQUEUE_TEST_BROKER`` sets the broker of the worker processes it starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

HAS_DRF = importlib.util.find_spec("rest_framework") is not None
HAS_BEAT = importlib.util.find_spec("django_celery_beat") is not None
HAS_RESULTS = importlib.util.find_spec("django_celery_results") is not None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_taskqueue",
    # Installed on SQLite too, where its migration does nothing (and W007 is silenced below).
    "django_taskqueue.contrib.postgres",
    "tests",
]
if HAS_DRF:
    INSTALLED_APPS += [
        "rest_framework",
        "rest_framework.authtoken",
        "django_filters",
        "drf_spectacular",
    ]
    # The API tests use each of these; throttle rates are set by the tests that need them.
    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "rest_framework.authentication.BasicAuthentication",
            "rest_framework.authentication.TokenAuthentication",
            "rest_framework.authentication.SessionAuthentication",
        ],
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
        "DEFAULT_THROTTLE_RATES": {},
    }
    SPECTACULAR_SETTINGS = {"TITLE": "django-taskqueue test project", "VERSION": "test"}
if HAS_BEAT:
    INSTALLED_APPS += ["django_celery_beat", "django_taskqueue.contrib.beat"]
if HAS_RESULTS:
    INSTALLED_APPS += ["django_celery_results"]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

DATABASES: dict[str, dict[str, object]]
if os.environ.get("TASKQUEUE_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "test"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # A worker process started by a test points NAME at the test database.
            "TEST": {"NAME": os.environ.get("TASKQUEUE_TEST_DB_NAME", "test_django_taskqueue")},
        }
    }
    if os.environ.get("TASKQUEUE_TEST_PGBOUNCER"):
        # Behind PgBouncer in transaction mode (tox -e pgbouncer), as Django's docs ask:
        # a server-side cursor would outlive the transaction it was opened in.
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
        # Its statement_timeout is set on the role, where check W008 cannot see it.
        SILENCED_SYSTEM_CHECKS = ["django_taskqueue.W008"]
    if os.environ.get("TASKQUEUE_WORKER_DB_NAME"):
        DATABASES["default"]["NAME"] = os.environ["TASKQUEUE_WORKER_DB_NAME"]
    # Timeouts as docs/production.md asks for them (check W008), loose enough for any
    # test; a fault test's worker gives its own as JSON ("{}" for none).
    _options = os.environ.get("TASKQUEUE_TEST_DB_OPTIONS")
    DATABASES["default"]["OPTIONS"] = (
        json.loads(_options)
        if _options is not None
        else {"connect_timeout": 10, "options": "-c statement_timeout=300000"}
    )
else:
    # The PostgreSQL search indexes app is installed but has nothing to do here.
    SILENCED_SYSTEM_CHECKS = ["django_taskqueue.W007"]
    # A file, not :memory:, so an in-process worker thread sees the test data.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            "TEST": {
                "NAME": os.environ.get("TASKQUEUE_TEST_SQLITE", str(BASE_DIR / "test-db.sqlite3"))
            },
        }
    }

CELERY_BROKER_URL = os.environ.get("TASKQUEUE_TEST_BROKER", "memory://")
CELERY_RESULT_BACKEND = os.environ.get(
    "TASKQUEUE_TEST_RESULT_BACKEND",
    "cache+memory://" if CELERY_BROKER_URL == "memory://" else CELERY_BROKER_URL,
)
# A test may give the worker processes it starts a result backend retry policy (JSON).
if os.environ.get("TASKQUEUE_TEST_RESULT_BACKEND_OPTIONS"):
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = json.loads(
        os.environ["TASKQUEUE_TEST_RESULT_BACKEND_OPTIONS"]
    )
CELERY_DB_REUSE_MAX = 100
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

DJANGO_TASKQUEUE = {
    "TASK_TYPES": {"sample": "tests.add"},
    "ALLOWED_FILE_ROOTS": [str(BASE_DIR)],
    # Tests flip these with override_settings; the defaults are exercised too.
    "PROGRESS_MIN_INTERVAL": 0.0,
}
# A worker process started by a test may get other DJANGO_TASKQUEUE values (JSON), wrong ones
# included (tests/integration/test_setup_mistakes.py).
if os.environ.get("TASKQUEUE_TEST_TASKQUEUE_SETTINGS"):
    DJANGO_TASKQUEUE.update(json.loads(os.environ["TASKQUEUE_TEST_TASKQUEUE_SETTINGS"]))

# Django 6.1 configures mail through MAILERS (and warns when sending without it);
# earlier versions ignore the setting. The test runner swaps in locmem either way.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_taskqueue": {"handlers": ["console"], "level": "WARNING"}},
}
