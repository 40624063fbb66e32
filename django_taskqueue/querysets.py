"""Querysets for :class:`~django_taskqueue.models.TaskLog`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_taskqueue.status import (
    ACTIVE_STATUSES,
    BULK_TASK_NAME,
    TERMINAL_STATUSES,
    TaskStatus,
)

if TYPE_CHECKING:
    from django_taskqueue.models import TaskLog  # noqa: F401

    _Base = models.QuerySet["TaskLog"]
else:
    _Base = models.QuerySet


class TaskLogQuerySet(_Base):
    """Filters that the API, the admin and the housekeeping tasks share."""

    def for_user(self, user: Any) -> TaskLogQuerySet:
        """Tasks ``user`` may see: all for staff, their own for others, none when anonymous."""
        if user is None or not getattr(user, "is_authenticated", False):
            return self.none()
        if getattr(user, "is_staff", False) or getattr(user, "is_superuser", False):
            return self
        return self.filter(owner=user)

    def active(self) -> TaskLogQuerySet:
        """Tasks that have not reached a terminal status."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def terminal(self) -> TaskLogQuerySet:
        """Tasks that completed, failed or were cancelled."""
        return self.filter(status__in=TERMINAL_STATUSES)

    def stale(self, older_than: timedelta) -> TaskLogQuerySet:
        """Tasks in ``processing`` whose last sign of life is older than ``older_than``.

        The last sign of life is the heartbeat (every progress write refreshes
        it), or the start time for a task that never reported. Bulk parents are
        left out: no worker runs them, their children are watched instead.
        """
        cutoff = timezone.now() - older_than
        return (
            self.filter(status=TaskStatus.PROCESSING)
            .filter(
                models.Q(heartbeat_at__lt=cutoff)
                | models.Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
            )
            .exclude(task_name=BULK_TASK_NAME)
        )

    def status_counts(self) -> dict[str, int]:
        """Count the tasks per status in one query.

        Returns:
            Every status in :class:`~django_taskqueue.status.TaskStatus` with its
            count (zero when absent), plus ``"total"``.
        """
        counts = {status.value: 0 for status in TaskStatus}
        rows = self.order_by().values_list("status").annotate(n=models.Count("pk"))
        for status, n in rows:
            counts[status] = n
        counts["total"] = sum(counts.values())
        return counts

    def with_last_seen(self) -> TaskLogQuerySet:
        """Annotate ``last_seen``: the heartbeat, else the start, else the creation time."""
        return self.annotate(
            last_seen=Coalesce("heartbeat_at", "started_at", "created_at"),
        )
