"""Housekeeping: retention, stuck and lost tasks, and the periodic summary.

Plain functions that the Celery tasks in :mod:`django_taskqueue.tasks` and the
management commands call. Every status change goes through
:mod:`django_taskqueue.lifecycle`; retention deletes rows and changes no status.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.mail import send_mail
from django.db import DatabaseError, connections, models, router, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_taskqueue import broker, lifecycle, stats
from django_taskqueue.conf import RETENTION_STATUSES, conf
from django_taskqueue.exceptions import CleanupIncomplete
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress
from django_taskqueue.status import TaskStatus

logger = logging.getLogger("django_taskqueue.housekeeping")

# --- durations ---------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration :func:`parse_duration` accepts (about a century).
MAX_DURATION = timedelta(days=36_500)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration(text: str, default_unit: str = "d") -> timedelta:
    """Parse ``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (a bare number: ``default_unit``).

    Raises:
        ValueError: the text is not such a duration, or is longer than
            :data:`MAX_DURATION`.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a duration: use a number with s, m, h, d or w, e.g. 30d or 12h"
        )
    unit = (match.group(2) or default_unit).lower()
    seconds = float(match.group(1)) * _UNITS[unit]
    # Longer ones overflow timedelta or "now - duration" (an OverflowError).
    if not seconds <= MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is too long: at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


# --- retention -----------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One retention batch: what it deleted and how long its transaction took."""

    status: str
    tasks: int
    progress: int
    events: int
    seconds: float


@dataclass
class PurgeResult:
    """What :func:`purge_finished` deleted (or, in a dry run, would delete).

    Attributes:
        cutoffs: per status, rows finished before this moment are deleted.
        tasks: per status, the TaskLog rows deleted (or due, in a dry run).
        progress: TaskProgress rows deleted with them.
        events: TaskEventLog rows deleted with them.
        batches: the number of transactions.
        longest_batch: the longest transaction, in seconds.
        dry_run: nothing was deleted.
        complete: no task past its retention age was left when the run ended.
        remaining: the due tasks left when the run ended (``None``: they could
            not be counted, e.g. the database went away).
        stopped: why the run stopped before the end: ``"max_batches"``, or the
            error a batch raised; empty when it ran to the end.
    """

    cutoffs: dict[str, datetime] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    progress: int = 0
    events: int = 0
    batches: int = 0
    longest_batch: float = 0.0
    dry_run: bool = False
    complete: bool = True
    remaining: int | None = 0
    stopped: str = ""

    @property
    def total(self) -> int:
        """TaskLog rows deleted over all statuses."""
        return sum(self.tasks.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the Celery task's result)."""
        data = asdict(self)
        data["cutoffs"] = {k: v.isoformat() for k, v in self.cutoffs.items()}
        data["total"] = self.total
        return data


def retention_cutoffs(
    older_than: timedelta | None = None,
    statuses: Iterable[str] | None = None,
    now: datetime | None = None,
) -> dict[str, datetime]:
    """The ``completed_at`` cutoff per terminal status.

    Args:
        older_than: one age for every status (default: ``RETENTION`` per status,
            skipping statuses kept forever).
        statuses: limit to these terminal statuses.
        now: the reference time (default: now).

    Raises:
        ValueError: a status that is not terminal.
    """
    now = now or timezone.now()
    chosen = list(statuses) if statuses else list(RETENTION_STATUSES)
    wrong = [s for s in chosen if s not in RETENTION_STATUSES]
    if wrong:
        raise ValueError(
            f"retention applies to {', '.join(RETENTION_STATUSES)}; not to {', '.join(wrong)}"
        )
    ages = conf.RETENTION
    cutoffs = {}
    for status in chosen:
        age = older_than if older_than is not None else ages[status]
        if age is not None:
            cutoffs[status] = now - age
    return cutoffs


def _due(status: str, cutoff: datetime) -> models.QuerySet[TaskLog]:
    # Served by the (status, completed_at) index.
    return TaskLog.objects.filter(status=status, completed_at__lt=cutoff)


@dataclass(frozen=True)
class _Deleted:
    selected: int
    tasks: int
    progress: int
    events: int
    last_completed_at: datetime | None


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``, derived from a name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def take_turn(database: str, job: str, lock_timeout: float | None) -> None:
    """Wait, inside the caller's transaction, until no other run of ``job`` is in one.

    On PostgreSQL this takes a transaction-level advisory lock named after the
    job and the TaskLog table (released by the commit or rollback, and by
    PostgreSQL itself when a session dies), so the batches of two runs that
    overlap (the beat task and the command) take turns instead of deleting
    the same rows and deadlocking. ``lock_timeout`` (seconds) bounds the wait
    for this lock and for every row lock later in the transaction; ``None``
    waits for ever. Elsewhere it does nothing: SQLite runs one writer at a time.
    """
    connection = connections[database]
    if connection.vendor != "postgresql":
        return
    key = _advisory_key(f"django_taskqueue.{job}:{TaskLog._meta.db_table}")
    with connection.cursor() as cursor:
        if lock_timeout is not None:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)",
                [f"{max(1, round(lock_timeout * 1000))}ms"],
            )
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _delete_batch(
    database: str, status: str, cutoff: datetime, start: datetime | None, size: int
) -> _Deleted:
    """Delete one batch (at most ``size`` tasks) with their progress and events.

    The batch is the oldest due tasks from ``start`` on: walking the index
    forward from where the previous batch ended (keyset pagination) instead of
    from its beginning steps over none of the index entries that the previous
    batches left dead, so a batch costs the same at the end of a million rows
    as at the start.
    """
    if connections[database].vendor == "postgresql":
        return _delete_batch_postgresql(database, status, cutoff, start, size)
    due = _due(status, cutoff)
    if start is not None:
        due = due.filter(completed_at__gte=start)
    batch = list(due.order_by("completed_at").values_list("pk", "completed_at")[:size])
    if not batch:
        return _Deleted(0, 0, 0, 0, None)
    pks = [pk for pk, _ in batch]
    progress, _ = TaskProgress.objects.filter(task_id__in=pks).delete()
    events, _ = TaskEventLog.objects.filter(task_id__in=pks).delete()
    # The parent and retry_of links are SET_NULL; doing it here, explicitly,
    # spares Django's collector from loading every deleted row first.
    TaskLog.objects.filter(parent_id__in=pks).update(parent=None)
    TaskLog.objects.filter(retry_of_id__in=pks).update(retry_of=None)
    # A plain DELETE of the keys: QuerySet.delete() would load every row (JSON
    # results, tracebacks) into memory to run a collector with nothing left to
    # collect. Delete signals are therefore not sent for purged tasks.
    tasks = TaskLog.objects.filter(pk__in=pks)._raw_delete(database)
    return _Deleted(len(batch), tasks, progress, events, batch[-1][1])


def postgresql_batch_sql(database: str) -> str:
    """The one statement that deletes a retention batch on PostgreSQL.

    Parameters, in order: status, cutoff, the batch's lower ``completed_at``
    bound, batch size. Returns one row: selected, tasks, progress rows and
    events deleted, the batch's last ``completed_at``, links cleared (twice).
    """
    log = connections[database].ops.quote_name(TaskLog._meta.db_table)
    progress = connections[database].ops.quote_name(TaskProgress._meta.db_table)
    events = connections[database].ops.quote_name(TaskEventLog._meta.db_table)
    return f"""
        WITH batch AS MATERIALIZED (
            SELECT id, completed_at FROM {log}
            WHERE status = %s AND completed_at < %s AND completed_at >= %s
            ORDER BY completed_at LIMIT %s
        ),
        p AS (DELETE FROM {progress} WHERE task_id IN (SELECT id FROM batch) RETURNING 1),
        e AS (DELETE FROM {events} WHERE task_id IN (SELECT id FROM batch) RETURNING 1),
        c AS (
            UPDATE {log} SET parent_id = NULL
            WHERE parent_id IN (SELECT id FROM batch) AND id NOT IN (SELECT id FROM batch)
            RETURNING 1
        ),
        r AS (
            UPDATE {log} SET retry_of_id = NULL
            WHERE retry_of_id IN (SELECT id FROM batch) AND id NOT IN (SELECT id FROM batch)
            RETURNING 1
        ),
        t AS (DELETE FROM {log} WHERE id IN (SELECT id FROM batch) RETURNING 1)
        SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM t),
               (SELECT count(*) FROM p), (SELECT count(*) FROM e),
               (SELECT max(completed_at) FROM batch),
               (SELECT count(*) FROM c), (SELECT count(*) FROM r)
    """


def _delete_batch_postgresql(
    database: str, status: str, cutoff: datetime, start: datetime | None, size: int
) -> _Deleted:
    # One statement per batch: the batch's keys are selected once (a
    # materialized CTE) and never travel to Python and back, and the
    # children's links are cleared, the progress, events and tasks deleted
    # against that one set. Rows of the batch are excluded from the link
    # updates so no row is both updated and deleted by the statement.
    sql = postgresql_batch_sql(database)
    floor = start if start is not None else datetime.min.replace(tzinfo=cutoff.tzinfo)
    with connections[database].cursor() as cursor:
        # A batch lost to a database server crash is deleted again by the next
        # run, so its commit need not wait for the WAL to reach the disk.
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(sql, [status, cutoff, floor, size])
        selected, tasks, progress_n, events_n, last, _, _ = cursor.fetchone()
    return _Deleted(selected, tasks, progress_n, events_n, last)


def purge_finished(
    *,
    older_than: timedelta | None = None,
    statuses: Iterable[str] | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    max_batches: int | None = None,
    lock_timeout: float | None = 60.0,
) -> PurgeResult:
    """Delete finished tasks past their retention age, in bounded batches.

    Each batch selects at most ``batch_size`` primary keys through the
    ``(status, completed_at)`` index and deletes those tasks, their progress
    history and their events in one short transaction of its own; memory
    holds one batch of keys at a time, whatever the table's size.

    Runs may overlap (the beat task and the command, two beat schedulers): on
    PostgreSQL their batches take turns (see :func:`take_turn`), so they
    neither deadlock nor delete the same rows, and each run goes on until no
    due task is left. At the end the run counts the due tasks left over.

    Args:
        older_than: one age for every status, instead of ``RETENTION``.
        statuses: only these terminal statuses.
        batch_size: tasks per transaction (default ``RETENTION_BATCH_SIZE``).
        dry_run: only count what would be deleted.
        now: the reference time.
        on_batch: called after each committed batch (progress output, metrics).
        max_batches: stop after this many batches (the rest waits for the next run:
            the result then says ``complete=False``, ``stopped="max_batches"``).
        lock_timeout: seconds a batch waits for its turn and for row locks
            (``None``: for ever). A batch that times out stops the run.

    Returns:
        What was deleted (or is due, in a dry run).

    Raises:
        CleanupIncomplete: the run could not finish: a batch failed, or due
            tasks were left for another reason than ``max_batches``. What was
            deleted before stays deleted; the exception's ``result`` says how much.
    """
    size = batch_size or conf.RETENTION_BATCH_SIZE
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    result = PurgeResult(cutoffs=retention_cutoffs(older_than, statuses, now), dry_run=dry_run)
    if dry_run:
        for status, cutoff in result.cutoffs.items():
            result.tasks[status] = _due(status, cutoff).count()
        result.remaining = result.total
        result.complete = not result.total
        return result
    database = router.db_for_write(TaskLog)
    for status, cutoff in result.cutoffs.items():
        result.tasks[status] = 0
        if not _purge_status(
            result, database, status, cutoff, size, lock_timeout, on_batch, max_batches
        ):
            break
    result.remaining = _count_due(result, database, lock_timeout)
    result.complete = not result.stopped and result.remaining == 0
    if result.remaining and not result.stopped:
        # Every batch ended well, yet due rows are left: someone holds or
        # re-creates them. Say so rather than report a clean run.
        result.stopped = "due tasks were left behind"
    logger.info(
        "Retention deleted %d tasks (%s), %d progress rows and %d events in %d batches",
        result.total,
        ", ".join(f"{k}: {v}" for k, v in result.tasks.items()) or "none due",
        result.progress,
        result.events,
        result.batches,
    )
    if result.complete or result.stopped == "max_batches":
        return result
    left = "an unknown number of" if result.remaining is None else str(result.remaining)
    message = (
        f"cleanup could not finish: {result.stopped}; it deleted {result.total} tasks in "
        f"{result.batches} batches, and {left} due tasks remain for the next run"
    )
    logger.warning("%s", message)
    raise CleanupIncomplete(message, result)


def _purge_status(
    result: PurgeResult,
    database: str,
    status: str,
    cutoff: datetime,
    size: int,
    lock_timeout: float | None,
    on_batch: Callable[[Batch], None] | None,
    max_batches: int | None,
) -> bool:
    """Delete the due tasks of one status, batch by batch; ``False`` when the run must stop."""
    start: datetime | None = None
    while True:
        if max_batches is not None and result.batches >= max_batches:
            result.stopped = "max_batches"
            return False
        began = time.perf_counter()
        try:
            with transaction.atomic(using=database):
                take_turn(database, "cleanup", lock_timeout)
                deleted = _delete_batch(database, status, cutoff, start, size)
        except DatabaseError as exc:
            logger.warning("A retention batch of %s tasks failed", status, exc_info=True)
            # The driver's exception names the cause (LockNotAvailable,
            # DeadlockDetected...); Django's wrapper only its family.
            cause = exc.__cause__ or exc
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result.stopped = f"a batch failed: {type(cause).__name__}: {first_line}"
            return False
        seconds = time.perf_counter() - began
        if not deleted.selected:
            return True
        result.batches += 1
        result.longest_batch = max(result.longest_batch, seconds)
        result.tasks[status] += deleted.tasks
        result.progress += deleted.progress
        result.events += deleted.events
        if on_batch is not None:
            on_batch(Batch(status, deleted.tasks, deleted.progress, deleted.events, seconds))
        if deleted.selected < size:
            return True
        if not deleted.tasks and deleted.last_completed_at == start:
            # Selected again and deleted again by nobody: the run would go round.
            result.stopped = f"{deleted.selected} due {status} tasks could not be deleted"
            return False
        # Rows that someone else deleted while the batch waited for them count
        # for nothing, and the next batch starts after them all the same.
        start = deleted.last_completed_at


def _count_due(result: PurgeResult, database: str, lock_timeout: float | None) -> int | None:
    """The due tasks left, counted once any overlapping run's batch has committed.

    When that turn does not come within ``lock_timeout`` (another run is stuck
    in a batch), they are counted without waiting for it; ``None`` when they
    cannot be counted at all.
    """
    for wait in (True, False):
        try:
            with transaction.atomic(using=database):
                if wait:
                    take_turn(database, "cleanup", lock_timeout)
                return sum(
                    _due(status, cutoff).using(database).count()
                    for status, cutoff in result.cutoffs.items()
                )
        except DatabaseError:
            logger.warning("Could not count the due tasks left by the retention run", exc_info=True)
    return None


# --- stuck tasks -----------------------------------------------------------------------


@dataclass
class StaleResult:
    """What :func:`mark_stale_tasks` found and did (Celery ids).

    ``waiting``: stuck tasks left alone because the broker still holds their
    message and will deliver it again (an ``acks_late`` task on Redis).
    """

    failed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    dry_run: bool = False
    waiting: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the Celery task's result)."""
        return asdict(self)


def _registered_tasks() -> Mapping[str, Any]:
    from celery import current_app

    return current_app.tasks


def stale_threshold(task_name: str, tasks: Mapping[str, Any] | None = None) -> timedelta:
    """How long a running task of this name may go without a heartbeat.

    The task class's ``stale_after`` (seconds) when it has one, else ``STALE_AFTER``.
    """
    task = (tasks if tasks is not None else _registered_tasks()).get(task_name)
    own = getattr(task, "stale_after", None)
    if own is not None:
        return timedelta(seconds=float(own))
    return conf.STALE_AFTER


def find_stale(now: datetime | None = None, limit: int = 1000) -> list[tuple[TaskLog, timedelta]]:
    """Tasks in ``processing`` whose last sign of life is older than their threshold.

    Returns:
        ``(task_log, threshold)`` pairs, the longest silent first.
    """
    from django_taskqueue.tracked import TrackedTask

    now = now or timezone.now()
    tasks = _registered_tasks()
    thresholds = [conf.STALE_AFTER] + [
        timedelta(seconds=float(t.stale_after))
        for t in list(tasks.values())
        if isinstance(t, TrackedTask) and t.stale_after is not None
    ]
    candidates = (
        TaskLog.objects.stale(min(thresholds))
        .order_by(Coalesce("heartbeat_at", "started_at").asc())
        .only(
            "pk",
            "celery_task_id",
            "task_name",
            "status",
            "attempt",
            "queue",
            "args",
            "kwargs",
            "args_redacted",
            "heartbeat_at",
            "started_at",
            "worker",
        )[:limit]
    )
    found = []
    for log in candidates:
        threshold = stale_threshold(log.task_name, tasks)
        last_seen = log.heartbeat_at or log.started_at
        if last_seen is not None and last_seen < now - threshold:
            found.append((log, threshold))
    return found


def requeue_allowed(log: TaskLog, task: Any) -> bool:
    """Whether a stuck task may be re-queued rather than failed (the documented policy).

    All must hold: the task class is a registered TrackedTask with
    ``acks_late`` and ``idempotent`` set, its arguments were stored and not
    redacted (``STORE_ARGS``), and its retry budget (``max_retries``) is not spent.
    """
    from django_taskqueue.tracked import TrackedTask

    if not isinstance(task, TrackedTask):
        return False
    if not (task.acks_late and task.idempotent):
        return False
    if not conf.STORE_ARGS or log.args_redacted:
        return False
    return task.max_retries is None or log.attempt < task.max_retries


def mark_stale_tasks(
    *, now: datetime | None = None, dry_run: bool = False, limit: int = 1000
) -> StaleResult:
    """Fail (or re-queue, where the task allows it) the tasks stuck in ``processing``.

    A stuck task is failed with ``error_code="worker_lost"`` and a ``stale``
    event. One whose class is ``acks_late`` and ``idempotent`` (see
    :func:`requeue_allowed`) moves to ``retrying`` with a ``requeued`` event
    and its message is published again with the same Celery id as the next
    attempt. One that is neither but whose message the broker was seen
    holding (Redis's unacked hash: an ``acks_late`` task of a dead worker) is
    left alone, in ``waiting``: the broker delivers it again. A failure marked
    here is only presumed: a later delivery reopens the task (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`).
    """
    from celery import current_app

    now = now or timezone.now()
    result = StaleResult(dry_run=dry_run)
    tasks = _registered_tasks()
    stale = find_stale(now, limit)
    view = None
    if stale and not dry_run:
        default_queue = str(current_app.conf.task_default_queue or "celery")
        view = broker.look(
            current_app,
            {_queue_of(current_app, log.task_name, log.queue, default_queue) for log, _ in stale},
        )
    for log, threshold in stale:
        result.found.append(log.celery_task_id)
        if dry_run:
            continue
        cutoff = now - threshold
        last_seen = log.heartbeat_at or log.started_at
        meta = {
            "last_seen": last_seen,
            "threshold_seconds": threshold.total_seconds(),
            "worker": log.worker,
        }
        silence = f"no heartbeat from {log.worker or 'its worker'} for over {threshold}"
        task = tasks.get(log.task_name)
        held = view.holds(log.celery_task_id) if view is not None else ""
        if held and not requeue_allowed(log, task):
            result.waiting.append(log.celery_task_id)
            logger.info("Stuck task %s left alone: %s", log.celery_task_id, held)
            continue
        if requeue_allowed(log, task):
            outcome = lifecycle.requeue_stale(
                log.pk,
                cutoff=cutoff,
                attempt=log.attempt,
                reason=f"re-queued: {silence}",
                metadata=meta,
            )
            if outcome.applied:
                _publish_again(log, task)
                result.requeued.append(log.celery_task_id)
            continue
        outcome = lifecycle.mark_stale(
            log.pk, cutoff=cutoff, error_message=f"worker lost: {silence}", metadata=meta
        )
        if outcome.applied:
            result.failed.append(log.celery_task_id)
    if result.found and not dry_run:
        logger.warning(
            "Stuck tasks: %d failed as worker_lost, %d re-queued, %d left to the broker's "
            "redelivery",
            len(result.failed),
            len(result.requeued),
            len(result.waiting),
        )
    return result


def _publish_again(log: TaskLog, task: Any) -> None:
    options: dict[str, Any] = {"task_id": log.celery_task_id, "retries": log.attempt + 1}
    if log.queue:
        options["queue"] = log.queue
    try:
        task.apply_async(args=log.args, kwargs=log.kwargs, **options)
    except Exception as exc:
        logger.exception("Could not re-queue stuck task %s", log.celery_task_id)
        lifecycle.mark_failed(
            pk=log.pk,
            error_message=f"could not re-queue the stuck task: {exc}",
            error_code="publish_failed",
        )


# --- lost messages ----------------------------------------------------------------------


@dataclass
class LostResult:
    """What :func:`reconcile_lost` did (Celery ids)."""

    marked: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    checked: int = 0
    skipped_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the Celery task's result)."""
        return asdict(self)


def _ids_from_inspect(replies: Mapping[str, Any] | None) -> set[str]:
    ids: set[str] = set()
    for entries in (replies or {}).values():
        for entry in entries or ():
            if not isinstance(entry, Mapping):
                continue
            request = entry.get("request")
            task_id = request.get("id") if isinstance(request, Mapping) else entry.get("id")
            if task_id:
                ids.add(str(task_id))
    return ids


def _queue_of(app: Any, task_name: str, queue: str, default: str) -> str:
    """The queue a task's message went to: the recorded one, else where routing sends it."""
    if queue:
        return queue
    try:
        routed = app.amqp.router.route({}, task_name).get("queue")
    except Exception:
        return default
    return str(getattr(routed, "name", routed) or default)


def _consumers(replies: Mapping[str, Any] | None) -> dict[str, int]:
    """Per queue, how many of the workers that answered ``active_queues`` consume it."""
    counts: dict[str, int] = {}
    for queues in (replies or {}).values():
        for queue in queues or ():
            name = queue.get("name") if isinstance(queue, Mapping) else None
            if name:
                counts[str(name)] = counts.get(str(name), 0) + 1
    return counts


def reconcile_lost(
    *,
    now: datetime | None = None,
    inspect_timeout: float = 2.0,
    limit: int = 500,
    app: Any = None,
) -> LostResult:
    """Fail ``pending`` tasks whose message is gone (``error_code="lost"``).

    A task is marked lost only when all hold: it is ``pending`` and older than
    ``LOST_AFTER``; no worker reports its id as active, reserved or scheduled
    (``inspect``, bounded by ``inspect_timeout``); the result backend, when
    there is one, knows no state for it; and no broker structure can still
    deliver its message (see :mod:`django_taskqueue.broker`: on Redis its
    queue and the ``unacked`` hash that holds the messages a dead worker had
    fetched until the visibility timeout; on RabbitMQ its queue's ready
    messages and any consumer that did not answer). The broker is read twice,
    before and after the inspect, and a message seen in either reading is
    not lost: a message moving between the queue, a worker and the unacked
    hash is caught on one side or the other.

    Nothing is marked when no worker answers the inspect (unreachable workers
    are not evidence of lost messages), when the broker cannot be read, or on
    a transport whose in-flight messages cannot be seen. A task marked lost
    whose message comes back all the same is reopened and run (see
    :data:`~django_taskqueue.status.PRESUMED_FAILURES`).
    """
    from celery import current_app

    app = app or current_app
    now = now or timezone.now()
    created_before = now - conf.LOST_AFTER
    rows = list(
        TaskLog.objects.filter(status=TaskStatus.PENDING, created_at__lt=created_before)
        .order_by("created_at")
        .values_list("pk", "celery_task_id", "task_name", "queue")[:limit]
    )
    result = LostResult(checked=len(rows))
    if not rows:
        return result
    default_queue = str(app.conf.task_default_queue or "celery")
    queues = {pk: _queue_of(app, name, queue, default_queue) for pk, _, name, queue in rows}
    before = broker.look(app, queues.values())
    if not before.usable:
        return _skip(result, _unreadable(before))
    inspect = app.control.inspect(timeout=inspect_timeout)
    replies = [inspect.active(), inspect.reserved(), inspect.scheduled()]
    if not any(replies):
        return _skip(
            result,
            "no worker answered the inspect",
            f"{len(rows)} tasks are pending for over {conf.LOST_AFTER}, but no worker answered "
            f"the inspect within {inspect_timeout:.1f}s",
        )
    consumers = _consumers(inspect.active_queues()) if before.transport == "amqp" else None
    after = broker.look(app, queues.values(), consumers=consumers)
    if not after.usable:
        return _skip(result, _unreadable(after))
    known: set[str] = set()
    for reply in replies:
        known |= _ids_from_inspect(reply)
    workers = sorted({host for reply in replies for host in (reply or {})})
    for pk, celery_task_id, _, _ in rows:
        if celery_task_id in known or _backend_knows(app, celery_task_id):
            result.known.append(celery_task_id)
            continue
        name = queues[pk]
        if before.may_deliver(celery_task_id, name) or after.may_deliver(celery_task_id, name):
            result.waiting.append(celery_task_id)
            continue
        outcome = lifecycle.mark_lost(
            pk,
            created_before=created_before,
            error_message=(
                f"lost: pending for over {conf.LOST_AFTER}, and no worker, result backend "
                f"or broker structure ({after.transport}: queue {name}"
                + (", unacked messages" if after.transport == "redis" else "")
                + ") holds the message"
            ),
            metadata={"queue": name, "transport": after.transport, "workers": workers},
        )
        if outcome.applied:
            result.marked.append(celery_task_id)
    if result.marked:
        logger.warning("reconcile_lost: marked %d pending tasks as lost", len(result.marked))
    return result


def _backend_knows(app: Any, celery_task_id: str) -> bool:
    """Whether the result backend, when there is one, has a state for the task."""
    from celery.backends.base import DisabledBackend
    from celery.result import AsyncResult

    if isinstance(app.backend, DisabledBackend):
        return False
    try:
        state: str = AsyncResult(celery_task_id, app=app).state
    except Exception:
        logger.warning("Could not ask the result backend about %s", celery_task_id)
        return True  # unknown: not evidence of a lost message
    return state != "PENDING"


def _unreadable(view: broker.BrokerView) -> str:
    if view.error:
        return f"the broker could not be read ({view.error})"
    return f"the {view.transport} transport does not show the messages in flight"


def _skip(result: LostResult, reason: str, detail: str = "") -> LostResult:
    result.skipped_reason = reason
    logger.warning("reconcile_lost: %s; nothing marked", detail or reason)
    return result


# --- the summary ------------------------------------------------------------------------


def build_report(
    window: timedelta = timedelta(days=1), now: datetime | None = None, top: int = 5
) -> dict[str, Any]:
    """Summarise the tasks of the last ``window``.

    The figures are those of :mod:`django_taskqueue.stats`, over the window
    from ``now - window`` to ``now``.

    Returns:
        A JSON-friendly dict: ``created`` (counts per status of the tasks
        created in the window), ``finished`` (per terminal status, by
        ``completed_at``), ``failure_rate`` (failed / (completed + failed),
        ``None`` when nothing finished), ``slowest`` (the ``top`` task types by
        mean run time, with count and maximum, in seconds), ``errors`` (the
        most frequent error codes), ``stuck`` and ``active`` (now).
    """
    now = now or timezone.now()
    since = now - window
    finished = stats.ended_counts(since, now)
    rate = finished.failure_rate
    return {
        "since": since.isoformat(),
        "until": now.isoformat(),
        "window_seconds": window.total_seconds(),
        "created": stats.created_counts(since),
        "finished": finished.counts(),
        "failure_rate": None if rate is None else round(rate, 4),
        "slowest": [
            {
                "type": row.kind or "(unnamed)",
                "count": row.count,
                "mean_seconds": round(row.mean_seconds, 3),
                "max_seconds": round(row.max_seconds, 3),
            }
            for row in stats.slowest(since, now, top)
        ],
        "errors": [
            {"error_code": row.error_code or "(none)", "count": row.count}
            for row in stats.failures_by_error_code(since, now, top)
        ],
        "stuck": stats.stuck_count(conf.STALE_AFTER),
        "active": stats.active_counts()["total"],
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The summary as plain text (the e-mail body and the log line)."""
    rate = report["failure_rate"]
    lines = [
        f"django-taskqueue summary, {report['since']} to {report['until']}",
        "",
        "Created: "
        + ", ".join(f"{k} {v}" for k, v in report["created"].items() if k != "total")
        + f" (total {report['created']['total']})",
        "Finished: " + ", ".join(f"{k} {v}" for k, v in report["finished"].items()),
        "Failure rate: " + ("n/a" if rate is None else f"{rate * 100:.1f}%"),
        f"Active now: {report['active']}, stuck now: {report['stuck']}",
    ]
    if report["slowest"]:
        lines += ["", "Slowest task types (mean / max seconds, runs):"]
        lines += [
            f"  {row['type']}: {row['mean_seconds']:.3f} / {row['max_seconds']:.3f}, {row['count']}"
            for row in report["slowest"]
        ]
    if report["errors"]:
        lines += ["", "Most frequent errors:"]
        lines += [f"  {row['error_code']}: {row['count']}" for row in report["errors"]]
    return "\n".join(lines) + "\n"


def send_report(
    window: timedelta = timedelta(days=1),
    recipients: Iterable[str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the summary, log it, and mail it to ``recipients`` (default ``REPORT_RECIPIENTS``).

    Mail goes through Django's mail framework (``EMAIL_BACKEND``,
    ``DEFAULT_FROM_EMAIL``); a sending error propagates after the summary was logged.

    Returns:
        The report, plus ``recipients`` (the addresses mailed).
    """
    report = build_report(window, now)
    text = format_report(report)
    logger.info("%s", text)
    to = list(recipients) if recipients is not None else conf.REPORT_RECIPIENTS
    if to:
        rate = report["failure_rate"]
        subject = (
            f"[django-taskqueue] {report['created']['total']} tasks, "
            + ("no finished tasks" if rate is None else f"{rate * 100:.1f}% failed")
            + f" in the last {_human(window)}"
        )
        send_mail(subject, text, None, to)
    return {**report, "recipients": to}


def _human(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
