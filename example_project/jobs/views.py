"""The example's pages: a home page listing your tasks, and the report download."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from example_project import urls as project_urls

_CONTENT_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Links to the admin and the API, and the signed-in user's latest tasks."""
    tasks = (
        TaskLog.objects.for_user(request.user).order_by("-created_at")[:20]
        if request.user.is_authenticated
        else []
    )
    return render(
        request,
        "jobs/home.html",
        {"tasks": tasks, "api": project_urls.API_MOUNTED, "flower": settings.HAS_FLOWER},
    )


@login_required
@require_GET
def download_report(request: HttpRequest, celery_task_id: str) -> FileResponse:
    """Send a generated report to its owner (or to staff); anyone else gets a 404.

    A 404 rather than a 403, so the URL does not tell a stranger that the report exists.
    """
    log = (
        TaskLog.objects.for_user(request.user)
        .filter(
            celery_task_id=celery_task_id,
            task_name="jobs.tasks.generate_report",
            status=TaskStatus.COMPLETED,
        )
        .first()
    )
    result = log.result if log is not None else None
    fmt = result.get("format") if isinstance(result, dict) else None
    if log is None or fmt not in _CONTENT_TYPES:
        raise Http404("no such report")
    reports = Path(settings.REPORTS_DIR).resolve()
    path = (reports / f"{log.celery_task_id}.{fmt}").resolve()
    if path.parent != reports or not path.is_file():
        raise Http404("the report file is gone (old reports are purged)")
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=f"report-{log.created_at:%Y%m%d-%H%M%S}.{fmt}",
        content_type=_CONTENT_TYPES[fmt],
    )
