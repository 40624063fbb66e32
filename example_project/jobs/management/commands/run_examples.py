"""``manage.py run_examples``: run every example task once with a real worker, report as JSON.

A smoke test of a setup (the embedded default, or PostgreSQL with Redis or RabbitMQ),
and what the example's own tests run: each case's TaskLog (status, result, progress,
retries, events), the files the tasks wrote, the mail they sent, and what the report
download answers to its owner, another user, staff and a stranger.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client

from django_taskqueue import actions
from django_taskqueue.models import TaskLog
from django_taskqueue.status import TERMINAL_STATUSES, TaskStatus
from example_project import urls as urls_module
from jobs import launch, runtime, tasks
from jobs.processes import Children

_UNREACHABLE_USER = ("dave", "dave+down@example.test")
#: A sample that is replaced by a symlink out of the allowed roots after its task started.
_SWAPPED = "swapped-after-start.txt"
_OUTSIDE_TEXT = "Confidential payroll. Confidential salaries of every employee.\n"


class Command(BaseCommand):
    """Run every example task once and report what happened."""

    help = __doc__

    def add_arguments(self, parser: ArgumentParser) -> None:
        """The command's options."""
        parser.add_argument("--json", help="write the report to this file (default: stdout)")
        parser.add_argument(
            "--no-worker", action="store_true", help="use a worker that is already running"
        )
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument("--timeout", type=float, default=180)

    def handle(self, *args: Any, **options: Any) -> None:
        """Set up, start a worker, run the cases, stop the worker, write the report."""
        users, samples = runtime.prepare()
        model = get_user_model()
        dave = model.objects.filter(username=_UNREACHABLE_USER[0]).first() or (
            model.objects.create_user(_UNREACHABLE_USER[0], _UNREACHABLE_USER[1], "dave")
        )
        users["dave"] = dave.pk
        children = Children(settings.LOG_DIR)
        try:
            if not options["no_worker"]:
                runtime.reset_broadcast_state()
                hostname = runtime.new_hostname("examples")
                worker = children.start(
                    "examples-worker",
                    runtime.worker_argv(hostname, options["concurrency"]),
                    env=runtime.child_env(),
                    cwd=runtime.PROJECT_DIR,
                )
                if not runtime.wait_for_worker(hostname, 90, alive=worker.running):
                    raise CommandError(f"the worker did not start:\n{worker.tail(40)}")
            report = self._run(users, samples, options["timeout"])
        finally:
            children.stop()
        text = json.dumps(report, indent=2, default=str)
        if options["json"]:
            Path(options["json"]).write_text(text)
        else:
            self.stdout.write(text)

    # ------------------------------------------------------------------------------

    def _run(
        self, users: dict[str, int], samples: dict[str, list[Path]], timeout: float
    ) -> dict[str, Any]:
        model = get_user_model()
        alice, bob = model.objects.get(pk=users["alice"]), model.objects.get(pk=users["bob"])
        images, documents = samples["image"], samples["document"]
        sales, video = samples["report"][0], samples["video"][0]
        started = time.monotonic()

        single = {
            "image": launch.start(
                tasks.process_image, args=(str(images[0]),), owner=alice, file_path=images[0]
            ),
            "document": launch.start(
                tasks.process_document,
                args=(str(documents[0]),),
                owner=alice,
                file_path=documents[0],
            ),
            "video": launch.start(
                tasks.process_video, args=(str(video),), owner=bob, file_path=video
            ),
            "video_cancel": launch.start(
                tasks.process_video,
                args=(str(video),),
                kwargs={"delay": 0.2},
                owner=bob,
                file_path=video,
            ),
            "welcome": launch.start(tasks.send_welcome_email, args=(users["alice"],), owner=alice),
            "welcome_flaky": launch.start(tasks.send_welcome_email, args=(users["carol"],)),
            "password_reset": launch.start(
                tasks.send_password_reset_email, args=(users["bob"],), owner=bob
            ),
            "email_down": launch.start(tasks.send_welcome_email, args=(users["dave"],)),
            "primes_quick": launch.start(tasks.count_primes, args=(50_000,)),
            "primes_soft_limit": launch.start(tasks.count_primes, args=(10**9,)),
        }
        for fmt, owner in (("csv", alice), ("xlsx", bob), ("pdf", alice)):
            single[f"report_{fmt}"] = launch.start(
                tasks.generate_report,
                args=(str(sales),),
                kwargs={"format": fmt},
                owner=owner,
                file_path=sales,
            )
        single["document_swapped"] = self._start_then_swap(documents[0], alice)
        canvas = {
            "group": launch.task_ids(launch.image_batch(images, width=320)),
            "chord": launch.task_ids(launch.corpus_word_counts(documents)),
            "chain": launch.task_ids(launch.document_then_notify(documents[1], users["alice"])),
        }

        cancel = single["video_cancel"]
        self._wait(lambda: TaskLog.objects.filter(pk=cancel.pk, progress__gt=0).exists(), timeout)
        actions.cancel(cancel, reason="no longer needed", user=model.objects.get(username="admin"))

        ids = [log.celery_task_id for log in single.values()]
        ids += [cid for group in canvas.values() for cid in group]
        self._wait(
            lambda: (
                TaskLog.objects.filter(celery_task_id__in=ids, status__in=TERMINAL_STATUSES).count()
                == len(ids)
            ),
            timeout,
        )
        # The rate limit spaces out when the worker hands the tasks to its pool; with the
        # pool idle the start times show that spacing (a busy pool would blur it).
        for n in range(3):
            single[f"rate_limited_{n}"] = launch.start(
                tasks.send_welcome_email, args=(users["bob"],), owner=bob
            )
        self._wait_finished([single[f"rate_limited_{n}"] for n in range(3)], timeout)
        # A task killed at its hard time limit takes its pool process with it, and in one
        # run a message the worker received in that instant never ran: this case runs
        # alone, after the others, so it cannot take another case down with it.
        single["primes_hard_limit"] = launch.start(
            tasks.count_primes, args=(10**9,), kwargs={"stop_at_soft_limit": False}
        )
        self._wait_finished([single["primes_hard_limit"]], timeout)
        report: dict[str, Any] = {
            "seconds": round(time.monotonic() - started, 1),
            "database": settings.DATABASES["default"]["ENGINE"],
            "broker": settings.CELERY_BROKER_URL.split("://", 1)[0],
            "cases": {name: _describe(log.celery_task_id) for name, log in single.items()},
            "canvas": {name: [_describe(cid) for cid in group] for name, group in canvas.items()},
            "video_sha256": _sha256(video),
            "files": {
                "image": _image_size(single["image"]),
                "document_summary": _exists(
                    settings.OUTPUT_DIR / f"{documents[0].stem}.summary.txt"
                ),
                "video_index": _json(settings.OUTPUT_DIR / f"{video.name}.segments.json"),
            },
            "downloads": {
                fmt: self._downloads(single[f"report_{fmt}"]) for fmt in ("csv", "xlsx", "pdf")
            },
            "mail": _mail(),
            "pages": self._pages(single["report_pdf"]),
        }
        (settings.SAMPLES_DIR / _SWAPPED).unlink(missing_ok=True)
        return report

    def _start_then_swap(self, document: Path, owner: Any) -> TaskLog:
        """Start a document task, then replace its file by a symlink out of the allowed roots.

        The path was inside ``ALLOWED_FILE_ROOTS`` when the task was started; by the
        time the task runs (two seconds later) it leads outside them, and the task's
        ``open_allowed_file`` refuses it.
        """
        path = settings.SAMPLES_DIR / _SWAPPED
        path.unlink(missing_ok=True)
        shutil.copyfile(document, path)
        outside = settings.DATA_DIR / "outside-the-roots.txt"
        outside.write_text(_OUTSIDE_TEXT)
        log = launch.start(
            tasks.process_document, args=(str(path),), owner=owner, file_path=path, countdown=2
        )
        path.unlink()
        path.symlink_to(outside)
        return log

    def _pages(self, log: TaskLog) -> dict[str, int]:
        """The status of the admin's and the API's pages, for the superuser."""
        client = Client()
        client.force_login(get_user_model().objects.get(username="admin"))
        tasklog = "/admin/django_taskqueue/tasklog/"
        urls = [
            "/",
            "/admin/",
            tasklog,
            f"{tasklog}overview/",
            f"{tasklog}{log.pk}/change/",
            f"{tasklog}?status=failed",
        ]
        if urls_module.API_MOUNTED:
            urls += ["/api/tasks/", f"/api/tasks/{log.pk}/", "/api/tasks/progress/", "/api/schema/"]
        return {url: client.get(url).status_code for url in urls}

    def _wait_finished(self, logs: list[TaskLog], timeout: float) -> None:
        pks = [log.pk for log in logs]
        self._wait(
            lambda: (
                TaskLog.objects.filter(pk__in=pks, status__in=TERMINAL_STATUSES).count() == len(pks)
            ),
            timeout,
        )

    def _wait(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                stuck = TaskLog.objects.exclude(status__in=TERMINAL_STATUSES).values_list(
                    "task_name", "status", "celery_task_id"
                )
                raise CommandError(f"timed out after {timeout}s; unfinished: {list(stuck)}")
            time.sleep(0.2)

    def _downloads(self, log: TaskLog) -> dict[str, Any]:
        """What the download URL answers to the owner, another user, staff and a stranger."""
        log.refresh_from_db()
        url = log.result["download_url"] if isinstance(log.result, dict) else ""
        answers: dict[str, Any] = {"url": url}
        owner = log.owner.get_username() if log.owner else ""
        other = "bob" if owner == "alice" else "alice"
        for who in (owner, other, "admin", None):
            client = Client()
            if who:
                client.force_login(get_user_model().objects.get(username=who))
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            key = "anonymous" if who is None else ("owner" if who == owner else who)
            if who == other:
                key = "other_user"
            answers[key] = {
                "status": response.status_code,
                "content_type": response.get("Content-Type", ""),
                "head": body[:8].decode("latin-1"),
                "bytes": len(body),
            }
        return answers


def _describe(celery_task_id: str) -> dict[str, Any]:
    log = TaskLog.objects.filter(celery_task_id=celery_task_id).first()
    if log is None:
        return {"celery_task_id": celery_task_id, "status": None}
    return {
        "celery_task_id": celery_task_id,
        "task_name": log.task_name,
        "status": log.status,
        "progress": log.progress,
        "progress_message": log.progress_message,
        "result": log.result,
        "error_code": log.error_code,
        "error_message": log.error_message,
        "retry_count": log.retry_count,
        "queue": log.queue,
        "worker": log.worker,
        "owner": log.owner.get_username() if log.owner else None,
        "started_at": log.started_at.timestamp() if log.started_at else None,
        "completed_at": log.completed_at.timestamp() if log.completed_at else None,
        "history": list(
            log.progress_history.order_by("created_at").values_list("progress", "message")
        ),
        "events": list(log.events.order_by("created_at").values_list("event_type", flat=True)),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _image_size(log: TaskLog) -> dict[str, Any]:
    from PIL import Image

    log.refresh_from_db()
    if log.status != TaskStatus.COMPLETED or not isinstance(log.result, dict):
        return {}
    path = settings.MEDIA_ROOT / log.result["output"]
    with Image.open(path) as image:
        return {"path": str(path), "format": image.format, "size": list(image.size)}


def _exists(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "exists": path.is_file(),
        "text": path.read_text() if path.is_file() else "",
    }


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _mail() -> list[dict[str, str]]:
    """Every message the file backend wrote: recipient and subject."""
    messages = []
    for path in sorted(Path(settings.MAIL_DIR).glob("*.log")):
        for raw in path.read_text(errors="replace").split("-" * 79):
            head = raw.strip().split("\n\n", 1)[0]
            headers = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
            if "Subject" in headers:
                messages.append(
                    {"to": headers.get("To", ""), "subject": headers["Subject"], "body": raw}
                )
    return messages
