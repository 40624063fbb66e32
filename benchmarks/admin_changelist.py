"""Benchmark: the TaskLog admin with 1,000,000 rows on PostgreSQL.

Creates (or reuses) its own database, fills it with a million ``TaskLog`` rows
spread over 90 days (raw ``INSERT ... SELECT generate_series``: fast, and not
what is measured), then requests the admin pages with Django's test client,
logged in as a superuser, and reports for each page the median and p95 time,
the number of SQL queries, and whether any query's plan reads the task table
with a sequential scan.

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/admin_changelist.py              # 1,000,000 rows
    .venv/bin/python benchmarks/admin_changelist.py --rows 200000 --runs 10
    .venv/bin/python benchmarks/admin_changelist.py --refill     # rebuild the data

Targets: every changelist (unfiltered and filtered) under 300 ms, the overview
under 500 ms (medians), the same number of queries for every changelist page
and filter, and no query that reads more than a quarter of the table by sequential scan
(EXPLAIN ANALYZE; a scan that a LIMIT stops early is fine). Searching part of a file
name is held to them too: the test settings install ``django_taskqueue.contrib.postgres``,
whose trigram indexes serve it (a fill drops them and builds them again afterwards, and
prints how long that took). Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import django_on, postgres_database  # noqa: E402 (needs the path)

DB_NAME = os.environ.get("BENCH_DB_NAME", "bench_tq_admin")
USERS = 1_000


def _fill(rows: int) -> float:
    """Insert the users and the task rows; return the seconds it took."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress

    user_model = get_user_model()
    log_table = TaskLog._meta.db_table
    started = time.perf_counter()
    # One build of the trigram indexes after the insert, not a million index updates.
    call_command("migrate", "django_taskqueue_postgres", "zero", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            f"TRUNCATE {TaskEventLog._meta.db_table}, {TaskProgress._meta.db_table}, {log_table}"
        )
    user_model.objects.filter(username__startswith="bench-user-").delete()
    user_model.objects.bulk_create(user_model(username=f"bench-user-{i:04d}") for i in range(USERS))
    first_user = (
        user_model.objects.filter(username="bench-user-0000").values_list("pk", flat=True).get()
    )
    with connection.cursor() as cursor:
        # g = 1 is the newest row; rows are spread evenly over 90 days. A few of the
        # newest are still active; the rest mostly completed, 6 % failed, 3 % cancelled.
        cursor.execute(
            f"""
            INSERT INTO {log_table} (
                id, celery_task_id, task_name, task_type, status, queue, file_name, file_size,
                file_path, progress, progress_message, result, error_message, error_code,
                traceback, retry_count, max_retries, attempt, next_retry_at, created_at,
                started_at, completed_at, cancelled_at, heartbeat_at, owner_id, tags,
                metadata, args, kwargs, args_redacted, worker, parent_id, retry_of_id
            )
            SELECT
                gen_random_uuid(), gen_random_uuid()::text,
                'jobs.' || t.type, t.type, s.status, 'celery',
                'upload-' || g || '.csv', 1024 * (g %% 5000), '/data/upload-' || g || '.csv',
                CASE WHEN s.status = 'completed' THEN 100 ELSE g %% 100 END, '',
                CASE WHEN s.status = 'completed' THEN '{{"rows": 42}}'::jsonb END,
                CASE WHEN s.status = 'failed' THEN 'ValueError: bad row ' || g ELSE '' END,
                CASE WHEN s.status = 'failed' THEN 'ValueError' ELSE '' END,
                CASE WHEN s.status = 'failed' THEN repeat('  File "jobs.py", line 1\n', 40)
                     ELSE '' END,
                0, 3, 0, NULL,
                c.created_at,
                CASE WHEN s.status <> 'pending' THEN c.created_at + interval '2 seconds' END,
                CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
                     THEN c.created_at + (2 + (g * 37) %% 600) * interval '1 second' END,
                CASE WHEN s.status = 'cancelled'
                     THEN c.created_at + (2 + (g * 37) %% 600) * interval '1 second' END,
                CASE WHEN s.status = 'processing'
                     THEN now() - (g %% 40) * interval '1 minute' END,
                CASE WHEN g %% 17 = 0 THEN NULL ELSE %s + (g::bigint * 7919) %% %s END,
                '["bench"]'::jsonb, '{{"source": "bench"}}'::jsonb, '[1, 2]'::jsonb,
                '{{}}'::jsonb, false, 'bench@host', NULL, NULL
            FROM generate_series(1, %s) AS g
            CROSS JOIN LATERAL (SELECT (ARRAY['image', 'document', 'video', 'report', 'email',
                                               'export', 'import', 'sync'])[1 + g %% 8] AS type) t
            CROSS JOIN LATERAL (SELECT now() - (g::float / %s) * interval '90 days'
                                       - (g %% 13) * interval '1 second' AS created_at) c
            CROSS JOIN LATERAL (SELECT CASE WHEN g <= 50 THEN 'pending'
                                            WHEN g <= 80 THEN 'processing'
                                            WHEN g <= 90 THEN 'retrying'
                                            WHEN g %% 100 < 6 THEN 'failed'
                                            WHEN g %% 100 < 9 THEN 'cancelled'
                                            ELSE 'completed' END AS status) s
            """,
            [first_user, USERS, rows, rows],
        )
    building = time.perf_counter()
    call_command("migrate", "django_taskqueue_postgres", verbosity=0)
    print(f"  trigram indexes built concurrently in {time.perf_counter() - building:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {log_table}")
    return time.perf_counter() - started


def _measure(client: Any, url: str, runs: int) -> tuple[list[float], int, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):  # warm caches and the connection
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return times, len(queries), [q["sql"] for q in queries]


def _rows_seq_scanned(sqls: list[str]) -> int:
    """The most task rows one query reads by sequential scan (EXPLAIN ANALYZE).

    A sequential scan under a LIMIT that stops early is fine (the planner picks it
    when matches are common); one that reads a large part of the table is not.
    """
    import json

    from django.db import connection

    from django_taskqueue.models import TaskLog

    table = TaskLog._meta.db_table

    def scanned(node: dict[str, Any]) -> int:
        own = 0
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == table:
            per_loop = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            own = int(per_loop * node.get("Actual Loops", 1))
        return own + sum(scanned(child) for child in node.get("Plans", []))

    worst = 0
    with connection.cursor() as cursor:
        for sql in sqls:
            if table not in sql or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            worst = max(worst, scanned(plan[0]["Plan"]))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--refill", action="store_true", help="rebuild the data even if present")
    options = parser.parse_args()

    postgres_database(DB_NAME)
    django_on(DB_NAME)
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from django_taskqueue.models import TaskLog

    estimate = (
        TaskLog.objects.filter(celery_task_id__isnull=False)
        .order_by()
        .values("pk")[: options.rows + 1]
        .count()
    )
    if options.refill or estimate != options.rows:
        print(f"filling {options.rows:,} rows into {DB_NAME} ...", flush=True)
        print(f"  done in {_fill(options.rows):.1f} s", flush=True)
    else:
        print(f"reusing {options.rows:,} rows in {DB_NAME} (--refill to rebuild)")

    admin = get_user_model().objects.filter(username="bench-admin").first()
    if admin is None:
        admin = get_user_model().objects.create_superuser("bench-admin", password="bench")
    client = Client()
    client.force_login(admin)

    changelist = reverse("admin:django_taskqueue_tasklog_changelist")
    some = TaskLog.objects.order_by("-created_at").values("celery_task_id", "owner_id", "pk")[500]
    owner = some["owner_id"] or get_user_model().objects.get(username="bench-user-0001").pk
    since = (TaskLog.objects.order_by("-created_at").values_list("created_at", flat=True)[0]).date()
    cases: list[tuple[str, str, str]] = [
        # (label, url, kind): kind "list" = held to 300 ms and the constant query count.
        ("changelist, unfiltered", changelist, "list"),
        ("changelist, page 2", changelist + "?p=2", "list"),
        ("changelist, page 50", changelist + "?p=50", "list"),
        ("filter status=failed", changelist + "?status__exact=failed", "list"),
        ("filter status=processing", changelist + "?status__exact=processing", "list"),
        ("filter task_type=video", changelist + "?task_type=video", "list"),
        (
            "filter status + task_type",
            changelist + "?status__exact=completed&task_type=image",
            "list",
        ),
        ("filter owner", changelist + f"?owner={owner}", "list"),
        ("filter created today", changelist + f"?created_at__gte={since.isoformat()}", "list"),
        (
            "filter failed, 2nd page",
            changelist + "?status__exact=failed&p=2",
            "list",
        ),
        ("search celery id", changelist + f"?q={some['celery_task_id']}", "list"),
        ("search part of a file name", changelist + "?q=upload-4242", "list"),
        ("task page", reverse("admin:django_taskqueue_tasklog_change", args=[some["pk"]]), "page"),
        ("overview", reverse("admin:django_taskqueue_tasklog_overview"), "overview"),
    ]

    failures: list[str] = []
    list_queries: set[int] = set()
    print(f"\n{'page':34} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'seq-scanned rows':>17}")
    for label, url, kind in cases:
        times, n_queries, sqls = _measure(client, url, options.runs)
        median = statistics.median(times)
        p95 = statistics.quantiles(times, n=20, method="inclusive")[-1]
        scanned = _rows_seq_scanned(sqls)
        print(f"{label:34} {median:10.1f} {p95:8.1f} {n_queries:8d} {scanned:17,d}")
        limit: float | None = {"list": 300.0, "overview": 500.0, "page": 300.0}.get(kind)
        if limit is not None and median > limit:
            failures.append(f"{label}: median {median:.0f} ms > {limit:.0f} ms")
        if kind != "info" and scanned > options.rows // 4:
            failures.append(f"{label}: a sequential scan read {scanned:,} rows")
        if kind == "list":
            list_queries.add(n_queries)
    if len(list_queries) != 1:
        failures.append(
            f"changelist query counts differ between pages/filters: {sorted(list_queries)}"
        )
    print()
    check: Callable[[str], None] = print
    if failures:
        for failure in failures:
            check(f"MISSED: {failure}")
        return 1
    print(f"all targets met; every changelist ran {list_queries.pop()} queries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
