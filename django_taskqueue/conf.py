"""Settings, read live from ``settings.DJANGO_TASKQUEUE``.

Every key is optional. The values are looked up on each access, never cached at
import time, so ``override_settings`` and settings changed in tests just work.
The settings' system check (:mod:`django_taskqueue.setting_checks`) validates the
values; a value it calls an error is read as its default, with one logged error (a
bad setting must not fail every task a worker records).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings

from django_taskqueue.defaults import (
    DEFAULT_REDACT_KEYS,
    DEFAULTS,
    DOCS_URL,
    FALLBACKS,
    RETENTION_STATUSES,
    as_timedelta,
    docs_url,
)
from django_taskqueue.setting_checks import setting_errors

if TYPE_CHECKING:
    from django.core.checks import CheckMessage

# The defaults and helpers live in django_taskqueue.defaults; they are re-exported here,
# where callers have always imported them from.
__all__ = [
    "DEFAULTS",
    "DEFAULT_REDACT_KEYS",
    "DOCS_URL",
    "FALLBACKS",
    "RETENTION_STATUSES",
    "TaskQueueSettings",
    "as_timedelta",
    "conf",
]

logger = logging.getLogger("django_taskqueue")


class TaskQueueSettings:
    """Typed, live view of ``settings.DJANGO_TASKQUEUE``.

    Use the module-level instance :data:`conf`::

        from django_taskqueue.conf import conf

        if conf.ENABLED:
            ...
    """

    def __init__(self) -> None:
        # The verdict of the system checks on the latest DJANGO_TASKQUEUE seen: a copy of
        # it, and the error of each key they found wrong. Replaced whole (no lock to read).
        self._verdict: tuple[dict[str, Any], dict[str, CheckMessage]] = ({}, {})
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _get(self, name: str) -> Any:
        user = getattr(settings, "DJANGO_TASKQUEUE", None) or {}
        if not isinstance(user, Mapping):
            self._report("", "django_taskqueue.E001", "DJANGO_TASKQUEUE must be a dict.", user)
            return DEFAULTS[name]
        if name not in user:
            return DEFAULTS[name]
        checked, wrong = self._verdict
        if checked != user:
            checked, wrong = self._check(user)
        if name in wrong:
            error = wrong[name]
            self._report(name, str(error.id), error.msg, user[name])
            return FALLBACKS[name][0] if name in FALLBACKS else DEFAULTS[name]
        return user[name]

    def _check(self, user: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, CheckMessage]]:
        """Run the settings' system checks on ``user``; remember which keys they reject."""
        try:
            wrong = setting_errors(user)
        except Exception:  # a value the checks cannot handle: read the values as given
            logger.exception("django_taskqueue: the checks of DJANGO_TASKQUEUE failed")
            wrong = {}
        verdict = (dict(user), wrong)
        self._verdict = verdict
        return verdict

    def _report(self, name: str, check_id: str, problem: str, value: Any) -> None:
        """Log, once per key and value in this process, that a default replaces a wrong value."""
        shown = repr(value) if name else f"a {type(value).__name__}"
        key = (name, shown)
        if key in self._reported:
            return
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        if not name:
            instead = "the defaults of every key"
        elif name in FALLBACKS:
            instead = FALLBACKS[name][1]
        else:
            instead = f"the default, {DEFAULTS[name]!r},"
        logger.error(
            "%s: %s Got %s; django-taskqueue uses %s until the setting is fixed "
            "(`manage.py check` reports it too). See %s",
            check_id,
            problem,
            shown,
            instead,
            docs_url(check_id),
        )

    @property
    def ENABLED(self) -> bool:
        """Record tasks at all. ``False`` makes TrackedTask behave like a plain task."""
        return bool(self._get("ENABLED"))

    @property
    def TASK_TYPES(self) -> Mapping[str, str]:
        """Task types that may be started over HTTP, mapped to Celery task names."""
        value: Mapping[str, str] = self._get("TASK_TYPES")
        return value

    @property
    def ALLOWED_FILE_ROOTS(self) -> Sequence[str]:
        """Directories that file paths given over HTTP must resolve inside."""
        return [str(root) for root in self._get("ALLOWED_FILE_ROOTS")]

    @property
    def STORE_ARGS(self) -> bool:
        """Store the task's args and kwargs (redacted) on the TaskLog."""
        return bool(self._get("STORE_ARGS"))

    @property
    def REDACT_KEYS(self) -> tuple[str, ...]:
        """Lower-cased terms of keys whose values are redacted (replaces the defaults)."""
        return tuple(str(key).lower() for key in self._get("REDACT_KEYS"))

    @property
    def REDACT_EXTRA_KEYS(self) -> tuple[str, ...]:
        """Lower-cased terms redacted on top of ``REDACT_KEYS`` (extends the defaults)."""
        return tuple(str(key).lower() for key in self._get("REDACT_EXTRA_KEYS"))

    @property
    def REDACTED_VALUE(self) -> str:
        """What a redacted value is replaced with."""
        return str(self._get("REDACTED_VALUE"))

    @property
    def PROGRESS_MIN_INTERVAL(self) -> float:
        """Seconds between two progress writes of one task; calls in between are buffered."""
        return float(self._get("PROGRESS_MIN_INTERVAL"))

    @property
    def PROGRESS_HISTORY_STEP(self) -> float:
        """Percentage points the progress must move before a new history row is written."""
        return float(self._get("PROGRESS_HISTORY_STEP"))

    @property
    def RESULT_MAX_BYTES(self) -> int:
        """Largest JSON result stored as is; a larger one is stored as a truncated repr."""
        return int(self._get("RESULT_MAX_BYTES"))

    @property
    def SYNCHRONOUS_COMMIT(self) -> bool:
        """Wait for the disk on every recording commit (PostgreSQL's ``synchronous_commit``).

        Off by default: recording transactions that the package owns commit
        asynchronously, see ``docs/settings.md``.
        """
        return bool(self._get("SYNCHRONOUS_COMMIT"))

    @property
    def PUBLISH_TIMEOUT(self) -> float | None:
        """Seconds a publish of the package (``submit()``, the API, tracked ``.delay()``) may take.

        Bounds the retries the package asks Celery for; the socket timeouts that
        make each attempt short are Celery settings (see
        :func:`django_taskqueue.publishing.bound_publish_waits`). ``None``
        leaves Celery's own retry policy in place.
        """
        value = self._get("PUBLISH_TIMEOUT")
        return None if value is None else float(value)

    @property
    def HELD_RECORDS_MAX(self) -> int:
        """Most records a worker process holds while its database is unavailable.

        See :mod:`django_taskqueue.holding`; beyond it a record is dropped (and
        the log says so once).
        """
        return int(self._get("HELD_RECORDS_MAX"))

    @property
    def HELD_RECORDS_WAIT(self) -> float:
        """Seconds held records may delay an ``acks_late`` task's acknowledgement, or an exit.

        An ``acks_late`` task whose end is held waits up to this long for it to
        be stored before its message is acknowledged; a stopping worker process
        waits as long for all it holds.
        """
        return float(self._get("HELD_RECORDS_WAIT"))

    @property
    def TRACEBACK_MAX_CHARS(self) -> int:
        """Longest traceback stored; the end of a longer one is kept."""
        return int(self._get("TRACEBACK_MAX_CHARS"))

    @property
    def MESSAGE_MAX_DEPTH(self) -> int:
        """The deepest nesting of lists and dicts in one argument of a tracked task's message.

        A deeper message is refused before it is recorded or published: the
        worker's main process pickles every message for its pool, recursively,
        and dies on one nested a few hundred levels deep.
        """
        return int(self._get("MESSAGE_MAX_DEPTH"))

    @property
    def MESSAGE_MAX_BYTES(self) -> int:
        """The largest serialised arguments (in bytes) a tracked task may publish."""
        return int(self._get("MESSAGE_MAX_BYTES"))

    @property
    def API_PERMISSION_CLASSES(self) -> list[str]:
        """Dotted paths of the DRF permission classes of the task API."""
        return [str(path) for path in self._get("API_PERMISSION_CLASSES")]

    @property
    def API_PAGE_SIZE(self) -> int:
        """Tasks per page of the API's lists when the request gives no ``page_size``."""
        return int(self._get("API_PAGE_SIZE"))

    @property
    def API_MAX_PAGE_SIZE(self) -> int:
        """The largest ``page_size`` the API accepts; a larger one is lowered to it."""
        return int(self._get("API_MAX_PAGE_SIZE"))

    @property
    def API_METADATA_MAX_BYTES(self) -> int:
        """The largest ``metadata`` object (as compact JSON, in bytes) the API accepts."""
        return int(self._get("API_METADATA_MAX_BYTES"))

    @property
    def API_JSON_MAX_DEPTH(self) -> int:
        """The deepest nesting of a JSON request body the API accepts (the body is level 1)."""
        return int(self._get("API_JSON_MAX_DEPTH"))

    @property
    def API_BULK_MAX_FILES(self) -> int:
        """The most files one ``bulk_create`` request may start."""
        return int(self._get("API_BULK_MAX_FILES"))

    @property
    def API_CANCEL_TERMINATE(self) -> bool:
        """Cancelling over the API also kills the task's process (``revoke(terminate=True)``)."""
        return bool(self._get("API_CANCEL_TERMINATE"))

    @property
    def API_EXPOSE_ERROR_DETAILS(self) -> bool:
        """Show every user the traceback, worker and who acted on their tasks (staff always see)."""
        return bool(self._get("API_EXPOSE_ERROR_DETAILS"))

    @property
    def API_STREAM_POLL_INTERVAL(self) -> float:
        """Seconds between two database reads of the server-sent event stream."""
        return float(self._get("API_STREAM_POLL_INTERVAL"))

    @property
    def API_STREAM_HEARTBEAT(self) -> float:
        """Seconds of silence after which the event stream sends a keep-alive comment."""
        return float(self._get("API_STREAM_HEARTBEAT"))

    @property
    def API_STREAM_MAX_SECONDS(self) -> float:
        """The longest one event stream stays open; the client reconnects after it.

        Short by default (25 s): on a sync WSGI worker a stream holds the whole
        worker while it lasts, and gunicorn kills a sync worker busy for more
        than its ``--timeout`` (30 s by default).
        """
        return float(self._get("API_STREAM_MAX_SECONDS"))

    @property
    def API_STREAM_MAX_PER_USER(self) -> int | None:
        """How many event streams one user (or anonymous address) may hold open at once.

        Counted in Django's default cache, which must be shared (Redis,
        Memcached) for the cap to hold across processes. ``None``: no cap.
        """
        value = self._get("API_STREAM_MAX_PER_USER")
        return None if value is None else int(value)

    @property
    def RETENTION(self) -> dict[str, timedelta | None]:
        """How long finished tasks are kept, per terminal status (``None``: forever).

        Given as days (a number) or a :class:`~datetime.timedelta`, measured from
        ``completed_at``. A status missing from the setting keeps its default;
        ``None`` for the whole setting keeps every task forever.
        """
        user = self._get("RETENTION")
        if user is None:
            return dict.fromkeys(RETENTION_STATUSES)
        merged = {**DEFAULTS["RETENTION"], **dict(user)}
        return {
            status: None
            if merged.get(status) is None
            else as_timedelta(merged[status], timedelta(days=1))
            for status in RETENTION_STATUSES
        }

    @property
    def RETENTION_BATCH_SIZE(self) -> int:
        """Tasks deleted per transaction by the retention task."""
        return int(self._get("RETENTION_BATCH_SIZE"))

    @property
    def STALE_AFTER(self) -> timedelta:
        """A ``processing`` task whose heartbeat is older than this is stuck (seconds or timedelta).

        A task class may set its own ``stale_after``.
        """
        return as_timedelta(self._get("STALE_AFTER"), timedelta(seconds=1))

    @property
    def LOST_AFTER(self) -> timedelta:
        """A ``pending`` task older than this that no worker knows is lost (seconds, timedelta)."""
        return as_timedelta(self._get("LOST_AFTER"), timedelta(seconds=1))

    @property
    def HEARTBEAT_INTERVAL(self) -> float | None:
        """Seconds between two heartbeats of a running task; ``None`` or 0 turns them off."""
        value = self._get("HEARTBEAT_INTERVAL")
        if value is None:
            return None
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        return seconds if seconds > 0 else None

    @property
    def REPORT_RECIPIENTS(self) -> list[str]:
        """E-mail addresses the periodic summary is sent to (none: it is only logged)."""
        return [str(address) for address in self._get("REPORT_RECIPIENTS") or ()]


conf = TaskQueueSettings()
