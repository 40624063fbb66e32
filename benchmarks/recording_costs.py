"""What the recorder's statements cost through the ORM, in one process, on PostgreSQL.

Run from the repository root (PostgreSQL on 127.0.0.1:5432)::

    python benchmarks/recording_costs.py
    python benchmarks/recording_costs.py --rows 1000

It creates (and drops at the start) the database ``bench_tq_costs`` and measures,
as CPU time of this process per task (median of the repeats):

- the read a worker makes before a task's body runs (``lifecycle.row_state``,
  one ``SELECT`` through the ORM), against the same ``SELECT`` as one static
  statement on Django's cursor: what the ORM costs around one round trip;
- ``lifecycle.write_marks`` of a start and an end per task, in batches of 1 to 64
  tasks: the recorder's cost per task, and how much of it is the batch's own
  (its transaction and its statements) rather than each task's.

These are the figures behind the CPU budgets of ``docs/benchmarks.md`` ("What the
targets would need"). The throughput itself is ``benchmarks/throughput.py``'s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.core.settings")
os.environ.setdefault("BENCH_DB", "bench_tq_costs")

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def cpu_per_call(calls: list[Callable[[], Any]], repeats: int) -> float:
    """Milliseconds of this process's CPU per call, median of ``repeats`` passes."""
    passes = []
    for _ in range(repeats):
        start = time.process_time()
        for call in calls:
            call()
        passes.append((time.process_time() - start) / len(calls) * 1000)
    return statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from benchmarks.common import postgres_database

    postgres_database(settings.DATABASES["default"]["NAME"], rebuild=True)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.db import connection

    from django_taskqueue import lifecycle
    from django_taskqueue.models import TaskLog

    ids = [
        lifecycle.create_task_log(uuid.uuid4().hex, task_name="bench.costs").celery_task_id
        for _ in range(opts.rows)
    ]
    table = connection.ops.quote_name(TaskLog._meta.db_table)
    sql = f'SELECT "id", "status", "parent_id" FROM {table} WHERE "celery_task_id" = %s'

    def static_read(celery_task_id: str) -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql, [celery_task_id])
            return cursor.fetchone()

    orm = cpu_per_call(
        [lambda i=i: lifecycle.row_state(celery_task_id=i) for i in ids], opts.repeats
    )
    static = cpu_per_call([lambda i=i: static_read(i) for i in ids], opts.repeats)
    print(f"the read before the body, {opts.rows} rows (ms of CPU per task):")
    print(f"  lifecycle.row_state (ORM)               {orm:.3f}")
    print(f"  the same SELECT, static, Django cursor  {static:.3f}  ({orm / static:.1f}x less)")

    print("\nlifecycle.write_marks, a start and an end per task (ms of CPU per task):")
    for size in BATCHES:
        passes = []
        for _ in range(opts.repeats):
            batches = max(1, opts.rows // size // opts.repeats)
            spent = 0.0
            for _ in range(batches):
                logs = [
                    lifecycle.create_task_log(uuid.uuid4().hex, task_name="bench.costs")
                    for _ in range(size)
                ]
                marks = [
                    mark
                    for n, log in enumerate(logs)
                    for mark in (
                        lifecycle.starting(
                            log.celery_task_id,
                            worker="bench@localhost",
                            run=f"r{n}",
                            pk=log.pk,
                            defaults={"queue": "celery"},
                        ),
                        lifecycle.completion(log.celery_task_id, pk=log.pk, result=n, run=f"r{n}"),
                    )
                ]
                start = time.process_time()
                outcomes = lifecycle.write_marks(marks)
                spent += time.process_time() - start
                assert all(outcome.applied for outcome in outcomes)
            passes.append(spent / (batches * size) * 1000)
        print(f"  {size:3d} tasks per batch  {statistics.median(passes):.3f}")


if __name__ == "__main__":
    main()
