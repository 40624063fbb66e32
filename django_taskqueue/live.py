"""Live progress in the browser: the widget's markup, and the state it follows.

The widget is ``static/django_taskqueue/progress.js`` (plain JavaScript, no
build step). It follows one task over the API's server-sent event stream
(``GET /api/tasks/{id}/stream/``) or, when the stream is not available, by
polling a URL that answers the task's state in JSON; either way it receives the
fields of :data:`LIVE_FIELDS`. The markup is rendered here, for the
``{% task_progress %}`` template tag (:mod:`django_taskqueue.templatetags.taskqueue`)
and for the admin, so both look and behave alike.

This module needs only Django: it finds the API's URLs by name, and works
without them (see :func:`api_urls`).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from django_taskqueue.conf import conf
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES, TaskStatus

#: The columns a live view reads, and the keys of the state the widget receives
#: (with ``id``): the event stream's events and the admin's status view carry them.
LIVE_FIELDS = (
    "status",
    "progress",
    "progress_message",
    "error_message",
    "error_code",
    "started_at",
    "completed_at",
)

#: Streams one page opens at most (the others poll), below the per-user cap.
DEFAULT_PAGE_STREAMS = 2

#: The id of the JSON block that configures the widget (``{% task_progress_media %}``).
CONFIG_ELEMENT_ID = "taskqueue-progress-config"


def live_state(task: TaskLog) -> dict[str, Any]:
    """What the widget receives about ``task``: its id and :data:`LIVE_FIELDS`."""
    return {"id": str(task.pk), **{name: getattr(task, name) for name in LIVE_FIELDS}}


def api_urls(pk: uuid.UUID | str) -> tuple[str | None, str | None]:
    """The API's stream and detail URLs of a task, or ``(None, None)`` without the API.

    The API is found by its URL names (``django_taskqueue_api:tasklog-stream``
    and ``...:tasklog-detail``), so a project that does not mount it, or does
    not have Django REST Framework, gets ``None`` rather than an error.
    """
    try:
        stream = reverse("django_taskqueue_api:tasklog-stream", args=[pk])
        detail = reverse("django_taskqueue_api:tasklog-detail", args=[pk])
    except NoReverseMatch:
        return None, None
    return stream, detail


def status_labels() -> dict[str, str]:
    """Each status's label, in the active language (the widget shows them)."""
    return {str(value): str(label) for value, label in TaskStatus.choices}


def widget_context(
    task: TaskLog,
    *,
    stream_url: str | None = None,
    poll_url: str | None = None,
    compact: bool = False,
    label: str | None = None,
    poll_interval: float | None = None,
) -> dict[str, Any]:
    """The template context of one widget (``django_taskqueue/progress.html``).

    A task that has ended gets no URL: the widget shows its final state and
    follows nothing.
    """
    percent = max(0, min(100, int(task.progress or 0)))
    ended = task.status in TERMINAL_STATUSES
    message = task.progress_message
    # An ended task shows why it ended, unless the page's query left the (possibly
    # large) error out, as the admin's list does: reading it would cost a query a row.
    if (
        task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
        and "error_message" not in task.get_deferred_fields()
        and task.error_message
    ):
        message = task.error_message
    name = task.file_name or task.task_name or task.task_type or str(task.pk)
    return {
        "task_id": str(task.pk),
        "status": task.status,
        "status_label": task.get_status_display(),
        "progress": percent,
        "message": message,
        "value_text": f"{percent}% {message}".strip(),
        "label": label or _("Progress of %(task)s") % {"task": name},
        "stream_url": None if ended else stream_url,
        "poll_url": None if ended else poll_url,
        "poll_interval_ms": None if poll_interval is None else round(poll_interval * 1000),
        "compact": compact,
    }


def render_widget(task: TaskLog, **options: Any) -> SafeString:
    """The widget's HTML for ``task``; ``options`` are those of :func:`widget_context`."""
    return SafeString(
        render_to_string("django_taskqueue/progress.html", widget_context(task, **options))
    )


def page_streams(max_streams: int | None = None) -> int:
    """How many streams one page opens: ``max_streams``, else at most the per-user cap."""
    if max_streams is not None:
        return max(0, int(max_streams))
    cap = conf.API_STREAM_MAX_PER_USER
    return DEFAULT_PAGE_STREAMS if cap is None else min(DEFAULT_PAGE_STREAMS, cap)


def media_context(max_streams: int | None = None, *, stylesheet: bool = True) -> dict[str, Any]:
    """The context of ``django_taskqueue/progress_media.html``: the widget's configuration."""
    return {
        "stylesheet": stylesheet,
        "config_id": CONFIG_ELEMENT_ID,
        "config": {
            "labels": status_labels(),
            "terminal": sorted(TERMINAL_STATUSES),
            "maxStreams": page_streams(max_streams),
        },
    }


def render_media(max_streams: int | None = None, *, stylesheet: bool = True) -> SafeString:
    """The stylesheet (unless ``stylesheet`` is false), configuration and script of the widget."""
    context = media_context(max_streams, stylesheet=stylesheet)
    return SafeString(render_to_string("django_taskqueue/progress_media.html", context))
