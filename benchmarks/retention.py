"""Benchmark: retention over 1,000,000 finished tasks on PostgreSQL.

Creates (or reuses) its own database, fills it with finished ``TaskLog`` rows
past their retention age plus their progress and event rows (raw
``INSERT ... SELECT generate_series``: fast, and nothing Django-specific to
measure), then runs :func:`django_taskqueue.housekeeping.purge_finished` and
reports the total time and the longest single transaction (each batch is one
transaction; its duration, commit included, bounds how long it holds locks).

Usage (from the repository root, PostgreSQL on 127.0.0.1:5432 with trust auth)::

    .venv/bin/python benchmarks/retention.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/retention.py --rows 100000 --batch-size 2000

Targets: total under 60 s, no transaction longer than 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import django_on, postgres_database  # noqa: E402 (needs the path)

DB_NAME = os.environ.get("BENCH_DB_NAME", "bench_tq_house")


def _fill(rows: int, recent: int, events_per_task: int, progress_every: int) -> float:
    """Insert the rows; return the seconds it took."""
    from django.db import connection

    from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress

    log_table = TaskLog._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"TRUNCATE {TaskEventLog._meta.db_table}, {TaskProgress._meta.db_table}, {log_table}"
        )
        # Statuses as a real table has them: mostly completed, some failed and
        # cancelled; each past its default retention (30/90/30 days). Tasks end in
        # about the order they were created (one every 10 s, over 116 days ending
        # 284 days ago), so the completed_at order follows the table's physical order
        # as it does in a real log.
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
                gen_random_uuid(), 'bench-' || g, 'bench.process', 'bench',
                CASE WHEN g %% 10 = 0 THEN 'failed' WHEN g %% 10 = 1 THEN 'cancelled'
                     ELSE 'completed' END,
                'celery', 'file-' || g || '.csv', 1024, '/data/file-' || g || '.csv', 100,
                'done', '{{"rows": 42}}'::jsonb,
                CASE WHEN g %% 10 = 0 THEN 'it broke' ELSE '' END,
                CASE WHEN g %% 10 = 0 THEN 'ValueError' ELSE '' END,
                CASE WHEN g %% 10 = 0 THEN repeat('Traceback line\n', 40) ELSE '' END,
                0, 3, 0, NULL,
                now() - interval '400 days' + g * interval '10 seconds',
                now() - interval '400 days' + g * interval '10 seconds',
                now() - interval '400 days' + g * interval '10 seconds' + interval '3 seconds',
                NULL, NULL, NULL, '["bench"]'::jsonb, '{{}}'::jsonb, '[1, 2]'::jsonb,
                '{{}}'::jsonb, false, 'bench@host', NULL, NULL
            FROM generate_series(1, %s) AS g
            """,
            [rows],
        )
        # Recent tasks that retention must keep.
        cursor.execute(
            f"""
            INSERT INTO {log_table} (
                id, celery_task_id, task_name, task_type, status, queue, file_name, file_path,
                progress, progress_message, error_message, error_code, traceback, retry_count,
                attempt, created_at, started_at, completed_at, tags, metadata, args, kwargs,
                args_redacted, worker
            )
            SELECT gen_random_uuid(), 'recent-' || g, 'bench.process', 'bench', 'completed', '',
                   '', '', 100, '', '', '', '', 0, 0, now(), now(), now(), '[]'::jsonb,
                   '{{}}'::jsonb, '[]'::jsonb, '{{}}'::jsonb, false, ''
            FROM generate_series(1, %s) AS g
            """,
            [recent],
        )
        cursor.execute(
            f"""
            INSERT INTO {TaskEventLog._meta.db_table} (task_id, event_type, message, metadata,
                                                        created_at)
            SELECT t.id, e.kind, '', '{{}}'::jsonb, t.completed_at
            FROM {log_table} t
            CROSS JOIN (SELECT (ARRAY['created', 'started', 'progress', 'completed',
                                      'failed'])[i] AS kind
                        FROM generate_series(1, %s) AS i) e
            """,
            [events_per_task],
        )
        cursor.execute(
            f"""
            INSERT INTO {TaskProgress._meta.db_table} (task_id, progress, message, data,
                                                        created_at)
            SELECT t.id, 50, 'half way', NULL, t.completed_at
            FROM {log_table} t
            WHERE ('x' || substr(md5(t.celery_task_id), 1, 8))::bit(32)::int %% %s = 0
            """,
            [progress_every],
        )
    with connection.cursor() as cursor:
        for table in (log_table, TaskEventLog._meta.db_table, TaskProgress._meta.db_table):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def _explain_one_batch(size: int) -> None:
    """Where a batch's time goes: the statement, and the foreign-key checks at commit.

    Runs one batch under ``EXPLAIN ANALYZE`` with the (deferred) constraint
    checks made immediate so PostgreSQL times them, then rolls it back.
    """
    from django.db import connection, transaction
    from django.utils import timezone

    from django_taskqueue.housekeeping import postgresql_batch_sql, retention_cutoffs

    cutoff = retention_cutoffs(statuses=["completed"])["completed"]
    floor = timezone.now().replace(year=1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + postgresql_batch_sql(connection.alias),
            ["completed", cutoff, floor, size],
        )
        lines = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    triggers = [line for line in lines if line.startswith("Trigger for constraint")]
    total = next(line for line in lines if line.startswith("Execution Time"))
    statement = lines[0].split("actual time=")[1].split("..")[1].split(" ")[0]
    checks = sum(float(line.split("time=")[1].split(" ")[0]) for line in triggers)
    print(
        f"one batch of {size}, explained: statement {float(statement):.0f} ms, "
        f"foreign-key checks {checks:.0f} ms ({len(triggers)} constraints), {total.lower()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished tasks to purge")
    parser.add_argument("--recent", type=int, default=50_000, help="recent tasks to keep")
    parser.add_argument("--events", type=int, default=2, help="events per task (1-5)")
    parser.add_argument(
        "--progress-every", type=int, default=4, help="one progress row per N tasks"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="RETENTION_BATCH_SIZE")
    parser.add_argument("--keep-data", action="store_true", help="reuse the rows already there")
    parser.add_argument(
        "--no-explain", action="store_true", help="skip the EXPLAIN ANALYZE of one batch"
    )
    args = parser.parse_args()

    postgres_database(DB_NAME)
    django_on(DB_NAME)
    from django.db import connection

    from django_taskqueue import housekeeping
    from django_taskqueue.conf import conf
    from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress

    if not args.keep_data:
        seconds = _fill(args.rows, args.recent, args.events, args.progress_every)
        print(f"filled in {seconds:.1f} s")
    before = (TaskLog.objects.count(), TaskProgress.objects.count(), TaskEventLog.objects.count())
    print(f"before: {before[0]:,} tasks, {before[1]:,} progress rows, {before[2]:,} events")
    print(f"PostgreSQL {connection.cursor().connection.info.server_version}, database {DB_NAME}")

    if not args.no_explain:
        _explain_one_batch(args.batch_size or conf.RETENTION_BATCH_SIZE)

    durations: list[float] = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = housekeeping.purge_finished(
        batch_size=args.batch_size, on_batch=lambda batch: durations.append(batch.seconds)
    )
    total = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    after = (TaskLog.objects.count(), TaskProgress.objects.count(), TaskEventLog.objects.count())
    durations.sort()
    size = args.batch_size or conf.RETENTION_BATCH_SIZE
    print(
        f"deleted {result.total:,} tasks ({result.tasks}), {result.progress:,} progress rows, "
        f"{result.events:,} events in {result.batches:,} batches of {size}"
    )
    print(f"after: {after[0]:,} tasks, {after[1]:,} progress rows, {after[2]:,} events")
    print(f"total: {total:.1f} s ({result.total / total:,.0f} tasks/s)")
    print(
        "transaction per batch: "
        f"median {statistics.median(durations) * 1000:.0f} ms, "
        f"p99 {durations[int(len(durations) * 0.99) - 1] * 1000:.0f} ms, "
        f"longest {durations[-1] * 1000:.0f} ms"
    )
    print(f"peak RSS: {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after")
    ok = total < 60 and durations[-1] < 1.0 and after[0] == args.recent
    print("targets (total < 60 s, longest transaction < 1 s):", "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
