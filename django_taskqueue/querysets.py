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
    from django_taskqueue.models import TaskLog

    _Base = models.QuerySet["TaskLog"]
else:
    _Base = models.QuerySet


#: At most this many queries join a canvas's roots and groups (see :meth:`TaskLogQuerySet.canvas`).
CANVAS_MAX_ROUNDS = 8


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

    def in_canvas(self, root_id: str) -> TaskLogQuerySet:
        """Every recorded task of the Celery canvas whose root task is ``root_id``.

        The root's own row is included (also a row recorded before lineage was
        kept, found by its Celery id). The order is the queryset's own (newest
        first by default): add ``.order_by("created_at")`` to walk from the root.
        """
        if not root_id:
            return self.none()
        return self.filter(models.Q(celery_root_id=root_id) | models.Q(celery_task_id=root_id))

    def canvas(self, task_log: TaskLog) -> TaskLogQuerySet:
        """Every recorded task of the canvas ``task_log`` belongs to, itself included.

        The tasks are joined through Celery's root ids and group ids: the tasks
        of every root and every group met, until no new one appears (at most
        :data:`CANVAS_MAX_ROUNDS` queries, one for a chain). Both are needed:
        Celery gives a chain one root, but the members of a group or chord
        header sent from outside any task are each their own root, joined only
        by their group id (and a chord's body takes its root from the member
        that returned last). A task outside any canvas is its own root: the
        result holds it, and any task it sent from its body.

        The order is the queryset's own (newest first by default).

        Example::

            log = TaskLog.objects.get(celery_task_id=result.id)
            for step in TaskLog.objects.canvas(log).order_by("created_at"):
                print(step.task_name, step.status, step.celery_parent_id)
        """
        roots = {task_log.celery_root_id or task_log.celery_task_id}
        groups = {task_log.celery_group_id} - {""}
        for _ in range(CANVAS_MAX_ROUNDS):
            found = (
                self._joined(roots, groups)
                .order_by()
                .values_list("celery_root_id", "celery_group_id")
                .distinct()
            )
            more_roots = roots | {root for root, _ in found if root}
            more_groups = groups | {group for _, group in found if group}
            if (more_roots, more_groups) == (roots, groups):
                break
            roots, groups = more_roots, more_groups
        return self._joined(roots, groups)

    def _joined(self, roots: set[str], groups: set[str]) -> TaskLogQuerySet:
        condition = models.Q(celery_root_id__in=sorted(roots)) | models.Q(
            celery_task_id__in=sorted(roots)
        )
        if groups:
            condition |= models.Q(celery_group_id__in=sorted(groups))
        return self.filter(condition)
