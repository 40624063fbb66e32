"""Pages of the test project: the live progress widget on a plain (non-admin) page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from django_taskqueue.models import TaskLog


def progress_page(request: HttpRequest) -> HttpResponse:
    """The tasks named by ``?id=`` (in that order), each with ``{% task_progress %}``.

    ``?stream=0`` and ``?poll=0`` turn the stream or the polling off,
    ``?max_streams=N`` caps the page's streams, ``?poll_interval=S`` sets the
    polling interval (seconds).
    """
    tasks = [TaskLog.objects.get(pk=pk) for pk in request.GET.getlist("id")]
    max_streams = request.GET.get("max_streams")
    poll_interval = request.GET.get("poll_interval")
    return render(
        request,
        "tests/progress.html",
        {
            "tasks": tasks,
            "stream": request.GET.get("stream") != "0",
            "poll": request.GET.get("poll") != "0",
            "max_streams": None if max_streams is None else int(max_streams),
            "poll_interval": None if poll_interval is None else float(poll_interval),
        },
    )
