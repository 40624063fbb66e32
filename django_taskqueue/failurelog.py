"""A log of recording failures that reports an outage once, not once per call.

When the database goes away, every progress report, start, end and heartbeat
of every running task fails to record, many times a second. One traceback per
failure buries the log (hundreds per worker in a twenty-second outage) and
says nothing the first one did not. :class:`FailureLog` turns that into:

- one line for the first failure of each kind (what was being recorded, and
  the exception's class), with the traceback of the first failure of each
  exception class;
- the repeats only counted, with a reminder of the counts every
  ``remind_every`` seconds while the failures go on;
- one summary when a write succeeds again: how long it lasted and how many
  writes failed, of which kind.

Nothing is said more than once per ``remind_every`` seconds about the same
thing: a kind logged a moment ago is counted, not logged again, when it fails
again after a success, and a second summary within that time waits until it
has passed. A write that keeps failing between successes of others (one
task's bad data) therefore costs a few lines a minute, not a line per call.

A failure that a ``diagnose`` function can explain (a setup mistake that
lasts, such as tables never migrated) is not an outage: its explanation, which
says what to do, is logged once per process instead, and nothing else.

It knows nothing of databases or Celery: the caller says what failed and when
a write succeeded, and :mod:`django_taskqueue.diagnosis` explains the failures
of :data:`recording_failures`. It is safe to call from several threads (a
worker's task threads and its heartbeat thread share one).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django_taskqueue.serialization import error_message_for

#: How much of an exception's message the one-line report keeps.
MESSAGE_CHARS = 300


@dataclass
class _Episode:
    """Failures that no summary has reported yet."""

    since: float
    reminded: float
    failures: Counter[str] = field(default_factory=Counter)
    reported: set[tuple[str, str]] = field(default_factory=set)
    repeats: int = 0
    #: The first success after the latest failure, while the summary waits.
    recovered_at: float | None = None

    def counts(self) -> str:
        """``"370 progress, 11 success"``: the failures by kind, most frequent first."""
        return ", ".join(f"{n} {kind}" for kind, n in self.failures.most_common())


def _one_line(exc: BaseException) -> str:
    text = " ".join(error_message_for(exc).split())
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 3] + "..."
    return text


class FailureLog:
    """Rate-limited logging of repeated failures, keyed by kind, with a recovery summary.

    Args:
        logger: where the lines go (failures at ERROR, reminders and
            summaries at WARNING).
        subject: what is failing, for the reminder and the summary ("recording").
        remind_every: seconds between two lines about the same thing: the
            first line of a kind, a traceback of an exception class, a
            reminder, a summary.
        clock: a monotonic clock (tests pass their own).
        diagnose: returns what to do about a failure whose cause it knows, or
            ``None``; such a failure is logged as that advice (at ERROR, once
            per process) and not counted as an outage.

    Example::

        failures = FailureLog(logger)
        try:
            write()
        except Exception as exc:
            failures.failed("progress", exc, "could not record progress for task %s", task_id)
        else:
            failures.succeeded()
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        subject: str = "recording",
        remind_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        diagnose: Callable[[BaseException], str | None] | None = None,
    ) -> None:
        self.logger = logger
        self.subject = subject
        self.remind_every = remind_every
        self._clock = clock
        self._diagnose = diagnose
        self.reset()

    def reset(self) -> None:
        """Forget everything (a forked child starts with a clean log, and a fresh lock)."""
        self._lock = threading.Lock()
        self._episode: _Episode | None = None
        self._reported: dict[tuple[str, str], float] = {}
        self._traced: dict[str, float] = {}
        self._summarised: float | None = None
        self._advised: set[str] = set()

    @property
    def failing(self) -> bool:
        """Whether failures were reported that no summary has covered yet."""
        return self._episode is not None

    def _recent(self, when: float | None, now: float) -> bool:
        return when is not None and now - when < self.remind_every

    def failed(self, kind: str, exc: BaseException, message: str, *args: object) -> None:
        """Report a failure; logged if it is the first of its kind (see the module's rules).

        Args:
            kind: what was being done ("progress", "start", "heartbeat"...);
                the summary counts failures by it.
            exc: the error; its class is part of the kind, so a new sort of
                error during an outage is still reported.
            message: the line's text (``%``-style, formatted only when logged).
            *args: the arguments of ``message``.
        """
        if self._diagnose is not None and self._advise(exc):
            return
        now = self._clock()
        error = type(exc).__qualname__
        key = (kind, error)
        trace = False
        reminder: tuple[float, int, str, int] | None = None
        with self._lock:
            episode = self._episode
            if episode is None:
                episode = self._episode = _Episode(since=now, reminded=now)
            episode.recovered_at = None
            episode.failures[kind] += 1
            # Once per kind while the failures last, and not again at once
            # when the same write fails again right after a success.
            first = key not in episode.reported and not self._recent(self._reported.get(key), now)
            episode.reported.add(key)
            if first:
                self._reported[key] = now
                trace = not self._recent(self._traced.get(error), now)
                if trace:
                    self._traced[error] = now
            else:
                episode.repeats += 1
                if now - episode.reminded >= self.remind_every:
                    episode.reminded = now
                    reminder = (
                        now - episode.since,
                        episode.failures.total(),
                        episode.counts(),
                        episode.repeats,
                    )
        # Log outside the lock: a slow handler must not hold up the other threads.
        if first:
            self.logger.error(
                f"{message}: %s: %s (repeats are counted, not logged, until {self.subject} "
                "works again)",
                *args,
                error,
                _one_line(exc),
                exc_info=exc if trace else None,
            )
        elif reminder is not None:
            self.logger.warning(
                "django_taskqueue: %s still failing after %.1f s; %d writes failed: %s "
                "(%d repeats not logged)",
                self.subject,
                *reminder,
            )

    def _advise(self, exc: BaseException) -> bool:
        """Log what ``diagnose`` says to do about ``exc``, unless it was said; whether it knew."""
        assert self._diagnose is not None
        try:
            advice = self._diagnose(exc)
        except Exception:  # a broken diagnosis must not break the caller's error handling
            return False
        if advice is None:
            return False
        with self._lock:
            first = advice not in self._advised
            self._advised.add(advice)
        if first:
            self.logger.error("%s", advice)
        return True

    def succeeded(self) -> None:
        """Report a successful write: ends the failures with their summary line.

        Costs a property read when nothing failed (no lock), so it can follow
        every write. Within ``remind_every`` of the previous summary, the summary
        waits for a later success (failures in between are added to it).
        """
        if not self.failing:
            return
        now = self._clock()
        with self._lock:
            episode = self._episode
            if episode is None:
                return  # another thread reported the recovery first
            if episode.recovered_at is None:
                episode.recovered_at = now
            if self._recent(self._summarised, now):
                return
            self._episode = None
            self._summarised = now
        self.logger.warning(
            "django_taskqueue: %s recovered after %.1f s; %d writes failed: %s "
            "(%d repeats not logged)",
            self.subject,
            episode.recovered_at - episode.since,
            episode.failures.total(),
            episode.counts(),
            episode.repeats,
        )


def _explain(exc: BaseException) -> str | None:
    # Imported when needed: it reads the models and the database's tables.
    from django_taskqueue.diagnosis import explain

    return explain(exc)


#: The failures of the writes that record tasks, in this process: TrackedTask's
#: hooks, the worker's request class, the revoke receiver and the heartbeat thread.
recording_failures = FailureLog(logging.getLogger("django_taskqueue"), diagnose=_explain)

if hasattr(os, "register_at_fork"):
    # A prefork pool child must not inherit its parent's outage (nor a lock
    # that another thread of the parent held at the fork).
    os.register_at_fork(after_in_child=recording_failures.reset)
