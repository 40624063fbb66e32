"""Each process's recorder thread: a worker's task ends in batches, and what an outage held.

Two kinds of write wait here for the thread, in one queue and one order:

- **Ends queued on purpose** (:meth:`HeldWrites.queue`): a worker's pool process
  hands each task's end to the thread, which lets the ends of the next
  ``LINGER`` seconds gather and writes them with one call of
  :func:`~django_taskqueue.lifecycle.write_marks`, off the tasks' path.
- **Writes an outage held** (:meth:`HeldWrites.hold`), below.

A worker keeps running tasks while its database is down: Celery's broker and
result backend are elsewhere. Each start, retry and end that cannot be written
then would be gone for good, and once the database is back the housekeeping
would fail the finished tasks as ``lost`` (their rows still say ``pending``) or
``worker_lost`` (``processing``, with a heartbeat that stopped). Instead, a
write that fails because the database is *unavailable* (Django's
:exc:`~django.db.OperationalError` or :exc:`~django.db.InterfaceError`: refused,
timed out, connection lost) is held here and stored by a thread of the process
as soon as the database answers again, with the time it happened (see
:func:`~django_taskqueue.lifecycle.recorded_at`):

- the writes of one task are stored in the order they were made: while a task
  has writes held, its later ones are held behind them, never tried first;
- the held writes of one process are bounded by ``HELD_RECORDS_MAX``; beyond it
  a write is dropped (and said so, once), as it was before there was holding;
- the outage is said in the log once when the first write is held, and once
  when the last is stored (how many, after how long);
- a write that fails for any other reason (a bug, a constraint) is not an
  outage: it is logged and dropped, never retried forever;
- a stopping worker process waits up to ``HELD_RECORDS_WAIT`` seconds for its
  held writes to be stored (:func:`drain`); an ``acks_late`` task waits as long
  for its own before its message is acknowledged
  (:meth:`HeldWrites.wait_stored`), so a crash after the ack cannot lose them.

What is held lives in the process's memory: a process killed while holding
loses those records, which the detectors then report (``lost``,
``worker_lost``), as they did before.

It imports no Celery, and of the lifecycle only its clock: the caller hands it
the write to make, as a function (and the function that makes many at once).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import InterfaceError, OperationalError, connections

from django_taskqueue.conf import conf
from django_taskqueue.failurelog import recording_failures
from django_taskqueue.lifecycle.records import recorded_at

logger = logging.getLogger("django_taskqueue")

#: The errors that mean the database is unavailable, not that the write is wrong.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (so the write can wait)."""
    return isinstance(exc, UNAVAILABLE)


#: Seconds the recorder thread lets ends gather before it writes them (see queue()).
LINGER = 0.01
#: The most ends one batch writes.
BATCH_MAX = 500


@dataclass
class _Held:
    what: str
    task_id: str
    at: datetime
    write: Callable[[], Any]
    # Writes that can be made together: the function that writes many, and this one's part.
    batch: Callable[[list[Any]], Any] | None = None
    item: Any = None


class HeldWrites:
    """The writes of one process that wait for the database, and the thread that stores them.

    Args:
        first_retry: seconds before the first retry after a failed attempt; each
            failure doubles it, up to ``longest_retry``.
        longest_retry: the longest wait between two attempts.
    """

    def __init__(self, first_retry: float = 0.2, longest_retry: float = 2.0) -> None:
        self.first_retry = first_retry
        self.longest_retry = longest_retry
        self._lock = threading.Condition()
        self._reset()
        # A forked process (a pool child) starts with nothing held and no thread:
        # the parent's held writes are the parent's to store.
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._queue: deque[_Held] = deque()
        self._per_task: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._episode_began: float | None = None
        self._stored = 0
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def outage(self) -> bool:
        """Whether writes are held because the database was unavailable (until all are stored)."""
        return self._episode_began is not None

    def holds(self, task_id: str | None) -> bool:
        """Whether writes of ``task_id`` are held (a later one must wait behind them)."""
        # Read without the lock: a dict lookup is atomic, and this runs on every write.
        return bool(task_id) and self._per_task.get(str(task_id), 0) > 0

    def hold(self, what: str, task_id: str | None, write: Callable[[], Any], at: datetime) -> bool:
        """Keep ``write`` (what happened at ``at``) to be stored when the database is back.

        Returns:
            ``False`` if it was dropped: the process holds ``HELD_RECORDS_MAX`` already.
        """
        with self._lock:
            self._outage()
            return self._append(_Held(what, str(task_id or ""), at, write), what)

    def queue(
        self,
        what: str,
        task_id: str | None,
        write: Callable[[], Any],
        at: datetime,
        *,
        batch: Callable[[list[Any]], Any] | None = None,
        item: Any = None,
    ) -> bool:
        """Have the thread store ``write`` with what else queues meanwhile, off the caller's path.

        Consecutive queued writes with the same ``batch`` function are stored by
        one call of it, with their ``item`` s; ``write`` stores one alone (when
        the batch fails for another reason than an outage, to find the bad one).

        Returns:
            ``False`` when the queue is full: a write that can be batched is the
            caller's to make itself; any other is dropped, as :meth:`hold` drops.
        """
        with self._lock:
            if batch is not None and len(self._queue) >= _limit():
                return False
            return self._append(_Held(what, str(task_id or ""), at, write, batch, item), what)

    def _append(self, held: _Held, what: str) -> bool:
        """Queue ``held``, or drop it (and say so once) when ``HELD_RECORDS_MAX`` are waiting."""
        if len(self._queue) >= _limit():
            self._dropped += 1
            if self._dropped == 1:
                logger.error(
                    "django_taskqueue holds %d records waiting for the database "
                    "(HELD_RECORDS_MAX): dropping %s for task %s and the records after "
                    "it until some are stored",
                    len(self._queue),
                    what,
                    held.task_id,
                )
            return False
        self._queue.append(held)
        if held.task_id:
            self._per_task[held.task_id] += 1
        self._ensure_thread()
        self._lock.notify_all()
        return True

    def _outage(self) -> None:
        """Say once that this process holds records for a database that is gone."""
        if self._episode_began is None:
            self._episode_began = time.monotonic()
            logger.warning(
                "django_taskqueue cannot reach the database: holding the records of "
                "this process (pid %d) and storing them once it is back",
                os.getpid(),
            )

    def wait_stored(self, task_id: str | None, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no write of ``task_id`` is held.

        Returns:
            Whether they were all stored (or dropped) in time.
        """
        key = str(task_id or "")
        with self._lock:
            return self._lock.wait_for(lambda: self._per_task.get(key, 0) == 0, timeout)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every held write is stored; log what is left."""
        with self._lock:
            if not self._queue:
                return True
            done = self._lock.wait_for(lambda: not self._queue, timeout)
            if not done:
                logger.error(
                    "django_taskqueue: %d records held through a database outage are lost "
                    "with this process (pid %d): the database did not come back within %.0f s",
                    len(self._queue),
                    os.getpid(),
                    timeout,
                )
            return done

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._run, name="django-taskqueue-held-records", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        delay = self.first_retry
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._queue))
                lingering = self._queue[0].batch is not None and self._episode_began is None
            if lingering:
                time.sleep(LINGER)  # let the ends of the next few tasks join this batch
            with self._lock:
                batch = self._next_batch()
            if self._store_batch(batch):
                delay = self.first_retry
                continue
            time.sleep(delay)
            delay = min(delay * 2, self.longest_retry)

    def _next_batch(self) -> list[_Held]:
        """The oldest write, with the writes after it that its batch function can take."""
        first = self._queue[0]
        batch = [first]
        if first.batch is None:
            return batch
        for held in list(self._queue)[1:BATCH_MAX]:
            if held.batch is not first.batch:
                break
            batch.append(held)
        return batch

    def _store_batch(self, batch: list[_Held]) -> bool:
        """Store ``batch``; ``False`` while the database is unavailable (all of it kept)."""
        first = batch[0]
        if first.batch is None or len(batch) == 1:
            return self._store(first)
        try:
            first.batch([held.item for held in batch])
        except Exception as exc:
            drop_broken_connections()
            if unavailable(exc):
                self._failed(exc)
                return False
            # Not an outage: one of them is bad. Alone, each is stored or dropped.
            return all(self._store(held) for held in batch)
        recording_failures.succeeded()
        self._done(batch)
        return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._outage()
        recording_failures.failed(
            "held records", exc, "django_taskqueue could not record the held records yet"
        )

    def _store(self, held: _Held) -> bool:
        """Try the oldest held write; ``False`` while the database is still unavailable."""
        try:
            with recorded_at(held.at):
                held.write()
        except Exception as exc:
            drop_broken_connections()
            if unavailable(exc):
                self._failed(exc)
                return False
            # Not an outage (a constraint, tables never migrated): said as a task's own
            # failed write is, through the failure log (once, with any advice), and dropped.
            recording_failures.failed(
                held.what,
                exc,
                "django_taskqueue could not record %s for task %s",
                held.what,
                held.task_id,
            )
        else:
            recording_failures.succeeded()
        self._done([held])
        return True

    def _done(self, stored: list[_Held]) -> None:
        with self._lock:
            for held in stored:
                self._queue.popleft()
                if held.task_id:
                    self._per_task[held.task_id] -= 1
                    if self._per_task[held.task_id] <= 0:
                        del self._per_task[held.task_id]
            if self._episode_began is not None:
                self._stored += len(stored)
                if not self._queue:
                    self._outage_over()
            self._lock.notify_all()

    def _outage_over(self) -> None:
        began = self._episode_began or time.monotonic()
        logger.warning(
            "django_taskqueue stored %d held records after %.1f s%s",
            self._stored,
            time.monotonic() - began,
            f"; {self._dropped} were dropped (HELD_RECORDS_MAX)" if self._dropped else "",
        )
        self._episode_began = None
        self._stored = self._dropped = 0
        # Like the heartbeat thread: no connection kept that the outage may have left stale.
        connections.close_all()


def drop_broken_connections() -> None:
    """Close this thread's database connections that a failed write left unusable.

    Django replaces a broken connection only at the end of a request, and a
    worker with ``CELERY_DB_REUSE_MAX`` keeps its connection across tasks: a
    connection lost while the database restarted would fail every later write
    of the process, long after the database is back. A connection inside the
    caller's transaction (or with autocommit turned off) is left alone: closing
    it would discard their work.
    """
    for conn in connections.all(initialized_only=True):
        try:
            if conn.connection is None or conn.in_atomic_block or not conn.get_autocommit():
                continue
            conn.close_if_unusable_or_obsolete()
        except Exception:
            logger.debug("could not close a broken database connection", exc_info=True)


def _limit() -> int:
    return conf.HELD_RECORDS_MAX


#: The held writes of this process.
held_writes = HeldWrites()


def hold_if_unavailable(
    what: str, task_id: str | None, exc: BaseException, write: Callable[[], Any], at: datetime
) -> bool:
    """Hold ``write`` if ``exc`` says the database is unavailable; whether it was held."""
    return unavailable(exc) and held_writes.hold(what, task_id, write, at)


def drain(timeout: float | None = None) -> bool:
    """Store this process's held writes, waiting up to ``HELD_RECORDS_WAIT`` seconds."""
    return held_writes.drain(conf.HELD_RECORDS_WAIT if timeout is None else timeout)
