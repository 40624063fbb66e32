"""Every example task, run by a real worker: on the embedded default and on Redis + PostgreSQL.

``manage.py run_examples`` starts a worker process, runs each task once and reports, as
JSON, each TaskLog, the files the tasks wrote, the mail they sent and what the report
download answers; the tests below check that report.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.example.support import MANAGE, ROOT, example_env, needs_example_deps
from tests.live import BROKER_URL

pytestmark = needs_example_deps

VIDEO_MB = 8


def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the example; dropped afterwards."""
    import psycopg

    name = f"{os.environ.get('TASKQUEUE_TEST_DB_NAME', 'test_django_taskqueue')}_example"
    params = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD", ""),
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:  # type: ignore[arg-type]
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        password = f":{params['password']}" if params["password"] else ""
        yield f"postgres://{params['user']}{password}@{params['host']}:{params['port']}/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:  # type: ignore[arg-type]
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("embedded"),
        pytest.param("redis-postgres", marks=pytest.mark.integration),
    ],
)
def report(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Run every example task once with a worker process; the JSON report."""
    data_dir = tmp_path_factory.mktemp(f"example-{request.param}")
    extra = {"EXAMPLE_VIDEO_MB": str(VIDEO_MB)}
    databases: Iterator[str] = iter(())
    if request.param == "redis-postgres":
        databases = _postgres_database()
        extra["DATABASE_URL"] = next(databases)
        extra["CELERY_BROKER_URL"] = BROKER_URL
    out = data_dir / "report.json"
    try:
        completed = subprocess.run(
            [sys.executable, str(MANAGE), "run_examples", "--json", str(out), "--timeout", "150"],
            cwd=ROOT,
            env=example_env(data_dir, **extra),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        worker_log = data_dir / "logs" / "examples-worker.log"
        assert completed.returncode == 0, (
            f"run_examples failed:\n{completed.stdout}\n{completed.stderr}\n"
            f"worker log:\n{worker_log.read_text() if worker_log.exists() else ''}"
        )
        result: dict[str, Any] = json.loads(out.read_text())
        result["data_dir"] = str(data_dir)
        yield result
    finally:
        for _ in databases:  # drop the PostgreSQL database
            pass


def case(report: dict[str, Any], name: str) -> dict[str, Any]:
    value: dict[str, Any] = report["cases"][name]
    return value


def events(entry: dict[str, Any]) -> list[str]:
    value: list[str] = entry["events"]
    return value


def test_runs_on_the_configured_backends(
    report: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["report"]
    if backend == "embedded":
        assert report["database"] == "django.db.backends.sqlite3"
        assert report["broker"] == "filesystem"
    else:
        assert report["database"] == "django.db.backends.postgresql"
        assert report["broker"] == "redis"


def test_image_pipeline_resizes_watermarks_and_compresses(report: dict[str, Any]) -> None:
    image = case(report, "image")
    assert image["status"] == "completed", image
    assert image["owner"] == "alice"
    assert image["result"]["original_size"] == [2400, 1600]
    assert image["result"]["size"] == [800, 533]
    assert image["result"]["bytes"] < image["result"]["original_bytes"]
    assert [message for _, message in image["history"]] == [
        "opened",
        "resized",
        "watermarked",
        "compressed",
    ]
    assert image["progress"] == 100
    assert report["files"]["image"]["format"] == "JPEG"
    assert report["files"]["image"]["size"] == [800, 533]


def test_document_is_counted_and_summarised(report: dict[str, Any]) -> None:
    document = case(report, "document")
    assert document["status"] == "completed", document
    result = document["result"]
    assert result["lines"] > 10
    assert result["words"] > 100
    assert result["top_words"][0][1] >= 2
    assert result["summary"].count(".") >= 2
    summary = report["files"]["document_summary"]
    assert summary["exists"]
    assert summary["text"].strip() == result["summary"]


def test_a_file_swapped_for_a_symlink_out_of_the_roots_is_not_read(
    report: dict[str, Any],
) -> None:
    swapped = case(report, "document_swapped")
    assert swapped["status"] == "failed", swapped
    assert swapped["error_code"] == "FileNotAllowed"
    assert "outside the allowed directories" in swapped["error_message"]
    assert "onfidential" not in json.dumps(swapped)


def test_large_file_is_read_in_chunks_with_progress(report: dict[str, Any]) -> None:
    video = case(report, "video")
    assert video["status"] == "completed", video
    assert video["result"]["bytes"] == VIDEO_MB << 20
    assert video["result"]["chunks"] == VIDEO_MB
    # The checksum the task computed matches one computed independently.
    assert video["result"]["sha256"] == report["video_sha256"]
    index = report["files"]["video_index"]
    assert index["sha256"] == report["video_sha256"]
    assert [s["offset"] for s in index["segments"]] == [n << 20 for n in range(VIDEO_MB)]
    assert video["history"][-1] == [100, f"chunk {VIDEO_MB} of {VIDEO_MB}"]
    assert len(video["history"]) == VIDEO_MB


def test_large_file_job_stops_when_cancelled(report: dict[str, Any]) -> None:
    cancelled = case(report, "video_cancel")
    assert cancelled["status"] == "cancelled", cancelled
    assert 0 < cancelled["progress"] < 100
    assert cancelled["error_message"] == "no longer needed"
    # It stopped at its cancel check and never completed.
    assert "revoked" in events(cancelled)
    assert "completed" not in events(cancelled)


def test_emails_are_sent_to_the_high_priority_queue(report: dict[str, Any]) -> None:
    mail = {(m["to"], m["subject"]) for m in report["mail"]}
    welcome = case(report, "welcome")
    assert welcome["status"] == "completed"
    assert welcome["queue"] == "high"
    assert ("alice@example.test", "Welcome, alice!") in mail

    reset = case(report, "password_reset")
    assert reset["status"] == "completed"
    body = next(m["body"] for m in report["mail"] if m["subject"] == "Reset your password")
    assert "/reset/" in body


def test_email_is_retried_after_a_transient_smtp_error(report: dict[str, Any]) -> None:
    flaky = case(report, "welcome_flaky")
    assert flaky["status"] == "completed", flaky
    assert flaky["retry_count"] == 1
    assert events(flaky) == ["created", "started", "retried", "started", "completed"]
    assert ("carol+flaky@example.test", "Welcome, carol!") in {
        (m["to"], m["subject"]) for m in report["mail"]
    }


def test_email_fails_after_its_retries_with_backoff(report: dict[str, Any]) -> None:
    down = case(report, "email_down")
    assert down["status"] == "failed", down
    assert down["error_code"] == "SMTPServerDisconnected"
    assert down["retry_count"] == 3
    assert events(down).count("retried") == 3
    assert "dave+down@example.test" not in {m["to"] for m in report["mail"]}


def test_reports_are_written_in_three_formats(report: dict[str, Any]) -> None:
    heads = {"csv": "month,re", "xlsx": "PK\u0003\u0004", "pdf": "%PDF-"}
    for fmt, head in heads.items():
        entry = case(report, f"report_{fmt}")
        assert entry["status"] == "completed", entry
        assert entry["queue"] == "low"
        assert entry["result"]["rows"] == 5000
        assert entry["result"]["lines"] == 48  # 12 months x 4 regions
        assert [p for p, _ in entry["history"]] == [25, 50, 100]
        download = report["downloads"][fmt]
        assert download["owner"]["status"] == 200
        assert download["owner"]["head"].startswith(head)
        assert download["owner"]["bytes"] == entry["result"]["bytes"]


def test_report_download_is_for_its_owner_and_staff_only(report: dict[str, Any]) -> None:
    for fmt in ("csv", "xlsx", "pdf"):
        download = report["downloads"][fmt]
        assert download["url"].startswith("/reports/")
        assert download["owner"]["status"] == 200
        assert download["admin"]["status"] == 200
        assert download["other_user"]["status"] == 404
        # Anonymous: to the login page.
        assert download["anonymous"]["status"] == 302


def test_time_limits_soft_stops_early_hard_kills(report: dict[str, Any]) -> None:
    quick = case(report, "primes_quick")
    assert quick["status"] == "completed"
    assert quick["result"] == {
        "limit": 50000,
        "checked_below": 50000,
        "primes": 5133,
        "complete": True,
    }

    soft = case(report, "primes_soft_limit")
    # pytest shortens a dict in the message: name what explains a failure.
    assert soft["status"] == "completed", {
        key: soft.get(key) for key in ("status", "error_code", "error_message", "events")
    }
    assert soft["result"]["complete"] is False
    assert soft["result"]["primes"] > 1000
    assert 1.5 < soft["completed_at"] - soft["started_at"] < 5

    hard = case(report, "primes_hard_limit")
    assert hard["status"] == "failed", hard
    assert hard["error_code"] == "TimeLimitExceeded"
    assert 3.5 < hard["completed_at"] - hard["started_at"] < 10


def test_rate_limit_spaces_out_the_welcome_mails(report: dict[str, Any]) -> None:
    starts = sorted(case(report, f"rate_limited_{n}")["started_at"] for n in range(3))
    # 60/m: at most one welcome mail a second per worker.
    assert starts[-1] - starts[0] >= 1.5


def test_group_thumbnails_every_image(report: dict[str, Any]) -> None:
    group = report["canvas"]["group"]
    assert len(group) == 3
    assert {entry["status"] for entry in group} == {"completed"}
    assert {tuple(entry["result"]["size"]) for entry in group} == {(320, 213)}
    assert {entry["queue"] for entry in group} <= {"", "default"}


def test_chord_merges_the_word_counts(report: dict[str, Any]) -> None:
    *header, body = report["canvas"]["chord"]
    assert [entry["task_name"] for entry in header] == ["jobs.tasks.count_words"] * 3
    assert body["task_name"] == "jobs.tasks.merge_word_counts"
    assert {entry["status"] for entry in [*header, body]} == {"completed"}
    # The body got every header task's result.
    assert body["result"]["documents"] == 3
    assert body["result"]["words"] == sum(sum(entry["result"].values()) for entry in header)


def test_chain_mails_the_document_summary(report: dict[str, Any]) -> None:
    first, second = report["canvas"]["chain"]
    assert first["task_name"] == "jobs.tasks.process_document"
    assert second["task_name"] == "jobs.tasks.send_completion_email"
    assert first["status"] == second["status"] == "completed"
    body = next(
        m["body"] for m in report["mail"] if m["subject"] == "The summary of bread.txt is done"
    )
    # The mail carries the first task's result.
    assert first["result"]["summary"][:40] in " ".join(body.split())


def test_admin_and_api_pages_answer(report: dict[str, Any]) -> None:
    pages = report["pages"]
    assert "/admin/django_taskqueue/tasklog/overview/" in pages
    assert pages == dict.fromkeys(pages, 200)


def test_every_task_ran_on_the_worker_and_has_a_final_status(report: dict[str, Any]) -> None:
    entries = list(report["cases"].values()) + [
        entry for group in report["canvas"].values() for entry in group
    ]
    assert len(entries) == 27
    for entry in entries:
        assert entry["status"] in {"completed", "failed", "cancelled"}, entry
        assert entry["worker"].startswith("examples-"), entry
        assert entry["started_at"] is not None
        assert math.isfinite(entry["completed_at"])
    assert uuid.UUID(entries[0]["celery_task_id"])
