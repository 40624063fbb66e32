"""The three models: TaskLog, TaskProgress and TaskEventLog.

Nothing here writes a status: every state change goes through
:mod:`django_taskqueue.lifecycle`.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_taskqueue.querysets import TaskLogQuerySet
from django_taskqueue.status import (
    ACTIVE_STATUSES,
    EventType,
    TaskStatus,
)

TaskLogManager = models.Manager.from_queryset(TaskLogQuerySet)


class TaskLog(models.Model):
    """One row per tracked Celery task."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    celery_task_id = models.CharField(
        _("Celery task id"),
        max_length=255,
        unique=True,
        help_text=_("The id Celery uses for the task; unique."),
    )
    task_name = models.CharField(_("task name"), max_length=255, blank=True)
    # task_type and status are indexed through the composite indexes in Meta,
    # which they lead: a single-column index beside each would only cost every
    # status change two more index writes.
    task_type = models.CharField(_("task type"), max_length=64, blank=True)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=TaskStatus.choices,
        default=TaskStatus.PENDING,
    )
    queue = models.CharField(_("queue"), max_length=255, blank=True)
    # What the task was published with, so that a re-run can be published alike.
    eta = models.DateTimeField(
        _("ETA"),
        null=True,
        blank=True,
        help_text=_("When the task was due to start, if it was published with a countdown or ETA."),
    )
    priority = models.PositiveSmallIntegerField(
        _("priority"),
        null=True,
        blank=True,
        help_text=_("The message priority it was published with, if any."),
    )

    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    file_size = models.BigIntegerField(_("file size"), null=True, blank=True)
    file_path = models.CharField(_("file path"), max_length=1024, blank=True)

    progress = models.PositiveSmallIntegerField(_("progress"), default=0)
    progress_message = models.CharField(_("progress message"), max_length=255, blank=True)

    result = models.JSONField(_("result"), null=True, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    error_code = models.CharField(_("error code"), max_length=128, blank=True)
    traceback = models.TextField(_("traceback"), blank=True)

    retry_count = models.PositiveIntegerField(_("retry count"), default=0)
    max_retries = models.PositiveIntegerField(_("max retries"), null=True, blank=True)
    attempt = models.PositiveIntegerField(
        _("attempt"),
        default=0,
        help_text=_("Celery's retry number of the newest attempt recorded."),
    )
    next_retry_at = models.DateTimeField(_("next retry at"), null=True, blank=True)

    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    completed_at = models.DateTimeField(
        _("completed at"),
        null=True,
        blank=True,
        help_text=_("When the task ended: completed, failed or cancelled."),
    )
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat at"), null=True, blank=True)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="task_logs",
        # The (owner, status) index below serves lookups by owner.
        db_index=False,
    )
    tags = models.JSONField(_("tags"), default=list, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    args = models.JSONField(_("args"), default=list, blank=True)
    kwargs = models.JSONField(_("kwargs"), default=dict, blank=True)
    args_redacted = models.BooleanField(
        _("arguments redacted"),
        default=False,
        help_text=_("Secret-looking values were replaced before storing args and kwargs."),
    )
    worker = models.CharField(_("worker"), max_length=255, blank=True)
    # NULL, not "", for tasks without a key: only keyed rows are unique (Meta.constraints).
    idempotency_key = models.CharField(  # noqa: DJ001
        _("idempotency key"),
        max_length=255,
        null=True,
        blank=True,
        help_text=_(
            "The caller's key for this start (unique per owner): starting again with the "
            "same key returns this task instead of starting another one."
        ),
    )

    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        help_text=_("The bulk, group or chain row this task belongs to."),
    )
    # Where the task sits in a Celery canvas (chain, group, chord, replace), as
    # Celery's own ids: a canvas's steps may have no row (untracked tasks), so
    # these are not foreign keys. ``parent`` above is the bulk parent, not these.
    celery_parent_id = models.CharField(
        _("Celery parent id"),
        max_length=255,
        blank=True,
        help_text=_("The Celery id of the task that sent this one (Celery's parent_id)."),
    )
    celery_root_id = models.CharField(
        _("Celery root id"),
        max_length=255,
        blank=True,
        help_text=_(
            "The Celery id of the first task of the canvas this one belongs to "
            "(Celery's root_id; the task's own id when it started one)."
        ),
    )
    celery_group_id = models.CharField(
        _("Celery group id"),
        max_length=255,
        blank=True,
        help_text=_("The Celery id of the group (or chord header) this task is part of."),
    )
    retry_of = models.ForeignKey(
        "self",
        verbose_name=_("run again from"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reruns",
        help_text=_("The failed or cancelled task this one runs again."),
    )

    objects = TaskLogManager()

    class Meta:
        verbose_name = _("task log")
        verbose_name_plural = _("task logs")
        ordering = ("-created_at",)
        permissions = (
            ("cancel_tasklog", _("Can cancel tasks")),
            ("retry_tasklog", _("Can run tasks again")),
        )
        indexes = (
            models.Index(fields=("status", "created_at"), name="taskqueue_status_created_idx"),
            models.Index(fields=("owner", "status"), name="taskqueue_owner_status_idx"),
            models.Index(fields=("task_type", "created_at"), name="taskqueue_type_created_idx"),
            models.Index(fields=("status", "heartbeat_at"), name="taskqueue_status_beat_idx"),
            models.Index(fields=("status", "completed_at"), name="taskqueue_status_done_idx"),
            # Walking a canvas: all tasks of one root, the children of one task, a group.
            models.Index(fields=("celery_root_id", "created_at"), name="taskqueue_canvas_root_idx"),
            models.Index(fields=("celery_parent_id",), name="taskqueue_canvas_parent_idx"),
            models.Index(fields=("celery_group_id",), name="taskqueue_canvas_group_idx"),
        )
        constraints = (
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100),
                name="taskqueue_progress_0_100",
            ),
            # One start per key and owner; system tasks (no owner) share one key space.
            # NULL keys (most tasks) are outside both partial indexes.
            models.UniqueConstraint(
                fields=("owner", "idempotency_key"),
                condition=Q(owner__isnull=False, idempotency_key__isnull=False),
                name="taskqueue_owner_idem_key_uniq",
            ),
            models.UniqueConstraint(
                fields=("idempotency_key",),
                condition=Q(owner__isnull=True, idempotency_key__isnull=False),
                name="taskqueue_system_idem_key_uniq",
            ),
        )

    def __str__(self) -> str:
        return f"{self.task_name or self.task_type or 'task'} [{self.celery_task_id}] {self.status}"

    @property
    def is_cancellable(self) -> bool:
        """Whether the task can still be cancelled (it has not finished)."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_retryable(self) -> bool:
        """Whether the task can be run again without ``force`` (it failed or was cancelled)."""
        return self.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)

    @property
    def elapsed_time(self) -> float | None:
        """Seconds from the start to the end (or now, while it runs); ``None`` before it starts."""
        if self.started_at is None:
            return None
        end = self.completed_at or timezone.now()
        return max(0.0, (end - self.started_at).total_seconds())


class TaskProgress(models.Model):
    """One recorded step of a task's progress."""

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(
        TaskLog,
        verbose_name=_("task"),
        on_delete=models.CASCADE,
        related_name="progress_history",
        # The (task, created_at) index below serves lookups by task.
        db_index=False,
    )
    progress = models.PositiveSmallIntegerField(_("progress"))
    message = models.CharField(_("message"), max_length=255, blank=True)
    data = models.JSONField(_("data"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("task progress")
        verbose_name_plural = _("task progress")
        ordering = ("created_at", "id")
        indexes = (models.Index(fields=("task", "created_at"), name="taskqueue_progress_task_idx"),)
        constraints = (
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100),
                name="taskqueue_progress_row_0_100",
            ),
        )

    def __str__(self) -> str:
        return f"{self.progress}% {self.message}".strip()


class TaskEventLog(models.Model):
    """One event in a task's audit trail."""

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(
        TaskLog,
        verbose_name=_("task"),
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
    )
    event_type = models.CharField(_("event type"), max_length=16, choices=EventType.choices)
    message = models.TextField(_("message"), blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("task event")
        verbose_name_plural = _("task events")
        ordering = ("created_at", "id")
        indexes = (models.Index(fields=("task", "created_at"), name="taskqueue_event_task_idx"),)

    def __str__(self) -> str:
        return f"{self.event_type}: {self.message}".strip()
