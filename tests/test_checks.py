"""System checks: every id, with a bad value and with a good one."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.conf import settings
from django.template import TemplateDoesNotExist
from django.test import modify_settings, override_settings

from django_taskqueue.checks import check_api_apps, check_settings, check_setup


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass() -> None:
    with override_settings(DJANGO_TASKQUEUE={}):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not a dict", ["django_taskqueue.E001"]),
        ({"TASK_TYPO": 1}, ["django_taskqueue.W001"]),
        ({"TASK_TYPES": ["image"]}, ["django_taskqueue.E002"]),
        ({"TASK_TYPES": {"image": ""}}, ["django_taskqueue.E002"]),
        ({"TASK_TYPES": {"x" * 65: "a.b"}}, ["django_taskqueue.E002"]),
        ({"ALLOWED_FILE_ROOTS": "/srv/media"}, ["django_taskqueue.E003"]),
        ({"ALLOWED_FILE_ROOTS": ["media"]}, ["django_taskqueue.E003"]),
        ({"ALLOWED_FILE_ROOTS": [None]}, ["django_taskqueue.E003"]),
        ({1: "x", "TYPO": 2}, ["django_taskqueue.W001"]),
        ({"PROGRESS_MIN_INTERVAL": -1}, ["django_taskqueue.E004"]),
        ({"PROGRESS_MIN_INTERVAL": "1"}, ["django_taskqueue.E004"]),
        ({"PROGRESS_MIN_INTERVAL": float("nan")}, ["django_taskqueue.E004"]),
        ({"API_STREAM_POLL_INTERVAL": float("inf")}, ["django_taskqueue.E015"]),
        ({"STALE_AFTER": 10**30}, ["django_taskqueue.E011"]),
        ({"PROGRESS_HISTORY_STEP": 0}, ["django_taskqueue.E005"]),
        ({"PROGRESS_HISTORY_STEP": 101}, ["django_taskqueue.E005"]),
        ({"REDACT_KEYS": "password"}, ["django_taskqueue.E006"]),
        ({"REDACT_KEYS": ["ok", ""]}, ["django_taskqueue.E006"]),
        ({"RESULT_MAX_BYTES": 10}, ["django_taskqueue.E007"]),
        ({"TRACEBACK_MAX_CHARS": True}, ["django_taskqueue.E008"]),
        ({"PUBLISH_TIMEOUT": 0}, ["django_taskqueue.E017"]),
        ({"PUBLISH_TIMEOUT": "10"}, ["django_taskqueue.E017"]),
        ({"PUBLISH_TIMEOUT": 7200}, ["django_taskqueue.E017"]),
        ({"MESSAGE_MAX_DEPTH": 0}, ["django_taskqueue.E018"]),
        ({"MESSAGE_MAX_DEPTH": 201}, ["django_taskqueue.E018"]),
        ({"MESSAGE_MAX_DEPTH": 64.0}, ["django_taskqueue.E018"]),
        ({"MESSAGE_MAX_BYTES": 1023}, ["django_taskqueue.E018"]),
        ({"MESSAGE_MAX_BYTES": True}, ["django_taskqueue.E018"]),
        ({"HELD_RECORDS_MAX": -1}, ["django_taskqueue.E027"]),
        ({"HELD_RECORDS_MAX": 10.5}, ["django_taskqueue.E027"]),
        ({"HELD_RECORDS_WAIT": "60"}, ["django_taskqueue.E027"]),
        ({"HELD_RECORDS_WAIT": 7200}, ["django_taskqueue.E027"]),
    ],
)
def test_bad_settings(value: Any, expected: list[str]) -> None:
    with override_settings(DJANGO_TASKQUEUE=value):
        assert ids(check_settings()) == expected


def test_good_values() -> None:
    good = {
        "TASK_TYPES": {"image": "jobs.tasks.process_image"},
        "ALLOWED_FILE_ROOTS": ["/srv/media"],
        "PROGRESS_MIN_INTERVAL": 0,
        "PROGRESS_HISTORY_STEP": 100,
        "REDACT_KEYS": ["pin"],
        "RESULT_MAX_BYTES": 64,
        "TRACEBACK_MAX_CHARS": 1000,
        "PUBLISH_TIMEOUT": 2.5,
        "MESSAGE_MAX_DEPTH": 200,
        "MESSAGE_MAX_BYTES": 1024,
        "HELD_RECORDS_MAX": 0,
        "HELD_RECORDS_WAIT": 0.5,
    }
    with override_settings(DJANGO_TASKQUEUE=good):
        assert check_settings() == []
    with override_settings(DJANGO_TASKQUEUE={"PUBLISH_TIMEOUT": None}):
        assert check_settings() == []


def test_redis_waits_longer_than_the_publish_deadline_warn(celery_app: Any) -> None:
    from celery import Celery

    from django_taskqueue.checks import check_publish_waits
    from django_taskqueue.publishing import bound_publish_waits

    app = Celery("checked", set_as_current=False)
    app.conf.update(
        broker_url="redis://127.0.0.1:1/0",
        result_backend="redis://127.0.0.1:1/0",
        broker_transport_options={"visibility_timeout": 60},
    )
    app.set_current()
    try:
        with override_settings(DJANGO_TASKQUEUE={"PUBLISH_TIMEOUT": 6}):
            (warning,) = check_publish_waits()
            assert warning.id == "django_taskqueue.W009"
            for name in ("socket_timeout", "redis_socket_timeout", "retry_policy"):
                assert name in warning.msg
            applied = bound_publish_waits(app)
            assert check_publish_waits() == []
        # The host's own transport options are kept.
        assert applied["broker_transport_options"] == {
            "visibility_timeout": 60,
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
        }
        assert app.conf.redis_socket_timeout == 1.0
        with override_settings(DJANGO_TASKQUEUE={"PUBLISH_TIMEOUT": 0.5}):
            assert ids(check_publish_waits()) == ["django_taskqueue.W009"]
        with override_settings(DJANGO_TASKQUEUE={"PUBLISH_TIMEOUT": None}):
            assert check_publish_waits() == []
    finally:
        celery_app.set_current()


def test_db_reuse_max_unset_warns() -> None:
    with override_settings(CELERY_DB_REUSE_MAX=None):
        assert "django_taskqueue.W002" in ids(check_setup())
    with override_settings(CELERY_DB_REUSE_MAX=100):
        assert "django_taskqueue.W002" not in ids(check_setup())


def test_sqlite_without_wal_warns(settings: Any) -> None:
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "OPTIONS": {}}}
    with override_settings(DATABASES=databases):
        assert "django_taskqueue.W003" in ids(check_setup())
    databases["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
    }
    with override_settings(DATABASES=databases):
        assert "django_taskqueue.W003" not in ids(check_setup())


def _postgres(options: dict[str, Any] | None) -> dict[str, Any]:
    database: dict[str, Any] = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    if options is not None:
        database["OPTIONS"] = options
    return {"default": database}


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        (None, "connect_timeout or statement_timeout"),
        ({"connect_timeout": 5}, "statement_timeout"),
        ({"connect_timeout": 0, "options": "-c statement_timeout=30s"}, "connect_timeout"),
        ({"connect_timeout": 5, "options": "-c statement_timeout=0"}, "statement_timeout"),
        ({"connect_timeout": 5, "options": "-c lock_timeout=10s"}, "statement_timeout"),
    ],
)
def test_postgres_without_timeouts_warns(
    options: dict[str, Any] | None, missing: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    with override_settings(DATABASES=_postgres(options)):
        warnings = [m for m in check_setup() if m.id == "django_taskqueue.W008"]
    assert len(warnings) == 1
    assert f"without {missing} in its OPTIONS" in warnings[0].msg


@pytest.mark.parametrize(
    ("options", "environ"),
    [
        ({"connect_timeout": 5, "options": "-c statement_timeout=30s -c lock_timeout=10s"}, {}),
        ({"connect_timeout": "10", "options": "--statement-timeout=30000"}, {}),
        ({}, {"PGCONNECT_TIMEOUT": "5", "PGOPTIONS": "-c statement_timeout=30s"}),
    ],
)
def test_postgres_with_timeouts_passes(
    options: dict[str, Any], environ: dict[str, str], monkeypatch: Any
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with override_settings(DATABASES=_postgres(options)):
        assert "django_taskqueue.W008" not in ids(check_setup())


def test_timeouts_are_not_asked_of_other_databases() -> None:
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}
    with override_settings(DATABASES=databases):
        assert "django_taskqueue.W008" not in ids(check_setup())


def test_eager_mode_warns() -> None:
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
        assert "django_taskqueue.W004" in ids(check_setup())


def test_checks_are_registered() -> None:
    from django.core import checks

    with override_settings(DJANGO_TASKQUEUE="bad"):
        messages = checks.run_checks()
    assert "django_taskqueue.E001" in ids(messages)


def test_every_id_is_documented() -> None:
    import re
    from pathlib import Path

    package = Path(__file__).parent.parent / "django_taskqueue"
    page = (Path(__file__).parent.parent / "docs" / "checks.md").read_text()
    # The helpers error() and warning() of setting_checks.py, used there and in checks.py.
    source = "\n".join((package / name).read_text() for name in ("checks.py", "setting_checks.py"))
    numbers = set(re.findall(r"(?<![\w.])(error|warning)\(\s*(\d+)", source))
    assert numbers
    check_ids = {
        f"django_taskqueue.{'E' if kind == 'error' else 'W'}{int(n):03d}" for kind, n in numbers
    }
    # Checks outside these modules (the contrib apps') spell their ids out.
    for module in package.rglob("*.py"):
        check_ids.update(re.findall(r'id="(django_taskqueue\.[EW]\d{3})"', module.read_text()))
    assert "django_taskqueue.W007" in check_ids
    for check_id in sorted(check_ids):
        assert check_id in page, f"{check_id} is not in docs/checks.md"


@pytest.mark.skipif(not settings.HAS_DRF, reason="needs the drf extra")
class TestApiApps:
    """E025/E026: the API's URLs are routed, but an app whose templates its pages need is not."""

    def test_everything_installed_passes(self) -> None:
        assert check_api_apps() == []

    @pytest.mark.parametrize("app", ["django_filters", "rest_framework"])
    def test_missing_api_app_is_named(self, app: str) -> None:
        removed = [app, "rest_framework.authtoken"] if app == "rest_framework" else [app]
        with modify_settings(INSTALLED_APPS={"remove": removed}):
            messages = check_api_apps()
        assert ids(messages) == ["django_taskqueue.E025"]
        assert repr(app) in messages[0].msg

    def test_missing_drf_spectacular_is_named(self) -> None:
        with modify_settings(INSTALLED_APPS={"remove": ["drf_spectacular"]}):
            messages = check_api_apps()
        assert ids(messages) == ["django_taskqueue.E026"]
        assert "'drf_spectacular'" in messages[0].msg

    def test_not_routed_not_needed(self) -> None:
        removed = ["django_filters", "drf_spectacular"]
        with (
            override_settings(ROOT_URLCONF="tests.urls_admin_only"),
            modify_settings(INSTALLED_APPS={"remove": removed}),
        ):
            assert check_api_apps() == []

    @pytest.mark.django_db
    @pytest.mark.parametrize(
        ("app", "url"), [("django_filters", "/api/tasks/"), ("drf_spectacular", "/api/docs/")]
    )
    def test_the_page_fails_without_the_app(self, admin_client: Any, app: str, url: str) -> None:
        """What E025/E026 prevent: the browsable API and the docs page need the templates."""
        assert admin_client.get(url, HTTP_ACCEPT="text/html").status_code == 200
        with (
            modify_settings(INSTALLED_APPS={"remove": [app]}),
            pytest.raises(TemplateDoesNotExist, match=app),
        ):
            admin_client.get(url, HTTP_ACCEPT="text/html")


def _check_in_a_new_process(*before_setup: str) -> str:
    """``manage.py check --tag django_taskqueue`` in a new process that first runs ``before_setup``.

    A new process: which Celery app is current is decided once per process.
    """
    import subprocess
    import sys
    from pathlib import Path

    code = "\n".join(
        [
            *before_setup,
            "import django",
            "django.setup()",
            "from django.core.management import call_command",
            "call_command('check', '--tag', 'django_taskqueue')",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout + done.stderr


def test_a_process_without_the_projects_celery_app_warns() -> None:
    """The settings load, but nothing imports the project's celery.py (the __init__ import
    forgotten)."""
    output = _check_in_a_new_process()
    assert "django_taskqueue.W012" in output
    # What to write, and where: the settings' package (tests.settings here).
    assert "tests/celery.py" in output
    assert 'Celery("tests")' in output
    assert "tests/__init__.py" in output
    assert "from .celery import app as celery_app" in output
    assert "checks.html#w012" in output


def test_a_process_with_the_projects_celery_app_does_not_warn() -> None:
    output = _check_in_a_new_process("import tests.celery_app")
    assert "W012" not in output
    assert "W013" not in output


def test_an_app_without_a_broker_warns(celery_app: Any) -> None:
    from celery import Celery

    from django_taskqueue.checks import check_celery_app

    assert check_celery_app() == []
    Celery("proj", set_as_current=True)  # a celery.py without config_from_object
    try:
        with override_settings(CELERY_BROKER_URL="redis://localhost:6379/0"):
            (warning,) = check_celery_app()
        assert warning.id == "django_taskqueue.W013"
        assert "'proj' has no broker_url" in warning.msg
        assert "CELERY_BROKER_URL is set, but the app does not read it" in str(warning.hint)
        assert "config_from_object" in str(warning.hint)
    finally:
        celery_app.set_current()
    assert check_celery_app() == []


def test_log_checks_logs_each_message_with_its_id_and_hint(caplog: Any) -> None:
    """What a worker logs at start (receivers.on_worker_start): errors at ERROR, warnings at
    WARNING, silenced ids left out."""
    import logging

    from django_taskqueue.checks import log_checks

    wrong = {"PROGRESS_MIN_INTERVAL": "fast", "TASK_TYPO": 1}
    with override_settings(DJANGO_TASKQUEUE=wrong), caplog.at_level(logging.INFO):
        found = log_checks()
    records = [r for r in caplog.records if r.name == "django_taskqueue"]
    lines = {(r.levelname, r.getMessage().split(":")[0]) for r in records}
    assert ("ERROR", "System check django_taskqueue.E004") in lines
    assert ("WARNING", "System check django_taskqueue.W001") in lines
    assert len(lines) == len(found)
    assert all(
        "HINT: " in r.getMessage() and "checks.html#" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with (
        override_settings(DJANGO_TASKQUEUE=wrong, SILENCED_SYSTEM_CHECKS=["django_taskqueue.E004"]),
        caplog.at_level(logging.INFO),
    ):
        log_checks()
    assert not [r for r in caplog.records if "E004" in r.getMessage()]


def test_every_hint_links_to_its_entry_in_the_docs() -> None:
    """Each check's hint ends with the address of its anchor in docs/checks.md."""
    import re
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "checks.md").read_text()
    package = Path(__file__).parent.parent / "django_taskqueue"
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    numbers = re.findall(r"(?<![\w.])(error|warning)\(\s*(\d+)", source)
    check_ids = {f"{'E' if kind == 'error' else 'W'}{int(n):03d}" for kind, n in numbers}
    check_ids.update(re.findall(r'id="django_taskqueue\.([EW]\d{3})"', source))
    assert {"E001", "W007", "W012", "W013"} <= check_ids
    for check_id in sorted(check_ids):
        assert f'id="{check_id.lower()}"' in page, f"docs/checks.md has no anchor for {check_id}"
    # The helpers add the link; the one check outside them (contrib) adds it itself.
    with override_settings(DJANGO_TASKQUEUE={"PROGRESS_MIN_INTERVAL": -1}):
        (error,) = check_settings()
    assert str(error.hint).endswith(
        "See https://django-taskqueue.readthedocs.io/en/latest/checks.html#e004"
    )
    from django_taskqueue.contrib.postgres.checks import check_database

    for message in check_database():
        assert str(message.hint).endswith("checks.html#w007")
