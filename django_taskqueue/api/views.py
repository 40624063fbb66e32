"""The task API: one ViewSet, mounted at ``tasks/`` by :mod:`django_taskqueue.api.urls`."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import current_app
from celery.backends.base import DisabledBackend
from celery.result import AsyncResult
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from kombu.exceptions import OperationalError
from rest_framework import status as http
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle

from django_taskqueue import bulk, lifecycle
from django_taskqueue.api.filters import TaskLogFilter
from django_taskqueue.api.pagination import TaskPagination
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
    TaskEventSerializer,
    TaskLogDetailSerializer,
    TaskLogSerializer,
    TaskProgressSerializer,
    TaskStatusSerializer,
    UnavailableSerializer,
    startable_task,
)
from django_taskqueue.api.stream import task_events
from django_taskqueue.api.throttling import THROTTLE_SCOPES, TaskQueueScopedRateThrottle
from django_taskqueue.conf import conf
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.serialization import error_message_for
from django_taskqueue.status import (
    ACTIVE_STATUSES,
    BULK_TASK_NAME,
    TERMINAL_STATUSES,
    TaskStatus,
)
from django_taskqueue.tasks import publish_bulk

logger = logging.getLogger("django_taskqueue")

_UUID = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"

# Error responses shared by the operations (the schema documents each exactly).
_E400 = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Invalid input: an object mapping each wrong field to its messages "
    '(for a list, to an object of index -> messages), e.g. {"file_path": ["... does not exist."]}.',
)
_E401 = OpenApiResponse(ErrorSerializer, description="Not authenticated.")
_E403 = OpenApiResponse(ErrorSerializer, description="Not allowed (see the permission policy).")
_E404 = OpenApiResponse(
    ErrorSerializer, description="No such task, or one that belongs to another user."
)
_E409 = OpenApiResponse(ConflictSerializer, description="Not allowed in the task's current status.")
_E429 = OpenApiResponse(ErrorSerializer, description="Throttled (when the host sets a rate).")
_E415 = OpenApiResponse(ErrorSerializer, description="The body is not JSON.")
_E503 = OpenApiResponse(UnavailableSerializer, description="The broker could not be reached.")
_READ_ERRORS = {401: _E401, 403: _E403}


def publish_options() -> dict[str, Any]:
    """``apply_async`` options that make an unreachable broker fail fast (``API_PUBLISH_RETRIES``).

    Celery retries a failed publish by default; a request should not wait
    long for a broker that is down, so the API allows few retries, quickly.
    """
    retries = conf.API_PUBLISH_RETRIES
    if retries <= 0:
        return {"retry": False}
    return {
        "retry": True,
        "retry_policy": {
            "max_retries": retries,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
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


def _unavailable(exc: BaseException, celery_task_id: str | None) -> Response:
    logger.warning("The broker could not be reached: %s", exc)
    pk = (
        TaskLog.objects.filter(celery_task_id=celery_task_id).values_list("pk", flat=True).first()
        if celery_task_id
        else None
    )
    return Response(
        {
            "detail": "The task queue's broker could not be reached; the task was not started "
            "(it is recorded as failed). Try again later.",
            "code": "broker_unavailable",
            "id": pk,
        },
        status=http.HTTP_503_SERVICE_UNAVAILABLE,
    )


def _conflict(exc: TransitionRefused) -> Response:
    return Response({"detail": str(exc), "status": exc.status}, status=http.HTTP_409_CONFLICT)


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
    parser_classes = (JSONParser,)
    lookup_value_regex = _UUID
    schema = TaskQueueAutoSchema()

    def get_permissions(self) -> list[BasePermission]:
        return [permission() for permission in permission_classes()]

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # An EventSource asks for text/event-stream only; what goes wrong before
        # the stream starts (401, 403, 404) is answered in JSON all the same.
        return super().perform_content_negotiation(request, force=force or self.action == "stream")

    def get_throttles(self) -> list[BaseThrottle]:
        # Scoped per action; a scope is throttled only when the host sets its rate.
        self.throttle_scope = THROTTLE_SCOPES.get(self.action or "", "")
        return [*super().get_throttles(), TaskQueueScopedRateThrottle()]

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
        responses={
            201: TaskLogSerializer,
            400: _E400,
            415: _E415,
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
        serializer = CreateTaskSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = startable_task(data["task_type"])
        file = data["file_path"]
        metadata = data.get("metadata") or {}
        celery_task_id = str(uuid.uuid4())
        try:
            log = task.submit(
                args=(file["file_path"],),
                kwargs=metadata,
                owner=request.user,
                task_type=data["task_type"],
                metadata=metadata,
                file_path=file["file_path"],
                file_name=file["file_name"],
                file_size=file["file_size"],
                task_id=celery_task_id,
                **publish_options(),
            )
        except OperationalError as exc:
            return _unavailable(exc, celery_task_id)
        return Response(TaskLogSerializer(log).data, status=http.HTTP_201_CREATED)

    @extend_schema(
        summary="Start a task on each of several files (a group or a chain)",
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
        file), otherwise a chain; each child runs ``task(file_path, **metadata)``.
        The parent aggregates its children (see docs/api.md).
        """
        serializer = BulkCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        task = startable_task(data["task_type"])
        metadata = data.get("metadata") or {}
        parallel = bool(data["parallel"])
        parent, children = lifecycle.create_bulk(
            task.name,
            data["file_paths"],
            task_type=data["task_type"],
            kwargs=metadata,
            parallel=parallel,
            owner=request.user,
            max_retries=task.max_retries,
            event_metadata={"by_user_id": request.user.pk},
        )
        try:
            if parallel:
                # One message; a worker publishes the group (see django_taskqueue.bulk).
                publish_bulk.apply_async(
                    (str(parent.pk),), {"task_kwargs": metadata}, **publish_options()
                )
            else:
                bulk.publish_chain(parent, children, metadata, **publish_options())
        except OperationalError as exc:
            lifecycle.fail_bulk(
                parent.pk,
                error_message=f"could not publish the tasks: {error_message_for(exc)}",
                error_code="publish_failed",
            )
            return _unavailable(exc, parent.celery_task_id)
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
        also kills the process running it.
        """
        task_log = self.get_object()
        serializer = CancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        active_children = (
            TaskLog.objects.filter(parent=task_log, status__in=list(ACTIVE_STATUSES)).count()
            if task_log.task_name == BULK_TASK_NAME
            else 0
        )
        try:
            lifecycle.cancel(
                task_log,
                reason=serializer.validated_data["reason"],
                user=request.user,
                terminate=conf.API_CANCEL_TERMINATE,
            )
        except TransitionRefused as exc:
            return _conflict(exc)
        body = {"status": TaskStatus.CANCELLED.value, "cancelled_children": active_children}
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
        stuck in pending, processing or retrying (it is first marked failed as
        superseded). A completed task, a bulk parent, or a task whose
        arguments were redacted is a 409.
        """
        task_log = self.get_object()
        serializer = RetrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            new_log = lifecycle.rerun(
                task_log, force=serializer.validated_data["force"], user=request.user
            )
        except TransitionRefused as exc:
            return _conflict(exc)
        except OperationalError as exc:
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
        responses={200: TaskStatusSerializer, 404: _E404, **_READ_ERRORS},
        filters=False,
    )
    @action(detail=False, methods=["get"], url_path=r"status/(?P<celery_task_id>[^/]+)")
    def status(self, request: Request, celery_task_id: str) -> Response:
        """The record's status, progress and result or error, and the result backend's state.

        Works without a result backend (``celery`` is then all null).
        """
        task_log = get_object_or_404(self.get_queryset(), celery_task_id=celery_task_id)
        self.check_object_permissions(request, task_log)
        error = None
        if task_log.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            error = {"message": task_log.error_message, "code": task_log.error_code}
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
        responses={200: TaskEventSerializer(many=True), 404: _E404, **_READ_ERRORS},
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
        return paginator.get_paginated_response(TaskEventSerializer(page, many=True).data)

    @extend_schema(
        summary="All progress rows of a task (paginated)",
        responses={200: TaskProgressSerializer(many=True), 404: _E404, **_READ_ERRORS},
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
                OpenApiTypes.STR,
                description="A text/event-stream: `progress` events while the task runs, one "
                "`end` event when it has ended, `: keep-alive` comments in between.",
            ),
            404: _E404,
            **_READ_ERRORS,
        },
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Sent by a reconnecting EventSource; the stream restarts with the "
                "current state either way.",
            )
        ],
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def stream(self, request: Request, pk: str | None = None) -> StreamingHttpResponse:
        """Stream the task's status and progress until it ends.

        Behind nginx the response's ``X-Accel-Buffering: no`` header turns off
        buffering; other proxies must be told not to buffer this path.
        """
        task_log = self.get_object()
        response = StreamingHttpResponse(
            task_events(
                task_log.pk,
                poll_interval=conf.API_STREAM_POLL_INTERVAL,
                heartbeat=conf.API_STREAM_HEARTBEAT,
                max_seconds=conf.API_STREAM_MAX_SECONDS,
            ),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
