"""The task API: one ViewSet, mounted at ``tasks/`` by :mod:`django_taskqueue.api.urls`."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from celery import current_app
from celery.backends.base import DisabledBackend
from celery.result import AsyncResult
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework import status as http
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle
from rest_framework.utils.formatting import markup_description

from django_taskqueue import actions, http_policy, publishing
from django_taskqueue.api.docstrings import markdown_description
from django_taskqueue.api.filters import TaskLogFilter
from django_taskqueue.api.pagination import TaskPagination
from django_taskqueue.api.parsers import BoundedJSONParser
from django_taskqueue.api.permissions import permission_classes
from django_taskqueue.api.schema import TaskQueueAutoSchema
from django_taskqueue.api.serializers import (
    LIST_FIELDS,
    BulkCreatedSerializer,
    BulkCreateSerializer,
    CancelledSerializer,
    CancelSerializer,
    ConflictSerializer,
    CreateTaskSerializer,
    ErrorSerializer,
    RetriedSerializer,
    RetrySerializer,
    StatusCountsSerializer,
    StreamLimitSerializer,
    TaskEventSerializer,
    TaskLogDetailSerializer,
    TaskLogSerializer,
    TaskProgressSerializer,
    TaskStatusSerializer,
    UnavailableSerializer,
    exposes_details,
    hide_workers,
)
from django_taskqueue.api.stream import (
    EventStreamResponse,
    StreamSlots,
    atask_events,
    task_events,
)
from django_taskqueue.api.throttling import (
    ALSO_THROTTLED_AS,
    THROTTLE_SCOPES,
    TaskQueueScopedRateThrottle,
    client_ident,
)
from django_taskqueue.conf import conf
from django_taskqueue.exceptions import MessageRefused, PublishError, TransitionRefused
from django_taskqueue.files import resolve_allowed_file
from django_taskqueue.models import TaskLog
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import (
    TERMINAL_STATUSES,
    TaskStatus,
)

logger = logging.getLogger("django_taskqueue")

#: The request header of ``create_task`` that makes a retried request start one task only.
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")

_UUID = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
#: TaskLog.celery_task_id's max_length.
_CELERY_ID_MAX_LENGTH = 255

# Error responses shared by the operations (the schema documents each exactly).
_E400 = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Invalid input: an object mapping each wrong field (or query parameter) to its "
    'messages (for a list, to an object of index -> messages), e.g. {"file_path": ["... does not '
    'exist."]}; or {"detail": "..."} for a body that is not JSON, nests deeper than '
    "API_JSON_MAX_DEPTH or is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
)
_E401 = OpenApiResponse(ErrorSerializer, description="Not authenticated.")
_E403 = OpenApiResponse(ErrorSerializer, description="Not allowed (see the permission policy).")
_E404 = OpenApiResponse(
    ErrorSerializer, description="No such task, or one that belongs to another user."
)
_E409 = OpenApiResponse(
    ConflictSerializer,
    description="Not allowed for this task: its status, another run of it still active, a "
    "Celery task that TASK_TYPES does not list, or a file no longer inside ALLOWED_FILE_ROOTS.",
)
_E429 = OpenApiResponse(ErrorSerializer, description="Throttled (when the host sets a rate).")
_E415 = OpenApiResponse(ErrorSerializer, description="The body is not JSON.")
_E503 = OpenApiResponse(
    UnavailableSerializer,
    description="The broker could not be reached or did not confirm the task within "
    "PUBLISH_TIMEOUT (header `Retry-After`).",
)
_READ_ERRORS = {401: _E401, 403: _E403}

#: One server-sent event of the stream, as a client's parser sees it.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "end"]},
        "id": {
            "type": "string",
            "description": "`<n>-<fingerprint>`; send it back as `Last-Event-ID`.",
        },
        "retry": {
            "type": "integer",
            "minimum": 0,
            "description": "Milliseconds before reconnecting.",
        },
        "data": {
            "type": "string",
            "description": "A JSON object: the task's `id`, `status`, `progress`, "
            "`progress_message`, `error_message`, `error_code`, `started_at` and `completed_at`.",
        },
    },
}


def celery_view(celery_task_id: str) -> dict[str, Any]:
    """What Celery's result backend says about a task, without ever raising.

    With no result backend (Celery's ``DisabledBackend``) everything is null:
    the TaskLog is then the only record.
    """
    app = current_app
    try:
        backend = app.backend
    except Exception as exc:
        return {"backend": None, "state": None, "ready": None, "error": error_message_for(exc)}
    if isinstance(backend, DisabledBackend):
        return {"backend": None, "state": None, "ready": None, "error": None}
    name = type(backend).__name__
    try:
        result: AsyncResult[Any] = AsyncResult(celery_task_id, app=app)
        state = str(result.state)
        ready = bool(result.ready())
    except Exception as exc:
        logger.warning("Could not ask the result backend about %s", celery_task_id, exc_info=True)
        return {"backend": name, "state": None, "ready": None, "error": error_message_for(exc)}
    return {"backend": name, "state": state, "ready": ready, "error": None}


def _unavailable(exc: PublishError, celery_task_id: str | None) -> Response:
    """503 within ``PUBLISH_TIMEOUT``, with ``Retry-After`` and what became of the task."""
    logger.warning("Publishing a task failed: %s", exc)
    pk = (
        TaskLog.objects.filter(celery_task_id=celery_task_id).values_list("pk", flat=True).first()
        if celery_task_id
        else None
    )
    if exc.sent is None:
        body = {
            "detail": "The task queue's broker did not confirm the task in time: it may or may "
            "not have been queued, and it runs if it was. Retry with the same Idempotency-Key "
            "to get this task instead of a second one.",
            "code": "publish_unknown",
        }
    else:
        body = {
            "detail": "The task queue's broker could not be reached; the task was not started "
            "(it is recorded as failed). Try again later.",
            "code": "broker_unavailable",
        }
    return Response(
        {**body, "error": str(exc), "id": pk},
        status=http.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(publishing.retry_after())},
    )


@csrf_exempt  # it changes nothing; a POST there is a 404 too, not a CSRF page
def not_found(request: Any, *args: Any, **kwargs: Any) -> JsonResponse:
    """A JSON 404 for every other path under ``tasks/`` (a task id that is not a UUID, ...)."""
    return JsonResponse({"detail": "Not found."}, status=http.HTTP_404_NOT_FOUND)


def _conflict(exc: TransitionRefused) -> Response:
    return Response({"detail": str(exc), "status": exc.status}, status=http.HTTP_409_CONFLICT)


def _refused(
    exc: DjangoValidationError | serializers.ValidationError, task_log: TaskLog
) -> Response:
    """A 409 for a policy refusal (core's ValidationError, or a file check's)."""
    if isinstance(exc, DjangoValidationError):
        message = " ".join(exc.messages)
    else:
        detail = exc.detail
        message = " ".join(str(m) for m in detail) if isinstance(detail, list) else str(detail)
    return Response({"detail": message, "status": task_log.status}, status=http.HTTP_409_CONFLICT)


@extend_schema(tags=["tasks"])
class TaskLogViewSet(viewsets.ReadOnlyModelViewSet[TaskLog]):
    """Tracked tasks: list, detail, start, cancel, retry, progress and history.

    Every query goes through :meth:`TaskLogQuerySet.for_user
    <django_taskqueue.querysets.TaskLogQuerySet.for_user>`: a user sees their
    own tasks (another user's is a 404), staff see all. The permission policy
    is the ``API_PERMISSION_CLASSES`` setting.
    """

    queryset = TaskLog.objects.all()
    serializer_class = TaskLogSerializer
    filter_backends = (DjangoFilterBackend,)
    filterset_class = TaskLogFilter
    pagination_class = TaskPagination
    parser_classes = (BoundedJSONParser,)
    lookup_value_regex = _UUID
    schema = TaskQueueAutoSchema()

    def handle_exception(self, exc: Exception) -> Response:
        # Django raises these outside DRF's own exceptions; answer them in JSON
        # like every other error of the API, not with Django's HTML pages.
        if isinstance(exc, RequestDataTooBig):
            exc = ParseError(
                "The request body is larger than the server accepts "
                f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, DATA_UPLOAD_MAX_MEMORY_SIZE)."
            )
        elif isinstance(exc, DjangoValidationError):
            # Core policy (a refused message, ...) raises Django's ValidationError.
            exc = serializers.ValidationError(serializers.as_serializer_error(exc))
        return super().handle_exception(exc)

    def get_permissions(self) -> list[BasePermission]:
        return [permission() for permission in permission_classes()]

    def get_view_description(self, html: bool = False) -> str:
        # The docstrings are written for Sphinx; the browsable API and OPTIONS show
        # them to API users, as Markdown (a host's VIEW_DESCRIPTION_FUNCTION still
        # picks the text).
        text = markdown_description(super().get_view_description(html=False))
        return markup_description(text) if html else text

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # An EventSource asks for text/event-stream only; what goes wrong before
        # the stream starts (401, 403, 404) is answered in JSON all the same.
        return super().perform_content_negotiation(request, force=force or self.action == "stream")

    def get_throttles(self) -> list[BaseThrottle]:
        # Scoped per action; a scope is throttled only when the host sets its rate.
        self.throttle_scope = THROTTLE_SCOPES.get(self.action or "", "")
        also = ALSO_THROTTLED_AS.get(self.action or "", ())
        return [
            *super().get_throttles(),
            TaskQueueScopedRateThrottle(),
            *(TaskQueueScopedRateThrottle(scope) for scope in also),
        ]

    def get_queryset(self) -> QuerySet[TaskLog]:
        queryset: QuerySet[TaskLog] = TaskLog.objects.for_user(self.request.user)
        if self.action == "list":
            # The list never shows the large columns (result, traceback, args).
            queryset = queryset.only(*LIST_FIELDS)
        return queryset

    def filter_queryset(self, queryset: QuerySet[TaskLog, Any]) -> QuerySet[TaskLog, Any]:
        # The filters describe the list; a detail URL ignores its query string.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "retrieve":
            return TaskLogDetailSerializer
        return TaskLogSerializer

    @extend_schema(
        summary="List tasks",
        responses={200: TaskLogSerializer(many=True), 400: _E400, 404: _E404, **_READ_ERRORS},
        parameters=[
            OpenApiParameter(
                name,
                {
                    "type": "string",
                    "anyOf": [
                        {"type": "string", "format": "date"},
                        {"type": "string", "format": "date-time"},
                    ],
                },
                OpenApiParameter.QUERY,
                description=description,
            )
            for name, description in (
                ("from_date", "Created at or after: a date (YYYY-MM-DD) or an ISO 8601 date-time."),
                (
                    "to_date",
                    "Created at or before: a date (its whole day counts) or an ISO 8601 date-time.",
                ),
            )
        ],
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The caller's tasks (all tasks for staff), newest first, filtered and paginated."""
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="One task, with its newest progress and events",
        responses={200: TaskLogDetailSerializer, 404: _E404, **_READ_ERRORS},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Everything recorded about one task."""
        return super().retrieve(request, *args, **kwargs)

    # --- starting tasks ----------------------------------------------------------------

    @extend_schema(
        summary="Start a task on a file",
        request=CreateTaskSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~][ -~]*$"},
                OpenApiParameter.HEADER,
                description="A key of the client's choosing for this start (printable ASCII). "
                "A request with a key the caller used before starts nothing and answers 200 "
                "with that start's task, so a request retried after a timeout or a 503 never "
                "starts the task twice. A key whose task could not be sent at all "
                "(`broker_unavailable`) is free again.",
            )
        ],
        responses={
            201: TaskLogSerializer,
            200: OpenApiResponse(
                TaskLogSerializer,
                description="A replay: the task an earlier request with the same "
                "Idempotency-Key started (header `Idempotent-Replayed: true`).",
            ),
            400: _E400,
            415: _E415,
            422: OpenApiResponse(
                ErrorSerializer,
                description="The Idempotency-Key was used for another task type or file.",
            ),
            429: _E429,
            503: _E503,
            **_READ_ERRORS,
        },
    )
    @action(detail=False, methods=["post"])
    def create_task(self, request: Request) -> Response:
        """Start the Celery task of ``task_type`` with the file path and ``metadata`` as options.

        The task is called as ``task(file_path, **metadata)``; ``metadata`` is
        also stored on the TaskLog.
        """
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            return Response(
                {
                    "detail": f"The {IDEMPOTENCY_HEADER} header must be 1 to 255 printable "
                    "ASCII characters.",
                    "code": "invalid_idempotency_key",
                },
                status=http.HTTP_400_BAD_REQUEST,
            )
        serializer = CreateTaskSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = http_policy.startable_task(data["task_type"])
        file = data["file_path"]
        metadata = data.get("metadata") or {}
        celery_task_id = str(uuid.uuid4())
        try:
            # submit() checks the message before it writes the row: a refusal
            # (options the task cannot take, too deep...) leaves nothing behind.
            started = actions.start(
                task,
                file,
                kwargs=metadata,
                celery_task_id=celery_task_id,
                idempotency_key=key,
                owner=request.user,
                task_type=data["task_type"],
            )
        except MessageRefused as exc:
            raise serializers.ValidationError({"metadata": exc.messages}) from None
        except PublishError as exc:
            return _unavailable(exc, celery_task_id)
        except DjangoValidationError as exc:
            return Response(
                {"detail": " ".join(exc.messages), "code": "idempotency_key_reused"},
                status=http.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        log = started.task_log
        if started.replayed:
            # The key's first request started this task: answer as it was answered.
            return Response(
                TaskLogSerializer(log).data,
                status=http.HTTP_200_OK,
                headers={"Idempotent-Replayed": "true"},
            )
        return Response(TaskLogSerializer(log).data, status=http.HTTP_201_CREATED)

    @extend_schema(
        summary="Start a task on each of several files (at once or one by one)",
        request=BulkCreateSerializer,
        responses={
            201: BulkCreatedSerializer,
            400: _E400,
            415: _E415,
            429: _E429,
            503: _E503,
            **_READ_ERRORS,
        },
    )
    @action(detail=False, methods=["post"])
    def bulk_create(self, request: Request) -> Response:
        """Check every path first, record a parent and its children, then publish them.

        ``parallel`` runs a Celery group (whose id is the parent's Celery id;
        a worker publishes it, so the answer does not wait for a message per
        file), otherwise one file after the other (each file's success publishes the
        next); each child runs ``task(file_path, **metadata)``.
        The parent aggregates its children (see docs/api.md).
        """
        serializer = BulkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = http_policy.startable_task(data["task_type"])
        metadata = data.get("metadata") or {}
        parallel = bool(data["parallel"])
        parent_task_id = str(uuid.uuid4())
        try:
            started = actions.start_bulk(
                task,
                data["file_paths"],
                kwargs=metadata,
                parallel=parallel,
                parent_task_id=parent_task_id,
                task_type=data["task_type"],
                owner=request.user,
                event_metadata={"by_user_id": request.user.pk},
            )
        except MessageRefused as exc:
            raise serializers.ValidationError({"metadata": exc.messages}) from None
        except PublishError as exc:
            return _unavailable(exc, parent_task_id)
        parent, children = started.parent, started.children
        body = {
            "id": parent.pk,
            "celery_task_id": parent.celery_task_id,
            "status": parent.status,
            "files_count": len(children),
            "parallel": parallel,
        }
        return Response(BulkCreatedSerializer(body).data, status=http.HTTP_201_CREATED)

    # --- acting on a task --------------------------------------------------------------

    @extend_schema(
        summary="Cancel a task",
        request=CancelSerializer,
        responses={
            200: CancelledSerializer,
            400: _E400,
            404: _E404,
            409: _E409,
            415: _E415,
            429: _E429,
            **_READ_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Record ``cancelled`` (with the reason) at once, then revoke the Celery id.

        A running task stops at its next progress report or cancel check; a
        bulk task cancels its unfinished children. ``API_CANCEL_TERMINATE``
        also kills the process running it. A user may stop any task of theirs,
        also one the host started for them: stopping starts nothing, so the
        ``TASK_TYPES`` allow-list that governs starting and re-running does not
        apply.
        """
        task_log = self.get_object()
        serializer = CancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            cancelled = actions.cancel(
                task_log,
                reason=serializer.validated_data["reason"],
                user=request.user,
                terminate=conf.API_CANCEL_TERMINATE,
            )
        except TransitionRefused as exc:
            return _conflict(exc)
        body = {
            "status": TaskStatus.CANCELLED.value,
            "cancelled_children": len(cancelled.children),
        }
        return Response(CancelledSerializer(body).data)

    @extend_schema(
        summary="Run a failed or cancelled task again",
        request=RetrySerializer,
        responses={
            200: RetriedSerializer,
            400: _E400,
            404: _E404,
            409: _E409,
            415: _E415,
            429: _E429,
            503: _E503,
            **_READ_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Start a new run with the same arguments; the new row points back with ``retry_of``.

        Allowed for a failed or cancelled task, and with ``force`` for one
        stuck in pending, processing or retrying (it is first cancelled as
        superseded and revoked, with ``API_CANCEL_TERMINATE``). Over HTTP the
        task must be of a type ``TASK_TYPES`` lists, started on one file, and
        that file is checked again against ``ALLOWED_FILE_ROOTS``. A completed
        task, a bulk parent, a task whose arguments were redacted, one refused
        by those rules, or one with another run still active is a 409. A
        re-run counts against the ``taskqueue_create`` throttle as well.
        """
        task_log = self.get_object()
        serializer = RetrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        force = serializer.validated_data["force"]
        try:
            http_policy.check_http_rerun(task_log)
            actions.check_rerun(task_log, force=force)
            file = resolve_allowed_file(http_policy.http_rerun_file(task_log))
        except TransitionRefused as exc:
            return _conflict(exc)
        except (DjangoValidationError, serializers.ValidationError) as exc:
            return _refused(exc, task_log)
        try:
            new_log = actions.rerun(
                task_log,
                force=force,
                user=request.user,
                terminate=conf.API_CANCEL_TERMINATE,
                file=file,
            )
        except TransitionRefused as exc:
            return _conflict(exc)
        except PublishError as exc:
            new_id = (
                TaskLog.objects.filter(retry_of=task_log)
                .order_by("-created_at")
                .values_list("celery_task_id", flat=True)
                .first()
            )
            return _unavailable(exc, new_id)
        body = {
            "status": TaskStatus.RETRYING.value,
            "id": new_log.pk,
            "celery_task_id": new_log.celery_task_id,
            "retry_of": task_log.pk,
            "retry_count": new_log.retry_count,
        }
        return Response(RetriedSerializer(body).data)

    # --- reading -----------------------------------------------------------------------

    @extend_schema(
        summary="Count the caller's tasks per status",
        responses={200: StatusCountsSerializer, **_READ_ERRORS},
        filters=False,
    )
    @action(detail=False, methods=["get"])
    def progress(self, request: Request) -> Response:
        """How many of the caller's visible tasks are in each status, and the total (one query)."""
        counts = TaskLog.objects.for_user(request.user).status_counts()
        return Response(StatusCountsSerializer(counts).data)

    @extend_schema(
        summary="A task by its Celery id, joined with what Celery knows",
        responses={200: TaskStatusSerializer, 400: _E400, 404: _E404, **_READ_ERRORS},
        parameters=[
            OpenApiParameter(
                "celery_task_id",
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": _CELERY_ID_MAX_LENGTH,
                    "pattern": "^[^/\\u0000]+$",
                },
                OpenApiParameter.PATH,
                description="The Celery id of the task (a longer one, or one with a NUL "
                "character, is a 400).",
            )
        ],
        filters=False,
    )
    @action(detail=False, methods=["get"], url_path=r"status/(?P<celery_task_id>[^/]+)")
    def status(self, request: Request, celery_task_id: str) -> Response:
        """The record's status, progress and result or error, and the result backend's state.

        Works without a result backend (``celery`` is then all null).
        """
        if len(celery_task_id) > _CELERY_ID_MAX_LENGTH or "\x00" in celery_task_id:
            # No id can be so; PostgreSQL would refuse the NUL in the query (a 500).
            raise serializers.ValidationError(
                {
                    "celery_task_id": [
                        f"A Celery task id has at most {_CELERY_ID_MAX_LENGTH} characters "
                        "and no NUL character."
                    ]
                }
            )
        task_log = get_object_or_404(self.get_queryset(), celery_task_id=celery_task_id)
        self.check_object_permissions(request, task_log)
        error = None
        if task_log.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            message = task_log.error_message
            if not exposes_details(self.get_serializer_context()):
                message = hide_workers(message, [task_log.worker])
            error = {"message": message, "code": task_log.error_code}
        body = {
            "id": task_log.pk,
            "celery_task_id": task_log.celery_task_id,
            "status": task_log.status,
            "ready": task_log.status in TERMINAL_STATUSES,
            "progress": task_log.progress,
            "progress_message": task_log.progress_message,
            "result": task_log.result if task_log.status == TaskStatus.COMPLETED else None,
            "error": error,
            "celery": celery_view(task_log.celery_task_id),
        }
        return Response(TaskStatusSerializer(body).data)

    @extend_schema(
        summary="All events of a task (paginated)",
        responses={200: TaskEventSerializer(many=True), 400: _E400, 404: _E404, **_READ_ERRORS},
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The task's audit trail, oldest first."""
        task_log = self.get_object()
        paginator = TaskPagination()
        page = paginator.paginate_queryset(
            task_log.events.order_by("created_at", "id"), request, self
        )
        context = {**self.get_serializer_context(), "worker_hostnames": [task_log.worker]}
        return paginator.get_paginated_response(
            TaskEventSerializer(page, many=True, context=context).data
        )

    @extend_schema(
        summary="All progress rows of a task (paginated)",
        responses={
            200: TaskProgressSerializer(many=True),
            400: _E400,
            404: _E404,
            **_READ_ERRORS,
        },
        filters=False,
    )
    @action(detail=True, methods=["get"], url_path="progress-history")
    def progress_history(self, request: Request, pk: str | None = None) -> Response:
        """The task's recorded progress steps, oldest first."""
        task_log = self.get_object()
        paginator = TaskPagination()
        rows = task_log.progress_history.order_by("created_at", "id")
        page = paginator.paginate_queryset(rows, request, self)
        return paginator.get_paginated_response(TaskProgressSerializer(page, many=True).data)

    @extend_schema(
        summary="Follow a task live (server-sent events)",
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                _SSE_EVENT,
                description="A text/event-stream: `progress` events while the task runs, one "
                "`end` event when it has ended, `: keep-alive` comments in between. After "
                "`API_STREAM_MAX_SECONDS` the stream ends with a `retry:` hint; the client "
                "reconnects with `Last-Event-ID`.",
            ),
            404: _E404,
            429: OpenApiResponse(
                StreamLimitSerializer,
                description="Throttled (the `taskqueue_stream` scope, when the host sets a "
                "rate), or the user already holds `API_STREAM_MAX_PER_USER` open streams. "
                "`Retry-After` says when to try again.",
            ),
            **_READ_ERRORS,
        },
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Sent by a reconnecting EventSource: the id of the last event "
                "received. The stream then sends only what changed since (an id it did not "
                "send is ignored).",
            ),
            OpenApiParameter(
                "Retry-After",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                response=[429],
                description="Seconds to wait before opening the stream again.",
            ),
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def stream(self, request: Request, pk: str | None = None) -> StreamingHttpResponse | Response:
        """Stream the task's status and progress until it ends, or for ``API_STREAM_MAX_SECONDS``.

        Behind nginx the response's ``X-Accel-Buffering: no`` header turns off
        buffering; other proxies must be told not to buffer this path.
        """
        task_log = self.get_object()
        lease = None
        limit = conf.API_STREAM_MAX_PER_USER
        max_seconds = conf.API_STREAM_MAX_SECONDS
        if limit is not None:
            slots = StreamSlots(
                client_ident(request), limit, poll_interval=conf.API_STREAM_POLL_INTERVAL
            )
            lease = slots.acquire(ends_at=time.time() + max_seconds)
            if lease is None:
                wait = slots.retry_after()
                return Response(
                    {
                        "detail": f"Too many open streams: at most {limit} per user. Close "
                        f"one, or try again in {wait} seconds.",
                        "code": "too_many_streams",
                    },
                    status=http.HTTP_429_TOO_MANY_REQUESTS,
                    headers={"Retry-After": str(wait)},
                )
        options: dict[str, Any] = {
            "poll_interval": conf.API_STREAM_POLL_INTERVAL,
            "heartbeat": conf.API_STREAM_HEARTBEAT,
            "max_seconds": max_seconds,
            "last_event_id": request.headers.get("Last-Event-ID"),
            "lease": lease,
            "hide_worker": not exposes_details({"request": request}),
        }
        # Under ASGI a synchronous iterator would be read to its end before the
        # first byte is sent (Django has to consume it in a thread): serve an
        # asynchronous one there.
        if isinstance(request._request, ASGIRequest):
            return EventStreamResponse(atask_events(task_log.pk, **options), lease=lease)
        return EventStreamResponse(task_events(task_log.pk, **options), lease=lease)
