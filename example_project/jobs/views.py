"""The example's pages: a home page listing your tasks, starting a sample task, report downloads."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus
from example_project import urls as project_urls
from jobs import launch, sampledata, tasks

_CONTENT_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}

#: What the home page's buttons start: a label, and the task with its sample file.
SAMPLE_TASKS = {
    # Slowed down per chunk, so its progress can be watched.
    "video": ("Checksum the sample video", tasks.process_video, "video", {"delay": 0.2}),
    "image": ("Resize a sample image", tasks.process_image, "image", {}),
    "report": ("Render a PDF sales report", tasks.generate_report, "report", {"format": "pdf"}),
}


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Links to the admin and the API, and the signed-in user's latest tasks."""
    latest = (
        TaskLog.objects.for_user(request.user).order_by("-created_at")[:20]
        if request.user.is_authenticated
        else []
    )
    return render(
        request,
        "jobs/home.html",
        {
            "tasks": latest,
            "samples": {kind: choice[0] for kind, choice in SAMPLE_TASKS.items()},
            "api": project_urls.API_MOUNTED,
            "flower": settings.HAS_FLOWER,
        },
    )


@login_required
@require_POST
def start_task(request: HttpRequest) -> HttpResponse:
    """Start one of :data:`SAMPLE_TASKS` for the signed-in user, then show the home page."""
    choice = SAMPLE_TASKS.get(request.POST.get("kind", ""))
    if choice is None:
        messages.error(request, "Unknown sample task.")
        return redirect("home")
    label, task, kind, kwargs = choice
    sample = sampledata.ensure_samples()[kind][0]
    try:
        launch.start(task, args=(str(sample),), kwargs=kwargs, owner=request.user, file_path=sample)
    except Exception as exc:
        # The broker is down or unreachable: say so rather than fail the page.
        messages.error(request, f"Could not start the task: {exc}")
    else:
        messages.success(request, f"Started: {label.lower()}.")
    return redirect("home")


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
