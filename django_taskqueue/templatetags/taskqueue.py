"""Template tags of django-taskqueue: ``{% load taskqueue %}``.

``{% task_progress_media %}`` (once per page, in ``<head>``) includes the live
progress widget's stylesheet and script; ``{% task_progress task %}`` places one
widget that follows ``task`` until it ends. See ``docs/live-progress.md``.
"""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from django_taskqueue import live
from django_taskqueue.models import TaskLog

register = template.Library()


@register.simple_tag
def task_progress(
    task: TaskLog,
    *,
    stream: bool = True,
    poll: bool = True,
    stream_url: str | None = None,
    poll_url: str | None = None,
    compact: bool = False,
    label: str | None = None,
    poll_interval: float | None = None,
) -> SafeString:
    """A progress bar, the status and the message of ``task``, kept up to date in the browser.

    The widget follows the task over the API's event stream and polls the API's
    detail URL when the stream is refused or the browser has no
    ``EventSource``. Without the API mounted (or with ``stream=False,
    poll=False``) and no URL given, it shows the state the page was rendered with.

    Args:
        task: The task (a :class:`~django_taskqueue.models.TaskLog`).
        stream: Follow the API's event stream (when the API is mounted).
        poll: Poll the API's detail URL when the stream is not available.
        stream_url: Another event stream to follow (same events as the API's).
        poll_url: Another URL to poll: one task's state in JSON (``status``,
            ``progress``, ``progress_message``, ``error_message``).
        compact: Only the bar and the percentage (the message is its tooltip).
        label: The bar's accessible name (default: "Progress of <file or task name>").
        poll_interval: Seconds between two polls while the task changes (default 2).
    """
    api_stream, api_detail = live.api_urls(task.pk)
    return live.render_widget(
        task,
        stream_url=stream_url or (api_stream if stream else None),
        poll_url=poll_url or (api_detail if poll else None),
        compact=compact,
        label=label,
        poll_interval=poll_interval,
    )


@register.simple_tag
def task_progress_media(max_streams: int | None = None, *, stylesheet: bool = True) -> SafeString:
    """The widget's stylesheet, configuration and script (``defer``): once per page.

    Args:
        max_streams: How many event streams the page opens at most (the other
            widgets poll). Default: 2, or the ``API_STREAM_MAX_PER_USER`` cap if lower.
        stylesheet: Include ``django_taskqueue/progress.css`` (turn off to style
            the widget yourself).
    """
    return live.render_media(max_streams, stylesheet=stylesheet)
