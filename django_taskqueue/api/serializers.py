"""Serializers of the task API: tasks, their history, requests and error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from django_taskqueue import http_policy
from django_taskqueue.api.fields import StrictBooleanField, StrictCharField
from django_taskqueue.api.schema import METADATA_SCHEMA
from django_taskqueue.conf import conf
from django_taskqueue.files import MAX_PATH_LENGTH, resolve_allowed_file
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress
from django_taskqueue.serialization import unstorable_text
from django_taskqueue.status import BULK_TASK_NAME, TaskStatus

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
    "celery_parent_id",
    "celery_root_id",
    "celery_group_id",
    "created_at",
    "started_at",
    "completed_at",
)


# --- what non-staff users see ------------------------------------------------------------

#: Event metadata that names the servers or the people behind a task: shown to staff, and
#: to everyone when ``API_EXPOSE_ERROR_DETAILS`` is on.
PRIVATE_EVENT_KEYS = frozenset({"worker", "workers", "hostname", "by_user_id", "by_username"})

_STAFF_ONLY = " Empty for users who are not staff, unless API_EXPOSE_ERROR_DETAILS."

#: What a worker's hostname becomes in the messages that others see.
HIDDEN_WORKER = "a worker"


def exposes_details(context: Mapping[str, Any]) -> bool:
    """Whether the request's user may see tracebacks, hostnames and who acted on a task.

    Staff always may; other users only when ``API_EXPOSE_ERROR_DETAILS`` is on.
    A serializer used without a request (in code) shows everything.
    """
    request = context.get("request")
    if request is None or conf.API_EXPOSE_ERROR_DETAILS:
        return True
    return bool(getattr(request.user, "is_staff", False))


def hide_workers(text: str, hostnames: Iterable[str]) -> str:
    """``text`` with each of ``hostnames`` replaced by :data:`HIDDEN_WORKER`."""
    for hostname in sorted({h for h in hostnames if isinstance(h, str) and h}, key=len)[::-1]:
        text = text.replace(hostname, HIDDEN_WORKER)
    return text


def _event_hostnames(metadata: Any) -> list[str]:
    if not isinstance(metadata, Mapping):
        return []
    names = [metadata.get("worker"), metadata.get("hostname")]
    workers = metadata.get("workers")
    if isinstance(workers, list):
        names.extend(workers)
    return [name for name in names if isinstance(name, str)]


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
    """One event of the audit trail.

    For a user who is not staff (unless ``API_EXPOSE_ERROR_DETAILS``), the
    metadata leaves out :data:`PRIVATE_EVENT_KEYS` and the message names no
    worker host.
    """

    class Meta:
        model = TaskEventLog
        fields = ("id", "event_type", "message", "metadata", "created_at")
        read_only_fields = fields

    def to_representation(self, instance: TaskEventLog) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if exposes_details(self.context):
            return data
        metadata = data.get("metadata")
        hostnames = [*_event_hostnames(metadata), *self.context.get("worker_hostnames", ())]
        if isinstance(metadata, Mapping):
            data["metadata"] = {k: v for k, v in metadata.items() if k not in PRIVATE_EVENT_KEYS}
        data["message"] = hide_workers(data.get("message") or "", hostnames)
        return data


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
            "eta",
            "priority",
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
        extra_kwargs: ClassVar[dict[str, dict[str, Any]]] = {
            "traceback": {"help_text": "The failure's traceback." + _STAFF_ONLY},
            "worker": {"help_text": "The hostname of the worker that ran it." + _STAFF_ONLY},
            "metadata": {"help_text": "The metadata it was started with, secrets redacted."},
            "kwargs": {"help_text": "Its keyword arguments, secrets redacted."},
            "args": {"help_text": "Its positional arguments, secrets redacted."},
        }

    def to_representation(self, instance: TaskLog) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if not exposes_details(self.context):
            # A traceback names server paths, the worker field a host: staff only.
            data["traceback"] = ""
            data["worker"] = ""
            data["error_message"] = hide_workers(data["error_message"] or "", [instance.worker])
        return data

    @extend_schema_field(TaskProgressSerializer(many=True))
    def get_progress_history(self, obj: TaskLog) -> list[dict[str, Any]]:
        rows = list(obj.progress_history.order_by("-created_at", "-id")[:DETAIL_HISTORY_LIMIT])
        return list(TaskProgressSerializer(list(reversed(rows)), many=True).data)

    @extend_schema_field(TaskEventSerializer(many=True))
    def get_events(self, obj: TaskLog) -> list[dict[str, Any]]:
        rows = list(obj.events.order_by("-created_at", "-id")[:DETAIL_HISTORY_LIMIT])
        context = {**self.context, "worker_hostnames": [obj.worker]}
        return list(TaskEventSerializer(list(reversed(rows)), many=True, context=context).data)

    @extend_schema_field(StatusCountsSerializer(allow_null=True))
    def get_children(self, obj: TaskLog) -> dict[str, int] | None:
        if obj.task_name != BULK_TASK_NAME:
            return None
        return TaskLog.objects.filter(parent=obj).status_counts()


# --- requests -------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "string",
        "minLength": 2,
        "maxLength": MAX_PATH_LENGTH,
        # Absolute, and no NUL: what the API refuses before it touches the disk.
        "pattern": "^/[^\\x00]+$",
    }
)
class AllowedFileField(serializers.CharField):
    """An absolute path to a file inside ``ALLOWED_FILE_ROOTS``; validates to its description."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_PATH_LENGTH)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        path = super().to_internal_value(data)
        try:
            # The core policy checks the length first, before any resolving.
            return resolve_allowed_file(path)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


@extend_schema_field(METADATA_SCHEMA)
class MetadataField(serializers.JSONField):
    """A JSON object no larger than ``API_METADATA_MAX_BYTES`` (as compact JSON).

    No string in it (key or value, at any depth) may hold a NUL character or a
    lone surrogate: no database stores them as text. Its depth is bounded by the
    parser (``API_JSON_MAX_DEPTH``).
    """

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, Mapping):
            raise serializers.ValidationError("Must be a JSON object.")
        problem = unstorable_text(value, "metadata")
        if problem is not None:
            raise serializers.ValidationError(problem)
        try:
            size = len(json.dumps(value, separators=(",", ":")).encode())
        except RecursionError:  # deeper than any parser lets through
            raise serializers.ValidationError("Is nested too deeply.") from None
        limit = conf.API_METADATA_MAX_BYTES
        if size > limit:
            raise serializers.ValidationError(
                f"Is {size} bytes as JSON; the limit is {limit} (API_METADATA_MAX_BYTES)."
            )
        return dict(value)


class _TaskTypeField(serializers.ChoiceField):
    """One of the ``TASK_TYPES`` keys, read when the serializer is built (the schema lists them).

    Whether a type may be started is core policy
    (:func:`django_taskqueue.http_policy.startable_task`); its refusal is a 400 here.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=sorted(conf.TASK_TYPES), **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        try:
            http_policy.startable_task(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages, code=exc.code) from None
        return data


class CreateTaskSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/create_task/``."""

    file_path = AllowedFileField(
        help_text="Absolute path of the file, inside one of the ALLOWED_FILE_ROOTS."
    )
    task_type = serializers.CharField(help_text="One of the TASK_TYPES keys.")
    metadata = MetadataField(
        required=False,
        help_text="Options for the task: passed as its keyword arguments and stored on the task. "
        "No key or string in it, at any depth, may hold a NUL character or a lone surrogate; "
        "at most API_METADATA_MAX_BYTES as compact JSON.",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["task_type"] = _TaskTypeField(help_text="One of the TASK_TYPES keys.")
        return fields


class _FilePathsField(serializers.ListField):
    """A list of allowed files whose length is checked before any item is.

    DRF's ``ListField`` validates every item, then the length: a list far over
    the limit had each of its paths resolved on the disk first.
    """

    def to_internal_value(self, data: Any) -> Any:
        limit = self.max_length
        if isinstance(data, list) and limit is not None and len(data) > limit:
            raise serializers.ValidationError(
                f"{len(data)} files were given; the limit is {limit} (API_BULK_MAX_FILES)."
            )
        return super().to_internal_value(data)


def _file_paths_field() -> serializers.ListField:
    return _FilePathsField(
        child=AllowedFileField(),
        allow_empty=False,
        min_length=1,
        max_length=conf.API_BULK_MAX_FILES,  # the live limit: the schema states it (maxItems)
        help_text="Absolute paths inside the ALLOWED_FILE_ROOTS (at most API_BULK_MAX_FILES); "
        "all are checked before anything starts.",
    )


class BulkCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/bulk_create/``."""

    file_paths = _file_paths_field()
    task_type = serializers.CharField(help_text="One of the TASK_TYPES keys.")
    parallel = StrictBooleanField(
        default=True, help_text="Run the files at once (a Celery group) or one by one, in order."
    )
    metadata = MetadataField(
        required=False,
        help_text="Keyword arguments of every task, stored on each child. No key or string in "
        "it may hold a NUL character or a lone surrogate; at most API_METADATA_MAX_BYTES.",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["task_type"] = _TaskTypeField(help_text="One of the TASK_TYPES keys.")
        fields["file_paths"] = _file_paths_field()
        return fields


class _ReasonField(StrictCharField):
    """A cancel reason: no NUL, stated as a pattern so the schema shows the rule.

    It replaces DRF's own NUL validator, which says the same thing but which
    the schema cannot show.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            *(v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)),
            # "+": a blank reason is allowed apart, and the schema says so in a second branch.
            RegexValidator(r"^[^\x00]+$", "Must not contain a NUL character."),
        ]


class CancelSerializer(serializers.Serializer[dict[str, Any]]):
    """The body of ``POST /api/tasks/{id}/cancel/`` (optional)."""

    reason = _ReasonField(
        required=False,
        allow_blank=True,
        max_length=1000,
        default="",
        help_text="Why; recorded. No NUL character.",
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


class StreamLimitSerializer(serializers.Serializer[dict[str, Any]]):
    """429 on opening a stream: throttled, or too many streams open (``code``)."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(
        choices=["too_many_streams"],
        required=False,
        help_text="Present when the user holds API_STREAM_MAX_PER_USER streams already.",
    )


class UnavailableSerializer(serializers.Serializer[dict[str, Any]]):
    """503: the broker could not be reached (the task is failed) or did not confirm it."""

    detail = serializers.CharField()
    code = serializers.ChoiceField(
        choices=["broker_unavailable", "publish_unknown"],
        help_text="broker_unavailable: nothing was sent, the task is failed (publish_failed). "
        "publish_unknown: the task may be queued; it stays pending and runs if it is.",
    )
    error = serializers.CharField(help_text="What the broker or Celery said.")
    id = serializers.UUIDField(allow_null=True, help_text="The task's id, when recorded.")
