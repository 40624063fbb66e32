"""Which status may follow which (django_taskqueue.status), the rules the lifecycle writes by."""

from __future__ import annotations

import pytest

from django_taskqueue.status import ALLOWED_FROM, TERMINAL_STATUSES, TaskStatus, can_move

# The lifecycle contract: on SQLite here, and again on PostgreSQL in the integration
# tier and behind PgBouncer (tox -e integration, tox -e pgbouncer).
pytestmark = [pytest.mark.django_db, pytest.mark.backends]


class TestStatusRules:
    def test_terminal_statuses_accept_nothing(self) -> None:
        for status in TERMINAL_STATUSES:
            assert not any(can_move(status, target) for target in ALLOWED_FROM)

    def test_processing_cannot_go_back_to_pending(self) -> None:
        assert not can_move(TaskStatus.PROCESSING, TaskStatus.PENDING)
        assert can_move(TaskStatus.RETRYING, TaskStatus.PROCESSING)
