"""Serializers of the task API: tasks, their history, requests and error bodies."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from celery import current_app
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from django_taskqueue.api.fields import StrictBooleanField, StrictCharField
from django_taskqueue.conf import conf
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress
from django_taskqueue.status import BULK_TASK_NAME, TaskStatus
from django_taskqueue.tracked import TrackedTask

#: How many of the newest progress rows and events the detail includes; the
#: ``progress-history`` and ``events`` sub-resources page through all of them.
DETAIL_HISTORY_LIMIT = 50

#: The TaskLog columns the list reads (the large ones, like the traceback, are left out).
LIST_FIELDS = (
    "id",
    "celery_task_id",
    "task_name",
    "task_type",
    "status",
    "progress",
    "progress_message",
    "file_name",
    "file_size",
    "retry_count",
    "owner",
    "parent",
    "retry_of",
    "created_at",
    "started_at",
    "completed_at",
)


# --- tasks ------------------------------------------------------------------------------


class TaskLogSerializer(serializers.ModelSerializer[TaskLog]):
    """A task as the list shows it (also the body of a created task)."""

    class Meta:
        model = TaskLog
        fields = LIST_FIELDS
        read_only_fields = LIST_FIELDS


class TaskProgressSerializer(serializers.ModelSerializer[TaskProgress]):
    """One recorded progress step."""

    class Meta:
        model = TaskProgress
        fields = ("id", "progress", "message", "data", "created_at")
        read_only_fields = fields


class TaskEventSerializer(serializers.ModelSerializer[TaskEventLog]):
    """One event of the audit trail."""

    class Meta:
        model = TaskEventLog
        fields = ("id", "event_type", "message", "metadata", "created_at")
        read_only_fields = fields


class StatusCountsSerializer(serializers.Serializer[dict[str, int]]):
    """Tasks per status, and the total."""

    pending = serializers.IntegerField()
    processing = serializers.IntegerField()
    retrying = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    total = serializers.IntegerField()


class TaskLogDetailSerializer(serializers.ModelSerializer[TaskLog]):
    """A task with everything recorded about it, its newest history and events."""

    is_cancellable = serializers.BooleanField(read_only=True)
    is_retryable = serializers.BooleanField(read_only=True)
    elapsed_time = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="Seconds from the start to the end (or to now while it runs).",
    )
    progress_history = serializers.SerializerMethodField(
        help_text=f"The newest {DETAIL_HISTORY_LIMIT} progress rows, oldest first; "
        "all of them at progress-history/."
    )
    events = serializers.SerializerMethodField(
        help_text=f"The newest {DETAIL_HISTORY_LIMIT} events, oldest first; all of them at events/."
    )
    children = serializers.SerializerMethodField(
        help_text="For a bulk task: its children per status; null otherwise."
    )

    class Meta:
        model = TaskLog
        fields = (
            *LIST_FIELDS,
            "queue",
            "error_message",
            "error_code",
            "traceback",
            "result",
            "max_retries",
            "attempt",
            "next_retry_at",
            "cancelled_at",
            "heartbeat_at",
            "worker",
            "tags",
            "metadata",
            "args",
            "kwargs",
            "args_redacted",
            "is_cancellable",
            "is_retryable",
            "elapsed_time",
            "progress_history",
            "events",
            "children",
        )
        read_only_fields = fields

    @extend_schema_field(TaskProgressSerializer(many=True))
    def get_progress_history(self, obj: TaskLog) -> list[dict[str, Any]]:
        rows = list(obj.progress_history.order_by("-created_at", "-id")[:DETAIL_HISTORY_LIMIT])
        return list(TaskProgressSerializer(list(reversed(rows)), many=True).data)

    @extend_schema_field(TaskEventSerializer(many=True))
    def get_events(self, obj: TaskLog) -> list[dict[str, Any]]:
        rows = list(obj.events.order_by("-created_at", "-id")[:DETAIL_HISTORY_LIMIT])
        return list(TaskEventSerializer(list(reversed(rows)), many=True).data)

    @extend_schema_field(StatusCountsSerializer(allow_null=True))
    def get_children(self, obj: TaskLog) -> dict[str, int] | None:
        if obj.task_name != BULK_TASK_NAME:
            return None
        return TaskLog.objects.filter(parent=obj).status_counts()


# --- requests -------------------------------------------------------------------------


def resolve_allowed_file(path: str) -> dict[str, Any]:
    """Check a file path given over HTTP and describe the file.

    The path must be absolute, and after resolving symlinks and ``..`` it must
    lie inside one of ``ALLOWED_FILE_ROOTS`` (also resolved) and be a regular
    file. The roots are checked before existence, so the answer never tells
    whether a file outside them exists.

    Returns:
        ``{"file_path": <the resolved path>, "file_name": ..., "file_size": ...}``.

    Raises:
        serializers.ValidationError: with a message that says what is wrong.
    """
    if "\x00" in path:
        raise serializers.ValidationError("The path must not contain NUL characters.")
    if not os.path.isabs(path):
        raise serializers.ValidationError(f"{path!r} is not an absolute path.")
    roots = [os.path.realpath(root) for root in conf.ALLOWED_FILE_ROOTS]
    if not roots:
        raise serializers.ValidationError(
            "No file can be processed: the ALLOWED_FILE_ROOTS setting names no directory."
        )
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise serializers.ValidationError(f"{path!r} is outside the allowed directories.")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise serializers.ValidationError(f"{path!r} does not exist.") from None
    except OSError as exc:
        raise serializers.ValidationError(f"{path!r} cannot be read: {exc.strerror}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise serializers.ValidationError(f"{path!r} is not a regular file.")
    return {"file_path": real, "file_name": os.path.basename(real), "file_size": info.st_size}


@extend_schema_field(OpenApiTypes.STR)
class AllowedFileField(serializers.CharField):
    """An absolute path to a file inside ``ALLOWED_FILE_ROOTS``; validates to its description."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 1024)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        path = super().to_internal_value(data)
        return resolve_allowed_file(path)


@extend_schema_field({"type": "object", "additionalProperties": True})
class MetadataField(serializers.JSONField):
    """A JSON object no larger than ``API_METADATA_MAX_BYTES`` (as compact JSON)."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, Mapping):
            raise serializers.ValidationError("Must be a JSON object.")
        size = len(json.dumps(value, separators=(",", ":")).encode())
        limit = conf.API_METADATA_MAX_BYTES
        if size > limit:
            raise serializers.ValidationError(
                f"Is {size} bytes as JSON; the limit is {limit} (API_METADATA_MAX_BYTES)."
            )
        return dict(value)


def startable_task(task_type: str) -> TrackedTask:
    """The TrackedTask that ``TASK_TYPES`` maps ``task_type`` to.

    Raises:
        serializers.ValidationError: the type is unknown, or its Celery task is
            not a registered TrackedTask in this process.
    """
    name = conf.TASK_TYPES.get(task_type)
    if name is None:
        known = ", ".join(sorted(conf.TASK_TYPES)) or "none are configured"
        raise serializers.ValidationError(
            f"{task_type!r} is not a task type that can be started here; the types are: {known}."
        )
    task = current_app.tasks.get(name)
    if not isinstance(task, TrackedTask):
        raise serializers.ValidationError(
            f"The task type {task_type!r} maps to {name!r}, which is not a registered "
            "TrackedTask in this process."
        )
    return task


class _TaskTypeField(serializers.ChoiceField):
    """One of the ``TASK_TYPES`` keys, read when the serializer is built (the schema lists them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=sorted(conf.TASK_TYPES), **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        startable_task(data)
        return data


class CreateTaskSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/create_task/``."""

    file_path = AllowedFileField(
        help_text="Absolute path of the file, inside one of the ALLOWED_FILE_ROOTS."
    )
    task_type = serializers.CharField(help_text="One of the TASK_TYPES keys.")
    metadata = MetadataField(
        required=False,
        help_text="Options for the task: passed as its keyword arguments and stored on the task.",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["task_type"] = _TaskTypeField(help_text="One of the TASK_TYPES keys.")
        return fields


class BulkCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/bulk_create/``."""

    file_paths = serializers.ListField(
        child=AllowedFileField(),
        allow_empty=False,
        min_length=1,
        help_text="Absolute paths inside the ALLOWED_FILE_ROOTS (at most API_BULK_MAX_FILES); "
        "all are checked before anything starts.",
    )
    task_type = serializers.CharField(help_text="One of the TASK_TYPES keys.")
    parallel = StrictBooleanField(
        default=True, help_text="Run the files at once (a Celery group) or one by one (a chain)."
    )
    metadata = MetadataField(
        required=False, help_text="Keyword arguments of every task, stored on each child."
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["task_type"] = _TaskTypeField(help_text="One of the TASK_TYPES keys.")
        # The live limit, so the schema states it (maxItems).
        fields["file_paths"].max_length = conf.API_BULK_MAX_FILES  # type: ignore[attr-defined]
        return fields

    def validate_file_paths(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = conf.API_BULK_MAX_FILES
        if len(value) > limit:
            raise serializers.ValidationError(
                f"{len(value)} files were given; the limit is {limit} (API_BULK_MAX_FILES)."
            )
        return value


class CancelSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/{id}/cancel/`` (optional)."""

    reason = StrictCharField(
        required=False, allow_blank=True, max_length=1000, default="", help_text="Why; recorded."
    )


class RetrySerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/{id}/retry/`` (optional)."""

    force = StrictBooleanField(
        default=False, help_text="Also retry a task still pending or processing (stuck)."
    )


# --- responses --------------------------------------------------------------------------


class CancelledSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer to a cancel."""

    status = serializers.CharField(help_text='Always "cancelled".')
    cancelled_children = serializers.IntegerField(
        help_text="For a bulk task: how many of its unfinished children were cancelled with it."
    )


class RetriedSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer to a retry: the new run."""

    status = serializers.CharField(help_text='Always "retrying": the new run is queued.')
    id = serializers.UUIDField(help_text="The new run's id.")
    celery_task_id = serializers.CharField(help_text="The new run's Celery id.")
    retry_of = serializers.UUIDField(help_text="The task that was retried.")
    retry_count = serializers.IntegerField()


class BulkCreatedSerializer(serializers.Serializer[dict[str, Any]]):
    """The answer to a bulk create: the parent task."""

    id = serializers.UUIDField(help_text="The parent task's id.")
    celery_task_id = serializers.CharField(
        help_text="The parent's id: the Celery group id of a parallel run."
    )
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    files_count = serializers.IntegerField()
    parallel = serializers.BooleanField()


class CeleryStateSerializer(serializers.Serializer[dict[str, Any]]):
    """What Celery's result backend knows about a task."""

    backend = serializers.CharField(
        allow_null=True, help_text="The result backend's class; null when there is none."
    )
    state = serializers.CharField(
        allow_null=True,
        help_text="Celery's state (PENDING, STARTED, SUCCESS, ...); null if unknown.",
    )
    ready = serializers.BooleanField(allow_null=True)
    error = serializers.CharField(
        allow_null=True, help_text="Why the backend could not be asked, if it could not."
    )


class TaskErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """How a failed or cancelled task ended."""

    message = serializers.CharField()
    code = serializers.CharField()


class TaskStatusSerializer(serializers.Serializer[dict[str, Any]]):
    """``GET /api/tasks/status/{celery_task_id}/``: the record joined with Celery's view."""

    id = serializers.UUIDField()
    celery_task_id = serializers.CharField()
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    ready = serializers.BooleanField(help_text="The task has ended (completed, failed, cancelled).")
    progress = serializers.IntegerField()
    progress_message = serializers.CharField(allow_blank=True)
    result = serializers.JSONField(allow_null=True, help_text="The result, once completed.")
    error = TaskErrorSerializer(allow_null=True, help_text="Set when it failed or was cancelled.")
    celery = CeleryStateSerializer()


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """An error: 401, 403, 404, 415, 429."""

    detail = serializers.CharField()


class ConflictSerializer(serializers.Serializer[dict[str, Any]]):
    """409: the action is not allowed in the task's current status."""

    detail = serializers.CharField()
    status = serializers.ChoiceField(choices=TaskStatus.choices, help_text="The task's status.")


class UnavailableSerializer(serializers.Serializer[dict[str, Any]]):
    """503: the broker could not be reached; the task was recorded as failed, not left pending."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=["broker_unavailable"])
    id = serializers.UUIDField(allow_null=True, help_text="The failed task's id, when recorded.")
