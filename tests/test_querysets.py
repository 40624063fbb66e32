"""TaskLog's queryset methods (django_taskqueue.querysets) on rows the lifecycle wrote."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_taskqueue import lifecycle
from django_taskqueue.models import TaskLog
from tests import factories
from tests.helpers import started

# The lifecycle contract: on SQLite here, and again on PostgreSQL in the integration
# tier and behind PgBouncer (tox -e integration, tox -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


class TestQuerysets:
    def test_status_counts_in_one_query(self) -> None:
        for _ in range(3):
            factories.task()
        done = factories.task()
        lifecycle.mark_completed(done.celery_task_id, result=None)
        with CaptureQueriesContext(connection) as queries:
            counts = TaskLog.objects.status_counts()
        assert len(queries) == 1
        assert counts == {
            "pending": 3,
            "processing": 0,
            "retrying": 0,
            "completed": 1,
            "failed": 0,
            "cancelled": 0,
            "total": 4,
        }

    def test_for_user(self) -> None:
        alice, bob, staff = (
            factories.user("alice"),
            factories.user("bob"),
            factories.user("staff", staff=True),
        )
        mine = factories.task(owner=alice)
        factories.task(owner=bob)
        assert list(TaskLog.objects.for_user(alice)) == [mine]
        assert TaskLog.objects.for_user(staff).count() == 2
        assert TaskLog.objects.for_user(None).count() == 0

    def test_active_terminal_and_stale(self) -> None:
        fresh, old, done = factories.task(), factories.task(), factories.task()
        started(fresh)
        started(old)
        lifecycle.mark_completed(done.celery_task_id, result=None)
        TaskLog.objects.filter(pk=old.pk).update(heartbeat_at=timezone.now() - timedelta(hours=2))
        assert set(TaskLog.objects.active()) == {fresh, old}
        assert list(TaskLog.objects.terminal()) == [done]
        assert list(TaskLog.objects.stale(timedelta(hours=1))) == [old]
        annotated: Any = TaskLog.objects.with_last_seen().get(pk=old.pk)
        last_seen = annotated.last_seen
        assert last_seen < timezone.now() - timedelta(hours=1)
