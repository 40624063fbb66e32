"""Throughput of TrackedTask against plain Celery and django-celery-results.

Run from the repository root (PostgreSQL on 127.0.0.1:5432 and Redis on
127.0.0.1:6379, as on the development machines)::

    python benchmarks/throughput.py --split    # the worker on a CPU of its own
    python benchmarks/throughput.py            # every process on any CPU
    python benchmarks/throughput.py --tasks 500 --rounds 1
    python benchmarks/throughput.py --variants plain,results,tracked,batched

It creates (and drops at the start) the PostgreSQL database ``bench_tq_core``,
starts one real worker (prefork, concurrency 2, Redis broker) and, in rounds,
runs N small tasks of each variant:

- ``plain``: a Celery task, no result stored;
- ``results``: django-celery-results with the ``django-db`` backend;
- ``results+started``: the same with ``track_started`` (two writes, as tracking does);
- ``tracked``: TrackedTask, recording created, started and completed with their events;
- ``floor``: the same three records, the start and the end written by bare libpq calls
  with nothing around them: the least any tracker that writes them as the task runs
  can cost (see ``benchmarks/core/tasks.py``);
- ``batched``: the same three records, the start and the end queued by each pool child
  and written off the task's path, many tasks per statement, through the ORM: a
  yardstick of what recording in batches can reach (see ``benchmarks/core/tasks.py``).

The worker's throughput is measured as Celery's own worker benchmark does it:
the tasks are queued first (for ``tracked``, with their rows and ``created``
events), then the worker drains them; the cost of queueing is reported on its
own, as the time of one ``apply_async()``. Then the same tasks are timed end to
end, published by this process while the worker runs them, all on one machine.
Last, it times 1,000 ``update_progress`` calls inside one task against 1,000
``update_state`` calls on the django-db backend, and checks that the final
progress value was stored. Every variant runs with the same ``CELERY_DB_REUSE_MAX``.

With ``--split`` (Linux) the worker and its pool children run on the first CPU
and this process, PostgreSQL and Redis on the others, as in production, where the
database and the broker have machines of their own: see :class:`SplitLayout`.

Rounds alternate the variants' order. Rates are medians of the rounds and every
ratio is also given round by round; compare ratios, not seconds (the machine is
shared). The script exits non-zero when a target is missed: the worker's
throughput with TrackedTask at least 0.80 of plain Celery's (0.85 with ``--split``;
the median of the rounds' own ratios), end to end at least 0.65, and
``update_progress`` at most 1/10 of ``update_state``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.core.settings")
os.environ.setdefault("BENCH_BROKER", "redis://127.0.0.1:6379/9")


def start_worker(cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    """Start the benchmark's worker (on ``cpus`` only, when given) and wait until it answers."""
    log = open(ROOT / "benchmarks" / "worker.log", "wb")  # noqa: SIM115 (lives as long as the worker)
    cmd = [
        sys.executable, "-m", "celery", "-A", "benchmarks.core.celery_app", "worker",
        "-P", "prefork", "-c", "2", "-l", "WARNING", "--without-gossip", "--without-mingle",
        "-n", "bench@localhost",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CELERY_SKIP_CHECKS": "1"}
    # A process starts with the CPUs of the thread that forked it, and the pool
    # children the worker forks inherit the worker's.
    own = os.sched_getaffinity(0) if cpus is not None else None
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        if own is not None:
            os.sched_setaffinity(0, own)
    from benchmarks.core.celery_app import app

    deadline = time.monotonic() + 60
    while not app.control.ping(destination=["bench@localhost"], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the benchmark worker did not start; see benchmarks/worker.log")
    return proc


class SplitLayout:
    """The worker on its own CPU; this process, PostgreSQL and Redis on the others (Linux).

    In production the database and the broker run on machines of their own, and a
    worker's throughput is bounded by the CPU of its own host. On one small
    machine ``--split`` models that: the worker and the pool children it forks get
    the first CPU, everything else the rest. The affinity of every local PostgreSQL
    and Redis process (and thread) is set for the run and put back at the end; new
    PostgreSQL backends inherit it from the postmaster. Processes this user may not
    change are left as they are, and the layout says so.
    """

    SERVICES = ("postgres", "redis-server")

    def __init__(self) -> None:
        self.all_cpus = os.sched_getaffinity(0)
        cpus = sorted(self.all_cpus)
        if len(cpus) < 2:
            raise SystemExit("--split needs at least 2 CPUs")
        self.worker_cpus = {cpus[0]}
        self.other_cpus = set(cpus[1:])
        self.saved: dict[int, set[int]] = {}
        self.pinned: dict[str, int] = dict.fromkeys(self.SERVICES, 0)
        self.denied = 0

    def _service_threads(self) -> list[tuple[str, int]]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                name = (entry / "comm").read_text().strip()
                if name in self.SERVICES:
                    found += [(name, int(task.name)) for task in (entry / "task").iterdir()]
            except OSError:
                continue  # gone meanwhile
        return found

    def __enter__(self) -> SplitLayout:
        os.sched_setaffinity(0, self.other_cpus)  # this process: the producer
        for name, tid in self._service_threads():
            try:
                previous = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, self.other_cpus)
            except OSError:
                self.denied += 1
                continue
            self.saved[tid] = previous
            self.pinned[name] += 1
        return self

    def __exit__(self, *exc: object) -> None:
        for tid, mask in self.saved.items():
            with contextlib.suppress(OSError):  # the thread has ended
                os.sched_setaffinity(tid, mask)
        os.sched_setaffinity(0, self.all_cpus)

    def describe(self) -> str:
        cpus = ",".join(map(str, sorted(self.other_cpus)))
        text = (
            f"the worker on CPU {min(self.worker_cpus)}; this process, PostgreSQL "
            f"({self.pinned['postgres']} threads) and Redis ({self.pinned['redis-server']} "
            f"threads) on CPU {cpus}"
        )
        if self.denied:
            text += f" ({self.denied} threads of theirs could not be moved and run anywhere)"
        return text


class CpuMeter:
    """CPU seconds spent, per process group, while a batch runs (Linux ``/proc``).

    The groups: this (publishing) process, the worker's main process, its pool
    children, the PostgreSQL backends connected to the benchmark database, and
    the Redis server. On 2 cores they all compete, so the CPU each variant
    costs per task, summed over all of them, is what sets the end-to-end rate.
    A thread samples every process every 20 ms, so one that starts during the
    batch (a database connection the worker reopens) counts from zero, and one
    that exits counts up to its last sample; the thread's own CPU is taken off
    the producer's.
    """

    GROUPS = ("producer", "worker main", "pool children", "PostgreSQL", "Redis")

    def __init__(self, worker_pid: int) -> None:
        import psycopg

        self.worker_pid = worker_pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.used: dict[str, float] = {}
        self.stop = threading.Event()
        self.own = 0.0
        # The sampler's own connection: Django's belongs to the publishing thread.
        self.pg = psycopg.connect(
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", "postgres"),
            dbname="postgres",
            autocommit=True,
        )

    @staticmethod
    def _stat(pid: int) -> tuple[str, list[str]] | None:
        """The process's command name and the fields after it, or ``None`` once it is gone."""
        try:
            # "pid (comm) state ppid ...": the name may itself hold spaces and ")".
            head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
        except OSError:
            return None
        return head.partition("(")[2], tail.split()

    def _groups(self) -> dict[str, list[int]]:
        from django.conf import settings

        children, redis_pids = [], []
        for entry in Path("/proc").iterdir():
            stat = self._stat(int(entry.name)) if entry.name.isdigit() else None
            if stat is None:
                continue
            name, fields = stat
            if int(fields[1]) == self.worker_pid:  # ppid
                children.append(int(entry.name))
            elif name == "redis-server":
                redis_pids.append(int(entry.name))
        backends = [
            row[0]
            for row in self.pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s",
                [settings.DATABASES["default"]["NAME"]],
            )
        ]
        return {
            "producer": [os.getpid()],
            "worker main": [self.worker_pid],
            "pool children": children,
            "PostgreSQL": backends,
            "Redis": redis_pids,
        }

    def _sample(self, *, initial: bool = False) -> None:
        for group, pids in self._groups().items():
            for pid in pids:
                stat = self._stat(pid)
                if stat is None:
                    continue
                fields = stat[1]
                seconds = (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime
                self.first.setdefault((group, pid), seconds if initial else 0.0)
                self.last[(group, pid)] = seconds

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self._sample()
        self.own = time.thread_time()  # the sampling itself, not the publishing

    def __enter__(self) -> CpuMeter:
        if Path("/proc/self/stat").exists():  # Linux only; elsewhere no breakdown
            self._sample(initial=True)
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.first:
            self.pg.close()
            return
        self.stop.set()
        self.thread.join()
        self._sample()
        self.pg.close()
        self.used = dict.fromkeys(self.GROUPS, 0.0)
        for (group, pid), seconds in self.last.items():
            self.used[group] += seconds - self.first[(group, pid)]
        self.used["producer"] -= self.own


def print_cpu(cpu: dict[str, list[dict[str, float]]], tasks: int, title: str) -> None:
    """Print each variant's CPU per task by process group (medians of the rounds)."""
    if not all(cpu.values()):
        return
    print(f"\nCPU per task, {title} (ms, median of the rounds):")
    print(" " * 18 + "".join(f"{group:>15s}" for group in CpuMeter.GROUPS) + "  total")
    for name, rounds in cpu.items():
        per_task = [
            statistics.median(r[group] for r in rounds) / tasks * 1000 for group in CpuMeter.GROUPS
        ]
        columns = "".join(f"{ms:15.3f}" for ms in per_task)
        print(f"  {name:16s}{columns}  {sum(per_task):5.2f}")


def print_rates(times: dict[str, list[float]], tasks: int) -> dict[str, float]:
    """Print each variant's rate (median of the rounds) and its ratio to plain Celery.

    The ratio is also given round by round: each round runs every variant one
    after the other, so a round's ratio compares runs a minute apart, while the
    machine's speed drifts far more than that over a whole run. Their median and
    range say more than the ratio of the medians on a shared machine.

    Returns:
        Each variant's round-by-round ratio (the median of the rounds' own ratios).
    """
    base = statistics.median(times["plain"])
    by_round: dict[str, float] = {}
    for name, values in times.items():
        med = statistics.median(values)
        paired = sorted(plain / own for plain, own in zip(times["plain"], values, strict=True))
        mid = by_round[name] = statistics.median(paired)
        spread = f"round by round {mid:.2f}x ({paired[0]:.2f}-{paired[-1]:.2f})"
        print(
            f"  {name:16s} {tasks / med:8.0f} tasks/s   {base / med:5.2f}x plain Celery"
            + ("" if name == "plain" else f"   {spread}")
        )
    return by_round


def in_order(variants: dict[str, Any], round_no: int) -> list[tuple[str, Any]]:
    """The variants in the order round ``round_no`` runs them: reversed every other round.

    The machine's speed drifts within a round too; alternating the order keeps
    one variant from always running first or last.
    """
    items = list(variants.items())
    return items if round_no % 2 else items[::-1]


def wait_recorded(task: Any, n: int, since: Any) -> None:
    """For TrackedTask, wait until the ``n`` tasks' ends are stored, not only run.

    A worker's recorder thread writes a task's end a few milliseconds after the
    task finished (after ``task_postrun``, which counts it done): the clock stops
    when the last row says ``completed``, so the figure includes the recording.
    """
    if task.name != "bench.tracked":
        return
    from django_taskqueue.models import TaskLog

    done = TaskLog.objects.filter(task_name=task.name, status="completed", created_at__gte=since)
    while done.count() < n:
        time.sleep(0.01)


def run_batch(task: Any, n: int) -> float:
    """Publish ``n`` tasks and return the seconds until the last one finished (and was recorded)."""
    import redis
    from django.utils import timezone

    from benchmarks.core.tasks import COUNTER

    r = redis.Redis.from_url(os.environ["BENCH_BROKER"])
    r.set(COUNTER, 0)
    since = timezone.now()
    start = time.perf_counter()
    for i in range(n):
        task.delay(i)
    while int(r.get(COUNTER) or 0) < n:
        time.sleep(0.005)
    wait_recorded(task, n, since)
    return time.perf_counter() - start


def run_drain(task: Any, n: int) -> float:
    """Queue ``n`` tasks while no worker consumes them, then time the worker alone.

    The clock starts when the first task has finished, as in Celery's own worker
    benchmark: the worker starts reading a queue it was just told to consume only
    after its current poll of the broker ends (up to a second with Redis), a
    delay that is no work of the tasks' and would pull every ratio towards 1.

    Returns:
        The seconds the worker took, scaled from the ``n - 1`` tasks timed to ``n``.
    """
    import redis
    from django.utils import timezone

    from benchmarks.core.celery_app import app
    from benchmarks.core.tasks import COUNTER, FIRST_DONE

    r = redis.Redis.from_url(os.environ["BENCH_BROKER"])
    r.set(COUNTER, 0)
    r.delete(FIRST_DONE)
    since = timezone.now()
    for i in range(n):
        task.apply_async((i,), queue="drain")
    app.control.add_consumer("drain", destination=["bench@localhost"], reply=True)
    while int(r.get(COUNTER) or 0) < n:
        time.sleep(0.002)
    wait_recorded(task, n, since)
    end = time.time()
    app.control.cancel_consumer("drain", destination=["bench@localhost"], reply=True)
    first = r.get(FIRST_DONE)
    assert first is not None, "the worker did not record its first finished task"
    return (end - float(first)) * n / (n - 1)


def run_rounds(
    variants: dict[str, Any],
    runner: Callable[[Any, int], float],
    tasks: int,
    rounds: int,
    worker_pid: int,
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, float]]]]:
    """Time ``runner`` on every variant, round after round; return the seconds and the CPU."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for round_no in range(1, rounds + 1):
        for name, task in in_order(variants, round_no):
            with CpuMeter(worker_pid) as meter:
                times[name].append(runner(task, tasks))
            if meter.used:
                cpu[name].append(meter.used)
        print(f"round {round_no}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    return times, cpu


def publish_cost(task: Any, n: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per ``apply_async()`` call, with no worker running the tasks."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        task.apply_async((i,), queue="unconsumed")
    return (time.perf_counter() - wall) / n * 1000, (time.process_time() - cpu) / n * 1000


def row_publish_cost(task: Any, n: int) -> tuple[float, float]:
    """``publish_cost`` of a plain publish after one ORM ``INSERT`` of a bare TaskLog row.

    The least that recording a row before the message is published can cost
    through the ORM: no event, no transaction, no redaction; a yardstick for
    the producer's side, as ``batched`` is for the worker's.
    """
    from celery import uuid as celery_uuid

    from django_taskqueue.models import TaskLog

    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        task_id = celery_uuid()
        TaskLog(celery_task_id=task_id, task_name=task.name, args=[i]).save(force_insert=True)
        task.apply_async((i,), task_id=task_id, queue="unconsumed")
    return (time.perf_counter() - wall) / n * 1000, (time.process_time() - cpu) / n * 1000


# Each variant's name and the task (in benchmarks.core.tasks) it runs.
VARIANTS = {
    "plain": "plain",
    "results": "results",
    "results+started": "results_started",
    "tracked": "tracked",
    "floor": "floor",
    "batched": "batched",
}


def main() -> None:  # noqa: PLR0915 (one linear script, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--progress-calls", type=int, default=1000)
    parser.add_argument(
        "--split",
        action="store_true",
        help="run the worker on a CPU of its own, and this process, PostgreSQL and Redis on "
        "the others, as when the database and the broker have machines of their own (Linux)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="the variants to run, comma-separated (plain and results always run: "
        "the ratios are taken against them)",
    )
    opts = parser.parse_args()
    chosen = {"plain", "results", *opts.variants.split(",")}
    if unknown := chosen - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if opts.tasks < 2:
        parser.error("--tasks must be at least 2: the worker alone is timed from its first task")

    import django

    django.setup()
    from django.conf import settings

    from benchmarks.common import postgres_database

    postgres_database(settings.DATABASES["default"]["NAME"], rebuild=True)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from celery import current_app
    from django.db import connection
    from django_celery_results.models import TaskResult

    from benchmarks.core import tasks
    from django_taskqueue.models import TaskLog, TaskProgress

    variants = {name: getattr(tasks, VARIANTS[name]) for name in VARIANTS if name in chosen}
    layout = SplitLayout() if opts.split else None
    with layout if layout is not None else contextlib.nullcontext():
        where = layout.describe() if layout is not None else "every process on any CPU"
        print(f"layout: {where}")
        worker = start_worker(layout.worker_cpus if layout is not None else None)
        try:
            run_batch(tasks.plain, 200)  # warm-up: worker children, connections
            drains, drain_cpu = run_rounds(variants, run_drain, opts.tasks, opts.rounds, worker.pid)
            print(
                f"\nworker throughput, {opts.tasks} tasks queued first, then drained by the "
                f"worker (median of {opts.rounds} rounds; prefork -c 2, Redis broker, "
                f"PostgreSQL; {where}):"
            )
            worker_ratio = print_rates(drains, opts.tasks)["tracked"]
            print_cpu(drain_cpu, opts.tasks, "worker alone (producer: the queueing)")

            times, cpu = run_rounds(variants, run_batch, opts.tasks, opts.rounds, worker.pid)
            print(
                f"\nend to end, {opts.tasks} tasks published by this process while the worker runs "
                f"them ({where}):"
            )
            end_ratio = print_rates(times, opts.tasks)["tracked"]
            tracked = statistics.median(times["tracked"])
            results = statistics.median(times["results"])
            print(f"  tracked vs django-celery-results: {results / tracked:.2f}x")
            print_cpu(cpu, opts.tasks, "end to end")

            # Both phases ran every variant opts.rounds times.
            runs = 2 * opts.tasks * opts.rounds
            for variant in {"tracked", "floor", "batched"} & set(variants):
                name = variants[variant].name
                rows = TaskLog.objects.filter(task_name=name)
                recorded = rows.filter(status="completed").count()
                events = sum(1 for _ in rows.values_list("events__event_type", flat=True))
                assert recorded == runs, (name, recorded)
                assert events == 3 * recorded, (name, events)
            # Each results variant stored one row per task.
            stored = {"results", "results+started"} & set(variants)
            assert TaskResult.objects.count() == runs * len(stored)

            print("\npublishing cost per call (no worker consuming):")
            calls = min(opts.tasks, 1000)
            costs = {name: publish_cost(task, calls) for name, task in variants.items()}
            costs["row + plain"] = row_publish_cost(tasks.plain, calls)
            for name, (wall_ms, cpu_ms) in costs.items():
                print(
                    f"  {name:16s} {wall_ms:6.3f} ms per apply_async() "
                    f"({cpu_ms:.3f} ms of this process's CPU)"
                )
            TaskLog.objects.filter(task_name=tasks.plain.name).delete()
            redis_client = __import__("redis").Redis.from_url(os.environ["BENCH_BROKER"])
            redis_client.delete("unconsumed")

            progress_times, state_times = [], []
            for _ in range(opts.rounds):
                log = tasks.tracked_progress.submit(args=(opts.progress_calls,))
                done = TaskLog.objects.filter(pk=log.pk, status="completed")
                wait_until(done.exists)
                progress_times.append(TaskLog.objects.get(pk=log.pk).result)
                res = tasks.update_state.delay(opts.progress_calls)
                state_times.append(res.get(timeout=300))
            last = TaskProgress.objects.filter(task=log).order_by("-id").first()
            final = TaskLog.objects.get(pk=log.pk)
            assert last is not None
            assert last.progress == 100
            assert final.progress == 100
            writes = TaskProgress.objects.filter(task=log).count()
            p, s = statistics.median(progress_times), statistics.median(state_times)
            print(
                f"\n{opts.progress_calls} progress calls inside one task (median of {opts.rounds}):"
            )
            print(
                f"  update_progress (TrackedTask)     {p * 1000:8.1f} ms  ({writes} history rows, "
                f"final value {last.progress}% stored)"
            )
            print(f"  update_state (django-db backend)  {s * 1000:8.1f} ms")
            print(f"  update_progress costs {p / s:.3f} of update_state ({s / p:.0f}x cheaper)")
            del current_app, connection
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)

    # The targets of the recorder's design: the worker alone, with every process
    # sharing the cores or on a CPU of its own (--split), and end to end.
    worker_target = 0.85 if opts.split else 0.80
    checks = {
        f"worker throughput with TrackedTask >= {worker_target:.2f}x plain Celery (round by "
        f"round): {worker_ratio:.2f}x": worker_ratio >= worker_target,
        f"end to end with TrackedTask >= 0.65x plain Celery (round by round): "
        f"{end_ratio:.2f}x": end_ratio >= 0.65,
        f"update_progress <= 0.1 of update_state: {p / s:.3f}": p / s <= 0.1,
    }
    print("\ntargets:")
    for text, met in checks.items():
        print(f"  {'met   ' if met else 'MISSED'} {text}")
    if not all(checks.values()):
        raise SystemExit(1)


def wait_until(predicate: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
