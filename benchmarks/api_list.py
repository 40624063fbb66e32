"""Benchmark the REST API on 100,000 TaskLog rows in PostgreSQL.

Measures the list endpoint with and without filters (the number of queries must
not depend on the data: it is asserted) and the answer time of ``bulk_create``
for 1,000 files. Not a test: run it by hand and read the figures::

    python benchmarks/api_list.py                 # creates/reuses the database bench_tq_api
    python benchmarks/api_list.py --rebuild       # drops and fills it again

The test settings install ``django_taskqueue.contrib.postgres``, so every case runs
with its trigram indexes; the ``search`` cases then run again without them (the app
migrated to zero, then back), unless ``--no-compare``.

Environment: ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD`` as for psql,
``TASKQUEUE_BENCH_DB`` (default ``bench_tq_api``), ``TASKQUEUE_BENCH_BROKER``
(default ``redis://127.0.0.1:6379/14``: bulk_create really publishes; the queue
is purged at the end).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import postgres_database  # noqa: E402 (needs the path)

DB_NAME = os.environ.get("TASKQUEUE_BENCH_DB", "bench_tq_api")
os.environ["TASKQUEUE_TEST_DB"] = "postgres"
os.environ["TASKQUEUE_WORKER_DB_NAME"] = DB_NAME  # tests/settings.py: the database NAME
os.environ["TASKQUEUE_TEST_BROKER"] = os.environ.get(
    "TASKQUEUE_BENCH_BROKER", "redis://127.0.0.1:6379/14"
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

ROWS = 100_000
USERS = 50
REQUESTS = 200
BULK_FILES = 1_000
STATUSES = ["pending", "processing", "retrying", "completed", "failed", "cancelled"]
WEIGHTS = [5, 3, 1, 70, 15, 6]


def populate() -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from django_taskqueue.models import TaskLog

    call_command("migrate", verbosity=0)
    if TaskLog.objects.count() >= ROWS:
        print(f"reusing {TaskLog.objects.count():,} rows in {DB_NAME}")
        return
    user_model = get_user_model()
    users = [user_model.objects.get_or_create(username=f"user{i}")[0] for i in range(USERS)]
    user_model.objects.get_or_create(username="staff", defaults={"is_staff": True})
    rng = random.Random(42)
    now = timezone.now()
    started = time.perf_counter()
    batch: list[TaskLog] = []
    for i in range(ROWS):
        status = rng.choices(STATUSES, WEIGHTS)[0]
        created = now - timedelta(seconds=rng.randrange(365 * 24 * 3600))
        ended = status in ("completed", "failed", "cancelled")
        batch.append(
            TaskLog(
                celery_task_id=str(uuid.uuid4()),
                task_name="jobs.tasks.process_image" if i % 3 else "imports.csv",
                task_type="image" if i % 3 else "document",
                status=status,
                file_name=f"file-{i:06d}.{'jpg' if i % 3 else 'csv'}",
                file_size=rng.randrange(1, 50_000_000),
                file_path=f"/srv/media/file-{i:06d}",
                progress=100 if status == "completed" else rng.randrange(0, 100),
                created_at=created,
                started_at=created + timedelta(seconds=1) if status != "pending" else None,
                completed_at=created + timedelta(seconds=30) if ended else None,
                owner=users[i % USERS],
                error_message="boom" if status == "failed" else "",
            )
        )
        if len(batch) == 5000:
            TaskLog.objects.bulk_create(batch)
            batch = []
    TaskLog.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        # What autovacuum does to a table in steady state (index-only counts need it).
        cursor.execute(f"VACUUM ANALYZE {TaskLog._meta.db_table}")
    print(f"created {ROWS:,} rows in {time.perf_counter() - started:.1f} s")


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


def measure(
    label: str, call: Callable[[int], Any], *, expect_queries: int | None = None
) -> tuple[float, float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Warm up, and count the queries on two different pages of data.
    first = call(1)
    assert first.status_code == 200, (label, first.status_code, first.data)
    pages = max(1, min(50, -(-first.data["count"] // 20)))
    counts = set()
    for i in (1, pages):
        with CaptureQueriesContext(connection) as queries:
            response = call(i)
        assert response.status_code == 200, (label, response.status_code, response.data)
        counts.add(len(queries))
    assert len(counts) == 1, f"{label}: the query count changed with the data: {counts}"
    n = counts.pop()
    if expect_queries is not None:
        assert n == expect_queries, f"{label}: {n} queries, expected {expect_queries}"
    timings = []
    for i in range(REQUESTS):
        started = time.perf_counter()
        call(i % pages + 1)
        timings.append((time.perf_counter() - started) * 1000)
    median, high = statistics.median(timings), p95(timings)
    print(f"  {label:<46} {n} queries   median {median:6.1f} ms   p95 {high:6.1f} ms")
    return median, high, n


def trigram_indexes(present: bool) -> None:
    """Migrate ``django_taskqueue.contrib.postgres`` forwards (the indexes) or to zero."""
    from django.core.management import call_command
    from django.db import connection

    from django_taskqueue.models import TaskLog

    started = time.perf_counter()
    call_command("migrate", "django_taskqueue_postgres", "0001" if present else "zero", verbosity=0)
    if present:
        # Statistics on the indexed expressions, as autovacuum would gather them later.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {TaskLog._meta.db_table}")
    what = "built" if present else "dropped"
    print(f"trigram indexes {what} in {time.perf_counter() - started:.1f} s")


def bench_list(*, search_only: bool = False) -> list[tuple[str, float]]:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIRequestFactory, force_authenticate

    from django_taskqueue.api.views import TaskLogViewSet
    from django_taskqueue.models import TaskLog

    view = TaskLogViewSet.as_view({"get": "list"})
    factory = APIRequestFactory()
    staff = get_user_model().objects.get(username="staff")
    user = get_user_model().objects.get(username="user7")
    # A piece of one Celery id (they are random): matches one row, or a few.
    celery_id_part = TaskLog.objects.order_by("pk").values_list("celery_task_id", flat=True)[0][
        9:18
    ]

    def lister(who: Any, params: dict[str, Any]) -> Callable[[int], Any]:
        def call(page: int) -> Any:
            request = factory.get("/api/tasks/", {**params, "page": page})
            force_authenticate(request, user=who)
            response = view(request)
            response.render()
            return response

        return call

    cases = [
        ("staff, no filter", staff, {}),
        ("staff, status=failed", staff, {"status": "failed"}),
        ("staff, status=pending,processing", staff, {"status": "pending,processing"}),
        (
            "staff, task_type + date range",
            staff,
            {
                "task_type": "document",
                "from_date": "2020-01-01",
                "to_date": "2099-12-31",
            },
        ),
        ("staff, ordering=-file_size", staff, {"ordering": "-file_size"}),
        ("staff, search=file-0123", staff, {"search": "file-0123"}),
        ("staff, search=<part of a Celery id>", staff, {"search": celery_id_part}),
        ("staff, search=CSV (a third of the rows)", staff, {"search": "CSV"}),
        ("staff, search=42 (2 characters)", staff, {"search": "42"}),
        ("user, no filter", user, {}),
        (
            "user, status=completed + from_date",
            user,
            {
                "status": "completed",
                "from_date": "2020-01-01",
            },
        ),
        ("user, search=file-0123", user, {"search": "file-0123"}),
    ]
    if search_only:
        cases = [case for case in cases if "search" in case[2]]
    print(f"GET /api/tasks/ ({REQUESTS} requests each, page_size 20):")
    results = []
    for label, who, params in cases:
        # One COUNT and one page: nothing else, whatever the filters.
        _, high, _ = measure(label, lister(who, params), expect_queries=2)
        results.append((label, high))
    return results


def bench_bulk() -> list[tuple[str, float]]:
    from celery import current_app
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIRequestFactory, force_authenticate

    import tests.celery_app  # the Celery app, set as current
    import tests.tasks  # noqa: F401  (tests.process_file)
    from django_taskqueue.api.views import TaskLogViewSet
    from django_taskqueue.models import TaskLog

    view = TaskLogViewSet.as_view({"post": "bulk_create"})
    factory = APIRequestFactory()
    user = get_user_model().objects.get(username="user7")
    results = []
    with tempfile.TemporaryDirectory() as root:
        paths = []
        for i in range(BULK_FILES):
            path = Path(root) / f"f{i:04d}.txt"
            path.write_bytes(b"x" * (i + 1))
            paths.append(str(path))
        settings.DJANGO_TASKQUEUE = {
            **settings.DJANGO_TASKQUEUE,
            "TASK_TYPES": {"file": "tests.process_file"},
            "ALLOWED_FILE_ROOTS": [root],
        }
        print(
            f"POST /api/tasks/bulk_create/ ({BULK_FILES} files, "
            f"broker {settings.CELERY_BROKER_URL}):"
        )
        try:
            for parallel in (True, False):
                timings: list[float] = []
                cpu_times: list[float] = []
                for _ in range(3):
                    body = {"file_paths": paths, "task_type": "file", "parallel": parallel}
                    request = factory.post("/api/tasks/bulk_create/", body, format="json")
                    force_authenticate(request, user=user)
                    started, cpu = time.perf_counter(), time.process_time()
                    response = view(request)
                    timings.append((time.perf_counter() - started) * 1000)
                    cpu_times.append((time.process_time() - cpu) * 1000)
                    assert response.status_code == 201, response.data
                    parent = TaskLog.objects.get(pk=response.data["id"])
                    assert parent.children.count() == BULK_FILES
                label = "parallel (group)" if parallel else "chain"
                best, worst = min(timings), max(timings)
                print(
                    f"  {label:<46} best {best:7.1f} ms   worst {worst:7.1f} ms (3 runs; "
                    f"this process's CPU {min(cpu_times):.0f}-{max(cpu_times):.0f} ms)"
                )
                results.append((label, worst))
        finally:
            current_app.control.purge()
            TaskLog.objects.filter(file_path__startswith=root).delete()
            TaskLog.objects.filter(task_name="django_taskqueue.bulk").delete()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="drop and refill the database")
    parser.add_argument("--only", choices=("list", "bulk"), help="run one of the two parts")
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="do not run the search cases again without the trigram indexes",
    )
    args = parser.parse_args()
    postgres_database(DB_NAME, rebuild=args.rebuild)

    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    populate()
    # Wall-clock figures: on a shared machine, read them with the load next to them.
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.only != "bulk":
        trigram_indexes(True)  # a no-op when migrate has just built them
        print("== with the trigram indexes of django_taskqueue.contrib.postgres ==")
        results = bench_list()
        # Held to no target: a term two characters long has no trigram to look up,
        # and one that matches a third of the table is counted row by row.
        held = [high for label, high in results if "CSV" not in label and "2 char" not in label]
        print(f"list p95, worst case: {max(held):.1f} ms (target < 50 ms)")
        if not args.no_compare:
            trigram_indexes(False)
            try:
                print("== without them (the search cases only) ==")
                bench_list(search_only=True)
            finally:
                trigram_indexes(True)
    if args.only != "list":
        worst_bulk = max(ms for _, ms in bench_bulk())
        print(f"bulk_create of {BULK_FILES} files, worst run: {worst_bulk:.0f} ms (target < 1 s)")
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
