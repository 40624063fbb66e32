"""A task's row as it is first written (lifecycle/creation.py): stored, redacted, JSON-safe."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from django_taskqueue.status import TaskStatus
from tests import factories

# The lifecycle contract: on SQLite here, and again on PostgreSQL in the integration
# tier and behind PgBouncer (tox -e integration, tox -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


class TestCreate:
    def test_records_pending_with_created_event(self) -> None:
        log = factories.task(task_type="image", args=[1, "a"], kwargs={"size": 3})
        log.refresh_from_db()
        assert log.status == TaskStatus.PENDING
        assert log.args == [1, "a"]
        assert log.kwargs == {"size": 3}
        assert not log.args_redacted
        assert factories.events(log) == ["created"]

    def test_redacts_secret_looking_keys_at_any_depth(self) -> None:
        log = factories.task(
            args=[{"user": "bob", "Password": "hunter2"}],
            kwargs={"api_key": "k", "nested": {"oauth": {"access_token": "t", "scope": "read"}}},
        )
        log.refresh_from_db()
        assert log.args == [{"user": "bob", "Password": "********"}]
        assert log.kwargs == {
            "api_key": "********",
            "nested": {"oauth": {"access_token": "********", "scope": "read"}},
        }
        assert log.args_redacted
        assert log.events.get().metadata == {"redacted": True}

    def test_redaction_keys_are_configurable(self, settings: Any) -> None:
        settings.DJANGO_TASKQUEUE = {"REDACT_KEYS": ["pin"], "REDACTED_VALUE": "<hidden>"}
        log = factories.task(kwargs={"pin": "1234", "password": "visible now"})
        log.refresh_from_db()
        assert log.kwargs == {"pin": "<hidden>", "password": "visible now"}

    def test_store_args_off(self, settings: Any) -> None:
        settings.DJANGO_TASKQUEUE = {"STORE_ARGS": False}
        log = factories.task(args=[1], kwargs={"a": 1})
        log.refresh_from_db()
        assert (log.args, log.kwargs) == ([], {})

    def test_odd_values_are_stored_json_safe(self) -> None:
        when = timezone.now()
        log = factories.task(args=[when, {1, 2}, object(), float("nan")])
        log.refresh_from_db()
        assert log.args[0] == DjangoJSONEncoder().default(when)
        assert sorted(log.args[1]) == [1, 2]
        assert log.args[2].startswith("<object object")
        assert log.args[3] == "nan"
