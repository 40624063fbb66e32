"""Settings of the example project, read from environment variables.

With no variable set it needs no server: SQLite (WAL, immediate transactions, a busy
timeout) for the data, Celery's ``filesystem://`` transport for the broker and
django-celery-results for Celery's results, all under ``EXAMPLE_DATA_DIR``
(``example_project/var/`` by default). Set ``DATABASE_URL`` (``postgres://...``) and
``CELERY_BROKER_URL`` (``redis://...`` or ``amqp://...``) to run it on PostgreSQL and
Redis or RabbitMQ. docs/example.md lists every variable.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from celery.schedules import crontab

from django_taskqueue.beat import beat_schedule

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable ("1", "true", "yes", "on" are yes)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def module_exists(name: str) -> bool:
    """Whether ``name`` can be imported (an optional package or an optional part of one)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def database_from_url(url: str) -> dict[str, Any]:
    """Turn ``postgres://user:password@host:port/name`` or ``sqlite:///path`` into a database."""
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Workers keep their connection between tasks (see CELERY_DB_REUSE_MAX too).
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            # A frozen or unreachable server fails a call instead of stalling every
            # worker (docs/production.md; check django_taskqueue.W008).
            "OPTIONS": {
                "connect_timeout": 5,
                "options": "-c statement_timeout=60s -c lock_timeout=10s "
                "-c idle_in_transaction_session_timeout=60s",
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "tcp_user_timeout": 30000,
            },
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative/path, sqlite:////absolute/path
        return sqlite_database(Path(unquote(parts.path[1:] if parts.path else "")))
    raise ValueError(
        f"DATABASE_URL: unsupported scheme {parts.scheme!r} (use postgres:// or sqlite://)"
    )


def sqlite_database(path: Path) -> dict[str, Any]:
    """A SQLite database that a web process and worker processes can write at once.

    WAL lets readers run during a write; IMMEDIATE transactions take the write lock at
    BEGIN, so two writers queue for up to ``timeout`` seconds instead of failing with
    "database is locked" halfway through (the django_taskqueue.W003 check asks for both).
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


# --------------------------------------------------------------------------- paths

#: Everything the example writes: the SQLite database, the broker's folders, media, mail.
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR") or BASE_DIR / "var").resolve()
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
#: The sample files made on first run; the only folder the API may start tasks on.
SAMPLES_DIR = MEDIA_ROOT / "samples"
#: What the tasks produce: processed images, summaries, segment indexes.
OUTPUT_DIR = MEDIA_ROOT / "processed"
#: Generated reports, served only through the authenticated download view.
REPORTS_DIR = DATA_DIR / "reports"
BROKER_DIR = DATA_DIR / "broker"
MAIL_DIR = DATA_DIR / "mail"
LOG_DIR = DATA_DIR / "logs"

# The filesystem transport and the file e-mail backend need their folders to exist
# before the first message; creating them here covers every process (web, worker, beat).
for _folder in (
    SAMPLES_DIR,
    OUTPUT_DIR,
    REPORTS_DIR,
    BROKER_DIR / "queue",
    BROKER_DIR / "processed",
    BROKER_DIR / "control",
    MAIL_DIR,
    LOG_DIR,
):
    _folder.mkdir(parents=True, exist_ok=True)

# --------------------------------------------------------------------------- Django

# The default is for the demo only: set DJANGO_SECRET_KEY anywhere else.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-demo-only-not-a-secret")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = os.environ.get(
    "DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver"
).split(",")
USE_TZ = True
TIME_ZONE = "UTC"

HAS_DRF = all(
    module_exists(name) for name in ("rest_framework", "drf_spectacular", "django_filters")
)
# django-celery-beat does not support Django 6.1 yet; without it beat keeps its schedule
# in a file (Celery's PersistentScheduler) instead of the database.
HAS_BEAT = module_exists("django_celery_beat")
HAS_FLOWER = module_exists("flower")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "django_taskqueue",
    "jobs",
]
# Swagger UI and ReDoc served from this site's static files, not a CDN (the `example`
# dependency group installs drf-spectacular-sidecar): /api/docs/ works offline.
HAS_SIDECAR = HAS_DRF and module_exists("drf_spectacular_sidecar")
if HAS_DRF:
    INSTALLED_APPS += ["rest_framework", "rest_framework.authtoken", "django_filters"]
    INSTALLED_APPS += ["drf_spectacular"]
if HAS_SIDECAR:
    INSTALLED_APPS += ["drf_spectacular_sidecar"]
if HAS_BEAT:
    INSTALLED_APPS += ["django_celery_beat"]
    if module_exists("django_taskqueue.contrib.beat"):
        INSTALLED_APPS += ["django_taskqueue.contrib.beat"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
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
STATIC_ROOT = DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The site's own sign-in page: the admin's refuses users who are not staff (alice, bob).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

DATABASES = {
    "default": (
        database_from_url(os.environ["DATABASE_URL"])
        if os.environ.get("DATABASE_URL")
        else sqlite_database(DATA_DIR / "db.sqlite3")
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Trigram indexes under the admin's and the API's search (docs/postgres.md).
    INSTALLED_APPS += ["django_taskqueue.contrib.postgres"]

# Mail goes to files in DATA_DIR/mail unless EMAIL_BACKEND says otherwise (for example
# django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST and EMAIL_PORT). The
# default backend also plays a flaky SMTP server for addresses containing "+flaky"
# (fails once) or "+down" (always fails), so the retries can be seen.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "jobs.mail.DemoFileBackend")
EMAIL_FILE_PATH = str(MAIL_DIR)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = "Example Jobs <jobs@example.test>"

# --------------------------------------------------------------------------- Celery

# "localhost" only keeps kombu from warning that no host was given: the transport ignores it.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem:"):
    # One folder for both directions: every process is producer and consumer. The
    # control folder holds the exchange tables that broadcast needs (revoke, ping, inspect).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
        # The transport polls the folder; 1 s (the default) makes the demo feel slow.
        "polling_interval": 0.1,
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Workers reuse their database connection for this many tasks (django_taskqueue.W002).
CELERY_DB_REUSE_MAX = 100
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Priority queues and routing: mail jumps the queue, reports wait in the slow lane. One
# worker consumes all three (``-Q high,default,low``); in production give ``high`` a
# worker of its own so a burst of reports never delays a password reset.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "jobs.tasks.send_*": {"queue": "high"},
    "jobs.tasks.generate_report": {"queue": "low"},
    "jobs.tasks.purge_outputs": {"queue": "low"},
    "django_taskqueue.*": {"queue": "low"},
}
EXAMPLE_QUEUES = ("high", "default", "low")
# Take one message at a time, so a long task does not sit on messages another child could run.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Global time limits; tasks set tighter ones of their own.
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
# Events for Flower (``manage.py demo --flower``, or ``celery -A example_project flower``).
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", True)
CELERY_TASK_SEND_SENT_EVENT = env_bool("CELERY_TASK_SEND_SENT_EVENT", True)

# django-taskqueue's housekeeping presets (retention, stuck and lost tasks, a daily
# summary mailed to REPORT_RECIPIENTS), merged with the example's own entry.
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    **beat_schedule(),
    "example-purge-outputs": {
        "task": "jobs.tasks.purge_outputs",
        "schedule": crontab(minute=15),
        "kwargs": {"max_age_hours": 24},
    },
}
if HAS_BEAT:
    # Entries in CELERY_BEAT_SCHEDULE are written into django-celery-beat's tables when
    # beat starts; the admin edits them from there.
    CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
else:
    CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --------------------------------------------------------------------------- django-taskqueue

DJANGO_TASKQUEUE = {
    # Task types the API may start (POST /api/tasks/create_task/), by Celery task name.
    "TASK_TYPES": {
        "image": "jobs.tasks.process_image",
        "document": "jobs.tasks.process_document",
        "video": "jobs.tasks.process_video",
        "report": "jobs.tasks.generate_report",
    },
    "ALLOWED_FILE_ROOTS": [str(SAMPLES_DIR)],
    # The example's tasks report a few dozen steps each and every step should show in
    # the history; keep the default (0.5 s) for tasks that report from tight loops.
    "PROGRESS_MIN_INTERVAL": 0.0,
    # The daily summary report (a beat preset) is mailed here.
    "REPORT_RECIPIENTS": ["admin@example.test"],
}

if HAS_DRF:
    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "rest_framework.authentication.SessionAuthentication",
            "rest_framework.authentication.BasicAuthentication",
            "rest_framework.authentication.TokenAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    }
    SPECTACULAR_SETTINGS: dict[str, Any] = {
        "TITLE": "django-taskqueue example API",
        "DESCRIPTION": "Start, follow, cancel and retry tracked Celery tasks.",
        "VERSION": "0.1.0",
        "SERVE_INCLUDE_SCHEMA": False,
    }
    if HAS_SIDECAR:
        SPECTACULAR_SETTINGS |= {
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
        }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"debug_off": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "errors_debug_off": {
            "class": "logging.StreamHandler",
            "level": "ERROR",
            "filters": ["debug_off"],
        },
    },
    "loggers": {
        "django_taskqueue": {"handlers": ["console"], "level": "INFO"},
        "jobs": {"handlers": ["console"], "level": "INFO"},
        # A request that fails with a 500 leaves its traceback in the server's log with
        # DJANGO_DEBUG off too: Django's own console handler only logs while DEBUG is on.
        "django.request": {"handlers": ["errors_debug_off"]},
    },
}
