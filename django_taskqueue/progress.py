"""Which ``update_progress`` calls reach the database: the throttling, as pure code.

A task may report progress thousands of times a second; :class:`ProgressBuffer`
decides which values are written (at most one per interval) and which of those
also get a history row. Nothing here touches the database, Celery or the
settings: :class:`~django_taskqueue.TrackedTask` feeds it, and
:mod:`django_taskqueue.lifecycle` writes the :class:`ProgressWrite` it hands out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressWrite:
    """One progress value to write, and whether it also gets a history row."""

    progress: int
    message: str
    data: Any
    history: bool


@dataclass
class ProgressBuffer:
    """Decides which ``update_progress`` calls reach the database.

    A value is written when ``min_interval`` seconds have passed since the last
    write; calls in between only replace the buffered value, so a task calling
    ``update_progress`` thousands of times a second causes at most one write per
    interval. A written value gets a history row when the percentage moved by
    ``step`` or more since the last history row, or the message changed.
    :meth:`flush`, at the end of a run, hands over the newest value so that it
    always lands, and always as the last history row.
    """

    min_interval: float
    step: float
    _last_write: float = -math.inf
    _history_percent: float | None = None
    _history_message: str | None = None
    _pending: tuple[float, str, Any] | None = field(default=None, repr=False)
    _unrecorded: ProgressWrite | None = field(default=None, repr=False)

    def offer(
        self, percent: float, message: str, data: Any, now: float | None = None
    ) -> ProgressWrite | None:
        """Buffer a value; return the write to make now, if one is due."""
        self._pending = (percent, message, data)
        now = time.monotonic() if now is None else now
        if now - self._last_write < self.min_interval:
            return None
        self._last_write = now
        return self._take(final=False)

    def flush(self) -> ProgressWrite | None:
        """Return the newest value not yet in the history, if any (once)."""
        if self._pending is not None:
            return self._take(final=True)
        write, self._unrecorded = self._unrecorded, None
        if write is None:
            return None
        return ProgressWrite(write.progress, write.message, write.data, True)

    def _take(self, *, final: bool) -> ProgressWrite | None:
        if self._pending is None:
            return None
        percent, message, data = self._pending
        self._pending = None
        history = (
            final
            or self._history_percent is None
            or abs(percent - self._history_percent) >= self.step
            or message != self._history_message
        )
        write = ProgressWrite(int(percent), message, data, history)
        if history:
            self._history_percent = percent
            self._history_message = message
            self._unrecorded = None
        else:
            self._unrecorded = write
        return write


def percent_from(percent: float | None, current: float | None, total: float | None) -> float:
    """Normalise ``update_progress`` arguments to a percentage in [0, 100].

    Raises:
        ValueError: neither a percentage nor a usable ``current``/``total`` pair.
    """
    if percent is None:
        if current is None or total is None:
            raise ValueError("give a percentage, or both current= and total=")
        if total <= 0:
            raise ValueError(f"total must be positive, got {total!r}")
        percent = 100.0 * current / total
    value = float(percent)
    if math.isnan(value):
        raise ValueError("progress is NaN")
    return min(100.0, max(0.0, value))
