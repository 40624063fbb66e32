"""TrackedTask: the Celery base class that records a task's life.

The class is thin on purpose: it decides *when* to record and hands every
write to :mod:`django_taskqueue.lifecycle`. Whatever goes wrong while
recording is logged and swallowed, so tracking never fails the user's task.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from celery import _state as celery_state
from celery import signals, states
from celery.contrib.django.task import DjangoTask
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.result import AsyncResult
from celery.utils import uuid as celery_uuid
from django.core.exceptions import ValidationError
from django.utils import timezone

from django_taskqueue import canvas, heartbeat, lifecycle, messages, progress, publishing
from django_taskqueue.conf import conf
from django_taskqueue.exceptions import PublishError, TaskCancelled
from django_taskqueue.failurelog import recording_failures
from django_taskqueue.holding import drop_broken_connections, held_writes, hold_if_unavailable
from django_taskqueue.serialization import (
    bound_traceback,
    encode_result,
    error_code_for,
    error_message_for,
    safe_repr,
)
from django_taskqueue.status import EventType, TaskStatus

if TYPE_CHECKING:
    from billiard.einfo import ExceptionInfo

    from django_taskqueue.models import TaskLog

    _TaskBase = DjangoTask[Any, Any]
else:
    _TaskBase = DjangoTask

logger = logging.getLogger("django_taskqueue")

_T = TypeVar("_T")

#: Seconds a task's write waits for its marks still queued for the recorder thread.
QUEUED_WAIT = 5.0

# Attribute of Celery's request context that holds this run's tracking state.
_STATE_ATTR = "_taskqueue_run"


def record_safely(
    what: str,
    task_id: str | None,
    func: Callable[..., _T],
    *args: Any,
    hold: bool = False,
    **kwargs: Any,
) -> _T | None:
    """Call a lifecycle function; log and swallow any error.

    The database being down, a serialization bug or a constraint violation
    must never fail the task being recorded. A soft time limit that fires
    while recording is not ours to swallow: it propagates, so the task stops
    as its author expects (and is recorded as failed by the limit).

    Failures go to :data:`~django_taskqueue.failurelog.recording_failures`: an
    outage logs one line per kind of write, not a traceback per call, and a
    summary once a write succeeds again.

    With ``hold`` (a start, a retry, an end: what the record cannot do without)
    a write the database is unavailable for is held and stored once it is back
    (see :mod:`django_taskqueue.holding`). A task whose earlier writes are still
    queued (the recorder thread writes them within milliseconds) waits for
    them, up to ``QUEUED_WAIT`` seconds, so its writes land in order; in an
    outage, or past that wait, its later writes queue behind them (``hold``) or
    are skipped (a progress value, a cancel check); those return ``None``.
    """
    if held_writes.holds(task_id) and not held_writes.wait_stored(
        task_id, 0 if held_writes.outage else QUEUED_WAIT
    ):
        # The task's earlier writes are still queued (the recorder is slow, or the
        # database is gone): this one waits behind them, or is not worth keeping.
        if hold:
            write = functools.partial(func, *args, **kwargs)
            held_writes.queue(what, task_id, write, timezone.now())
        return None
    at = timezone.now() if hold else None
    try:
        value = func(*args, **kwargs)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        recording_failures.failed(
            what, exc, "django_taskqueue could not record %s for task %s", what, task_id
        )
        drop_broken_connections()
        if at is not None:
            hold_if_unavailable(what, task_id, exc, functools.partial(func, *args, **kwargs), at)
        return None
    recording_failures.succeeded()
    return value


def _queue_mark(what: str, task_id: str, mark: lifecycle.Mark) -> bool:
    """Hand a worker's mark to its process's recorder thread, to be written with others.

    Returns:
        ``False`` when the thread's queue is full: the caller writes it itself.
    """
    return held_writes.queue(
        what, task_id, mark.write, mark.at, batch=lifecycle.write_marks, item=mark
    )


def _scheduling_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """The TaskLog fields that keep how a task was published: its queue, ETA and priority.

    ``countdown`` becomes the ETA it amounts to now, as Celery computes it;
    a naive ``eta`` is taken in the current time zone. What cannot be read
    is left out: recording never refuses a publish Celery accepts.
    """
    fields: dict[str, Any] = {"queue": str(options.get("queue") or "")}
    eta = options.get("eta")
    countdown = options.get("countdown")
    try:
        if countdown is not None:
            eta = timezone.now() + timedelta(seconds=float(countdown))
        elif isinstance(eta, str):
            eta = datetime.fromisoformat(eta)
        if isinstance(eta, datetime):
            fields["eta"] = timezone.make_aware(eta) if timezone.is_naive(eta) else eta
    except (TypeError, ValueError, OverflowError):
        logger.warning("Not recording the unreadable ETA of a task: %r", eta or countdown)
    priority = options.get("priority")
    if isinstance(priority, int) and 0 <= priority <= 255:
        fields["priority"] = priority
    return fields


@dataclass
class _RunState:
    """What one run of a task remembers between its hooks."""

    buffer: progress.ProgressBuffer
    # This run's id in the record (its start and its end name it): see lifecycle.mark_started.
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    pk: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    parent_known: bool = False
    retry_recorded: bool = False
    # on_success/on_failure ran (Celery stored the outcome first).
    ended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Unrecorded:
    """A run whose outcome hooks did not run, as task_postrun saw it (see :func:`note_postrun`)."""

    task_id: str
    state: _RunState
    celery_state: str | None
    retval: Any
    recorded: bool = False


class _ThreadRuns(threading.local):
    """What one thread (or green thread) remembers of its runs between Celery's calls.

    Both are read in the thread that set them, right after: Celery gives no
    other handle from the hook that sets them to the code that reads them.
    """

    # The newest run started in this thread: an eager apply() that raises (throw,
    # task_eager_propagates) skips the outcome hooks, and apply() records it instead.
    last: _RunState | None = None
    # The run that ended without its hooks: Celery sends task_internal_error right
    # after task_postrun, in the same thread.
    unrecorded: _Unrecorded | None = None


_thread_runs = _ThreadRuns()

#: ``error_code`` of a task whose outcome Celery's result backend could not store.
RESULT_NOT_STORED = "result_not_stored"
#: ``error_code`` of a task Celery failed before its body ran.
INTERNAL_ERROR = "internal_error"
#: ``error_code`` of a task that rejected its message without requeueing it.
REJECTED = "rejected"


def rejection_message(exc: Reject) -> str:
    """How a :exc:`~celery.exceptions.Reject` is recorded: why the task gave up its message."""
    reason = getattr(exc, "reason", None)  # not in Celery's type stubs
    if reason is None:
        return "the task rejected its message"
    why = error_message_for(reason) if isinstance(reason, BaseException) else str(reason)
    return f"the task rejected its message: {why}"


class TrackedTask(_TaskBase):
    """Celery base class that records a task's life in a :class:`~django_taskqueue.models.TaskLog`.

    Use it as a base for decorated tasks::

        @shared_task(base=TrackedTask, bind=True, task_type="image")
        def process_image(self, file_path, **options):
            self.update_progress(40, message="resized")
            return {"width": 800}

    or subclass it (the subclass is registered with Celery automatically)::

        class ImportCSV(TrackedTask):
            name = "imports.csv"
            task_type = "document"

            def run(self, file_path):
                ...

    A plain ``.delay()`` / ``.apply_async()`` is tracked; :meth:`submit` also
    records the owner, tags, metadata and file fields and returns the TaskLog.
    On the worker it records the start, progress, retries (count, reason,
    next ETA), success (the result as JSON), failure (message, exception class,
    traceback), revokes, time limits and the worker's hostname.

    Attributes:
        task_type: the type recorded on the TaskLog (``TASK_TYPES`` maps types
            to task names for the HTTP API).
        track: set to ``False`` to turn tracking off for one task class.
        stale_after: seconds without a heartbeat after which a running task
            of this class counts as stuck (``None``: the ``STALE_AFTER`` setting).
        idempotent: the task may safely run twice; with ``acks_late`` the
            ``mark_stale`` housekeeping task re-queues it instead of failing it.
    """

    task_type: str = ""
    track: bool = True
    stale_after: float | None = None
    idempotent: bool = False
    # Records hard time limits and lost workers, which happen in the worker's
    # main process where the task's own hooks never run.
    Request = "django_taskqueue.worker_request:TrackedRequest"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Classes made by @shared_task / @app.task carry ``_decorated`` and are
        # registered by Celery; a hand-written subclass with its own ``run`` is
        # registered here, the way @shared_task registers functions: with every
        # app, now for apps already finalized, later for the others.
        if "run" not in cls.__dict__ or cls.__dict__.get("_decorated"):
            return
        celery_state.connect_on_app_finalize(lambda app: app.register_task(cls))
        for app in celery_state._get_active_apps():  # type: ignore[attr-defined]
            if app.finalized:
                app.register_task(cls)

    # --- the producer side ------------------------------------------------------

    def _tracking(self) -> bool:
        return bool(self.track) and conf.ENABLED

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Record the task as ``pending``, then publish it (as Celery's ``Task.apply_async``).

        A retry's re-publish (``retries`` > 0) keeps the existing row. If the
        row cannot be written the task is still published and the worker
        records it when it starts. ``taskqueue_recorded=True`` (an option of a
        canvas signature whose row :func:`~django_taskqueue.lifecycle.create_bulk`
        already wrote) publishes without writing a row.

        Raises:
            MessageRefused: the message fails :meth:`check_message`; nothing
                was recorded or published.
        """
        recorded = options.pop("taskqueue_recorded", False)
        if not self._tracking():
            return self._celery_apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        # Validate first, write second: a call Celery would refuse (arguments
        # that do not fit, a message that cannot be encoded) raises what Celery
        # raises, before any row exists.
        self.check_message(args, kwargs, serializer=options.get("serializer"))
        if options.get("retries"):
            # A retry's re-publish: the row exists, and retry() recorded it.
            return self._celery_apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        if recorded:
            # The row exists (a re-run, a bulk child): its writer records a failed
            # publish; the package's own publish is bounded by PUBLISH_TIMEOUT.
            return self._publish(
                None,
                args,
                kwargs,
                task_id or celery_uuid(),
                producer,
                link,
                link_error,
                shadow,
                options,
            )
        task_id = task_id or celery_uuid()
        log = record_safely(
            "creation",
            task_id,
            lifecycle.record_publish,
            task_id,
            task_name=self.name,
            args=args,
            kwargs=kwargs,
            task_type=self.task_type,
            max_retries=self.max_retries,
            **_scheduling_fields(options),
            **cast("dict[str, Any]", canvas.from_options(task_id, options, self.app).fields()),
        )
        # Published as Celery publishes it: Celery's retry policy, Celery's errors.
        return self._publish(
            log, args, kwargs, task_id, producer, link, link_error, shadow, options, bounded=False
        )

    def _celery_apply_async(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        *rest: Any,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Celery's own ``apply_async``, given the arguments exactly as the caller gave them."""
        # Celery takes any sequence and mapping (and refuses the rest itself);
        # its type stubs ask for a tuple and a dict.
        return super().apply_async(cast(Any, args), cast(Any, kwargs), *rest, **options)

    def submit(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        owner: Any = None,
        task_type: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        file_path: str = "",
        file_name: str | None = None,
        file_size: int | None = None,
        parent: TaskLog | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        _rerun_of: TaskLog | None = None,
        _event_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TaskLog:
        """Publish the task and return its :class:`~django_taskqueue.models.TaskLog`.

        Unlike :meth:`apply_async`, this records who started the task and why,
        and it raises when the row cannot be written (nothing is published then).

        With an ``idempotency_key``, a second call with the same key and owner
        publishes nothing and returns the first call's TaskLog, so a caller that
        saw an error (a timeout, a :exc:`~django_taskqueue.exceptions.PublishError`
        whose message may have been sent) can simply call again. A key whose
        first publish certainly failed is released: the next call starts the task.

        Args:
            args: positional arguments for the task.
            kwargs: keyword arguments for the task.
            owner: the user the task belongs to (``None`` for system tasks).
            task_type: overrides the class's :attr:`task_type`.
            tags: short labels to filter by.
            metadata: any JSON object to keep with the task (stored with its
                secrets redacted, like the arguments; the task does not receive it).
            file_path: the file the task works on; ``file_name`` and
                ``file_size`` are taken from it unless given.
            file_name: the file's display name.
            file_size: the file's size in bytes.
            parent: the TaskLog this one belongs to (bulk, group or chain).
            task_id: the Celery id to use (a new UUID by default).
            idempotency_key: the caller's key for this start (at most 255
                characters), unique per owner.
            **options: passed to :meth:`apply_async` (``countdown``, ``queue``, ...).
                Without ``retry``/``retry_policy``, the publish is bounded by
                ``PUBLISH_TIMEOUT``.

        Returns:
            The TaskLog, already ``pending`` (or ``failed`` with
            ``error_code="publish_failed"`` if publishing raised, in which case
            the error propagates); with a key used before, that start's TaskLog.

        Raises:
            PublishError: the broker could not be reached, or did not confirm
                the message, within ``PUBLISH_TIMEOUT`` (see its ``sent``).
            ValidationError: ``idempotency_key`` was used by the same owner
                for another task or file (code ``idempotency_key_reused``).
            MessageRefused: the message fails :meth:`check_message`, or
                ``metadata`` or ``tags`` hold text no database stores (a NUL
                character, a lone surrogate); nothing was recorded or published.

        Example::

            log = process_image.submit(
                args=(path,), owner=request.user, tags=["upload"], metadata={"quality": "high"}
            )
            return redirect("task-detail", log.pk)
        """
        self.check_message(args, kwargs, serializer=options.get("serializer"))
        messages.check_storable(dict(metadata or {}), "metadata")
        messages.check_storable(list(tags or []), "tags")
        task_id = task_id or celery_uuid()
        if file_path and file_name is None:
            file_name = os.path.basename(file_path)
        if file_path and file_size is None:
            try:
                file_size = os.stat(file_path).st_size
            except OSError:
                file_size = None
        fields: dict[str, Any] = {
            "owner": owner,
            "task_type": self.task_type if task_type is None else task_type,
            "tags": list(tags or []),
            "metadata": dict(metadata or {}),
            "file_path": file_path,
            "file_name": file_name or "",
            "file_size": file_size,
            "parent": parent,
            "max_retries": self.max_retries,
            **_scheduling_fields(options),
            **canvas.from_options(task_id, options, self.app).fields(),
        }
        status = TaskStatus.PENDING
        if _rerun_of is not None:
            status = TaskStatus.RETRYING
            fields["retry_of"] = _rerun_of
            fields["retry_count"] = _rerun_of.retry_count + 1
        create: dict[str, Any] = {
            "task_name": self.name,
            "status": status,
            "args": args,
            "kwargs": kwargs,
            "event_message": "run again" if _rerun_of is not None else "",
            "event_metadata": {
                **({"rerun_of": _rerun_of.pk} if _rerun_of is not None else {}),
                **(_event_metadata or {}),
            },
            **fields,
        }
        if idempotency_key is None:
            log = lifecycle.create_task_log(task_id, **create)
        else:
            owner = create.pop("owner")
            log, created = lifecycle.create_idempotent_task_log(
                task_id, idempotency_key=idempotency_key, owner=owner, **create
            )
            if not created:
                self._check_same_start(log, idempotency_key, fields)
                return log
        self._publish(log, args, kwargs, task_id, None, None, None, None, options)
        return log

    def _check_same_start(self, log: TaskLog, key: str, fields: Mapping[str, Any]) -> None:
        """Refuse a key that its owner used for another task or file."""
        wanted = (self.name, fields["task_type"], fields["file_path"])
        if (log.task_name, log.task_type, log.file_path) != wanted:
            raise ValidationError(
                "The idempotency key %(key)s was already used for another task "
                "(%(task)s on %(file)s).",
                code="idempotency_key_reused",
                params={"key": key, "task": log.task_name, "file": log.file_path or "no file"},
            )

    def check_message(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        serializer: str | None = None,
    ) -> None:
        """Refuse a call that this task cannot take or that could take a worker down.

        :meth:`apply_async` and :meth:`submit` call it before they record or
        publish anything; call it yourself to validate arguments ahead of time
        (the REST API does, for each file of a bulk run). It checks that

        - the arguments fit the task's signature (as Celery does when it
          publishes, but before the row is written);
        - no argument nests lists, tuples, sets or dicts deeper than
          ``MESSAGE_MAX_DEPTH`` (64): the worker's main process pickles each
          message for its pool, recursively, and dies on one a few hundred
          levels deep;
        - the arguments encode with the task's serializer (or ``serializer``)
          into at most ``MESSAGE_MAX_BYTES`` (1 MiB).

        Raises:
            MessageRefused: with ``code`` ``"arguments"``, ``"too_deep"``,
                ``"too_large"`` or ``"unserializable"``.
        """
        messages.check_message(self, args, kwargs, serializer=serializer)

    def _publish(
        self,
        log: TaskLog | None,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        task_id: str,
        producer: Any,
        link: Any,
        link_error: Any,
        shadow: str | None,
        options: dict[str, Any],
        *,
        bounded: bool = True,
    ) -> AsyncResult[Any]:
        """Publish with Celery's ``apply_async``; record what a failed publish left.

        ``bounded``: the package's own publish (``submit()``, the API, bulk,
        re-runs), bounded by ``PUBLISH_TIMEOUT`` and raising
        :exc:`~django_taskqueue.exceptions.PublishError`. Otherwise the call is
        Celery's, unchanged: its options, its retry policy, its exceptions.
        """
        if not bounded:
            try:
                return self._celery_apply_async(
                    args, kwargs, task_id, producer, link, link_error, shadow, **options
                )
            except Exception as exc:
                # Eager (task_always_eager), apply_async ran the task here: what it
                # raised is the task's own error, recorded by the run, not a publish's.
                if log is not None and not self.app.conf.task_always_eager:
                    sent = None if publishing.outcome_of(exc) == "unknown" else False
                    what = "could not publish the task"
                    if sent is None:
                        what = "the broker did not confirm the message"
                    self._record_publish_error(log, f"{what}: {error_message_for(exc)}", sent=sent)
                raise
        try:
            # Bounded by PUBLISH_TIMEOUT unless the caller gave a retry policy.
            return publishing.send(
                super().apply_async,
                args,
                kwargs,
                task_id,
                producer,
                link,
                link_error,
                shadow,
                **options,
            )
        except PublishError as exc:
            if log is not None:
                self._record_publish_error(log, str(exc), sent=exc.sent)
                exc.task_log = log
            raise
        except Exception as exc:
            if log is not None:
                # Not the broker's fault (an argument that cannot be sent...):
                # nothing went out.
                self._record_publish_error(
                    log, f"could not publish the task: {error_message_for(exc)}", sent=False
                )
            raise

    @staticmethod
    def _record_publish_error(log: TaskLog, message: str, *, sent: bool | None) -> None:
        """Say what a failed publish left, instead of leaving the row plainly pending."""
        if sent is None:
            # The message may be queued: a worker that gets it runs the task.
            if record_safely(
                "publish outcome",
                log.celery_task_id,
                lifecycle.mark_publish_unknown,
                log.pk,
                error_message=message,
            ):
                log.error_code = lifecycle.PUBLISH_UNKNOWN
                log.error_message = message
            return
        record_safely(
            "publish failure",
            log.celery_task_id,
            lifecycle.mark_publish_failed,
            log.pk,
            error_message=message,
        )
        log.status = TaskStatus.FAILED
        log.error_code = lifecycle.PUBLISH_FAILED
        log.error_message = message
        log.idempotency_key = None

    def apply(
        self,
        args: Any = None,
        kwargs: Any = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        logfile: Any = None,
        loglevel: Any = None,
        headers: Any = None,
        **options: Any,
    ) -> Any:
        """Run the task here, as Celery's ``apply()``; the run is recorded as a worker's is.

        With ``throw=True`` (or ``task_eager_propagates``) Celery raises the
        body's error out of ``apply()`` without calling ``on_failure``: the
        failure is recorded here. A :exc:`~celery.exceptions.Reject` ends the
        run ``failed`` (``error_code="rejected"``), as a worker stores it.
        """
        call = (args, kwargs, link, link_error, task_id, retries, throw, logfile, loglevel, headers)
        if not self._tracking():
            return super().apply(*call, **options)
        _thread_runs.last = None
        try:
            result = super().apply(*call, **options)
        except (Retry, Ignore):
            raise  # a retry is recorded by retry(); an ignored run records nothing more
        except Exception as exc:
            self._record_eager_end(exc)
            raise
        if getattr(result, "state", None) == states.REJECTED:
            self._record_eager_end(result.result)
        return result

    def _record_eager_end(self, exc: BaseException | None) -> None:
        """Record the end of an eager run whose outcome hooks did not run."""
        state = _thread_runs.last
        _thread_runs.last = None
        if state is None or state.ended or state.pk is None:
            return
        state.ended = True
        if isinstance(exc, Reject):
            message, code, text = rejection_message(exc), REJECTED, ""
        else:
            message = error_message_for(exc) if exc is not None else "failed"
            code = error_code_for(exc) if exc is not None else ""
            text = _traceback_of(exc)
        record_safely(
            "failure",
            None,
            lifecycle.mark_failed,
            error_message=message,
            error_code=code,
            traceback=text,
            evidence=True,
            **self._end_args(state),
            hold=True,
        )

    # --- the worker side -----------------------------------------------------------

    def _run_state(self) -> _RunState | None:
        state: _RunState | None = getattr(self.request, _STATE_ATTR, None)
        return state

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Record the start of every run Celery makes; revoke a task that was cancelled.

        Every run is recorded, also of an id that ran before (see
        :func:`~django_taskqueue.lifecycle.mark_started`). A task cancelled
        before a worker got it is revoked the way Celery revokes (the result
        backend stores ``REVOKED``, ``task_revoked`` is sent) and its body
        never runs.
        """
        super().before_start(task_id, args, kwargs)
        if not self._tracking():
            return
        state = _RunState(
            buffer=progress.ProgressBuffer(conf.PROGRESS_MIN_INTERVAL, conf.PROGRESS_HISTORY_STEP)
        )
        setattr(self.request, _STATE_ATTR, state)
        _thread_runs.last = state
        delivery = self.request.delivery_info or {}
        in_worker = self._in_worker()
        found = self._read_row(task_id, state) if in_worker else None
        start = lifecycle.starting(
            task_id,
            attempt=int(self.request.retries or 0),
            worker=str(self.request.hostname or ""),
            run=state.run,
            pk=state.pk,
            defaults={
                "task_name": self.name,
                "task_type": self.task_type,
                "args": args,
                "kwargs": kwargs,
                "max_retries": self.max_retries,
                "queue": str(delivery.get("routing_key") or ""),
                **canvas.from_request(self.request).fields(),
            },
        )
        # A cancelled task takes the synchronous path: its start is refused, and
        # the run revoked. Any other start is written with the marks of the next
        # few milliseconds (see lifecycle.write_marks).
        cancelled = found is not None and found.status == TaskStatus.CANCELLED
        if in_worker and not cancelled and _queue_mark("start", task_id, start):
            heartbeat.start(task_id, state.pk)
            return
        outcome = record_safely("start", task_id, start.write, hold=True)
        if outcome is None:
            return
        state.pk = outcome.pk
        state.parent_id, state.parent_known = outcome.parent_id, outcome.parent_known
        if not outcome.applied and outcome.status == TaskStatus.CANCELLED:
            self._revoke_cancelled(task_id)
        if not self.request.is_eager:
            # A long task that reports no progress still looks alive to mark_stale.
            # An eager run (apply(), task_always_eager) runs in the caller's process:
            # it starts no thread there, and its rows end before anyone could ask.
            heartbeat.start(task_id, state.pk)

    def _in_worker(self) -> bool:
        """Whether this run is a worker's (not ``apply()``, eager mode or a direct call)."""
        return not (self.request.is_eager or self.request.called_directly)

    def _read_row(self, task_id: str, state: _RunState) -> lifecycle.RowState | None:
        """Read the task's row before its body runs (one ``SELECT``); ``None`` when there is none.

        The status keeps the promise that a task cancelled before it started
        never runs its body; the row's id and parent, kept in ``state``, spare
        the run's writes their look-ups by Celery id.
        """
        found: lifecycle.RowState | None = record_safely(
            "cancel check", task_id, lifecycle.row_state, celery_task_id=task_id
        )
        if found is not None:
            state.pk, state.parent_id, state.parent_known = found.pk, found.parent_id, True
        return found

    def _revoke_cancelled(self, task_id: str) -> None:
        """Revoke a run whose task was cancelled before it started, as Celery's revoke does.

        The cancel's own revoke reaches the workers that were connected when it
        was sent; this covers the others (a worker started later, a revoke sent
        while the broker was down). Like a worker that finds the id in its
        revoked set, it stores ``REVOKED`` in the result backend (a chord
        counts its part, a caller waiting on the result is answered) and sends
        ``task_revoked``; then the body is skipped.
        """
        logger.info("Revoking task %s[%s]: it was cancelled", self.name, task_id)
        request = self.request
        store = not (self.ignore_result or request.ignore_result) or bool(
            self.store_errors_even_if_ignored
        )
        try:
            self.backend.mark_as_revoked(task_id, "cancelled", request=request, store_result=store)
        except Exception:
            # The body must not run either way; the record already says cancelled.
            logger.warning("Could not store the revoke of task %s", task_id, exc_info=True)
        signals.task_revoked.send(
            sender=self, request=request, terminated=False, signum=None, expired=False
        )
        raise Ignore()

    def update_progress(
        self,
        percent: float | None = None,
        *,
        current: float | None = None,
        total: float | None = None,
        message: str = "",
        data: Any = None,
    ) -> None:
        """Report how far the task has come.

        Give a percentage, or ``current`` and ``total``. Calls are cheap:
        values are written at most once per ``PROGRESS_MIN_INTERVAL`` seconds
        (the newest one always lands by the end of the run), and a history
        row is added when the percentage moves by ``PROGRESS_HISTORY_STEP`` or
        the message changes. Bad arguments are logged, never raised.

        Args:
            percent: 0 to 100 (clamped).
            current: units done, with ``total``.
            total: units in all, with ``current``.
            message: a short human-readable note ("resized", "page 3 of 10").
            data: any JSON-compatible details to keep with the history row.

        Raises:
            TaskCancelled: the task was cancelled; let it propagate.
        """
        state = self._run_state()
        if state is None or not self._tracking():
            return
        try:
            value = progress.percent_from(percent, current, total)
        except (TypeError, ValueError) as exc:
            logger.warning(
                "Ignoring update_progress(%s) for task %s: %s",
                safe_repr(percent, 50),
                self.request.id,
                exc,
            )
            return
        write = state.buffer.offer(value, str(message), data)
        if write is None:
            return
        outcome = record_safely(
            "progress",
            self.request.id,
            lifecycle.record_progress,
            write,
            celery_task_id=self.request.id,
            pk=state.pk,
        )
        if outcome is not None:
            state.pk = outcome.pk or state.pk
            if outcome.status == TaskStatus.CANCELLED:
                self._stop_cancelled(state)

    def is_cancelled(self) -> bool:
        """Whether this task's TaskLog was cancelled (one ``SELECT``)."""
        state = self._run_state()
        if state is None or not self._tracking():
            return False
        status = record_safely(
            "cancel check",
            self.request.id,
            lifecycle.status_of,
            celery_task_id=self.request.id,
            pk=state.pk,
        )
        return status == TaskStatus.CANCELLED

    def check_cancelled(self) -> None:
        """Stop here if the task was cancelled: a cooperative cancel point.

        Call it between units of work in a long task that reports no progress.

        Raises:
            TaskCancelled: the task was cancelled; let it propagate.
        """
        state = self._run_state()
        if state is not None and self.is_cancelled():
            self._stop_cancelled(state)

    def _stop_cancelled(self, state: _RunState) -> None:
        record_safely(
            "cancel acknowledgement",
            self.request.id,
            lifecycle.record_event,
            EventType.REVOKED,
            "the running task stopped at a cancel check",
            {"worker": self.request.hostname},
            celery_task_id=self.request.id,
            pk=state.pk,
            hold=True,
        )
        raise TaskCancelled(f"task {self.request.id} was cancelled")

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Record the retry (count, reason, next ETA), then let Celery schedule it.

        The record is written before the new message is published, so the next
        attempt can never start before its retry is on file.
        """
        state = self._run_state()
        limit = self.max_retries if max_retries is None else max_retries
        retries = int(self.request.retries or 0)
        if (
            state is not None
            and self._tracking()
            and not self.request.called_directly
            and (limit is None or retries < limit)
        ):
            if eta is None:
                delay = self.default_retry_delay if countdown is None else countdown
                eta = timezone.now() + timedelta(seconds=float(delay or 0))
            elif isinstance(eta, datetime) and timezone.is_naive(eta):
                eta = timezone.make_aware(eta)
            outcome = record_safely(
                "retry",
                self.request.id,
                lifecycle.mark_retrying,
                self.request.id,
                pk=state.pk,
                next_attempt=retries + 1,
                reason=error_message_for(exc) if exc is not None else "retry requested",
                error_code=error_code_for(exc) if exc is not None else "",
                eta=eta if isinstance(eta, datetime) else None,
                progress=state.buffer.flush(),
                hold=True,
            )
            state.retry_recorded = outcome is not None
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def on_retry(
        self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Record a retry that :meth:`retry` did not record (e.g. its write failed)."""
        super().on_retry(exc, task_id, args, kwargs, einfo)
        state = self._run_state()
        if state is None or state.retry_recorded or not self._tracking():
            return
        record_safely(
            "retry",
            task_id,
            lifecycle.mark_retrying,
            task_id,
            pk=state.pk,
            next_attempt=int(self.request.retries or 0) + 1,
            reason=error_message_for(exc),
            error_code=error_code_for(exc),
            hold=True,
        )

    @staticmethod
    def _end_args(state: _RunState | None) -> dict[str, Any]:
        """What the run knows that saves the final write its lookups."""
        if state is None:
            return {}
        return {
            "pk": state.pk,
            "parent_id": state.parent_id,
            "parent_known": state.parent_known,
            "progress": state.buffer.flush(),
            "run": state.run,
        }

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Record success, the result as JSON (or a marked repr) and the last progress.

        A run that scheduled a retry (``self.retry(throw=False)``, whether it
        returns the :exc:`~celery.exceptions.Retry` or a value of its own) did
        not end the task: its retry is on file and its next attempt queued (or,
        eagerly, run next), and that attempt may already be running. So nothing
        more is recorded; the task's outcome is its last attempt's.
        """
        super().on_success(retval, task_id, args, kwargs)
        if not self._tracking():
            return
        state = self._run_state()
        if state is not None:
            state.ended = True
        if (state is not None and state.retry_recorded) or (
            state is None and isinstance(retval, Retry)
        ):
            return
        mark = lifecycle.completion(
            task_id,
            result=encode_result(retval, conf.RESULT_MAX_BYTES),
            # The body returned: that outweighs a failure housekeeping presumed.
            evidence=True,
            **self._end_args(state),
        )
        self._record_end("success", task_id, mark)

    def _record_end(self, what: str, task_id: str, mark: lifecycle.Mark) -> None:
        """Write a run's end: in a worker, by the process's recorder thread, with others.

        A worker hands the end to the recorder thread
        (:mod:`django_taskqueue.holding`), which writes the ends of the tasks
        that finished in the last few milliseconds together
        (:func:`~django_taskqueue.lifecycle.write_marks`), off the task's
        path. An ``acks_late`` task writes its own end instead, before its
        message is acknowledged, and so does an eager run (``apply()``, tests):
        it is on file when the call returns.
        """
        if not self.acks_late and self._in_worker() and _queue_mark(what, task_id, mark):
            return
        record_safely(what, task_id, mark.write, hold=True)
        self._stored_before_ack(task_id)

    def _stored_before_ack(self, task_id: str) -> None:
        """Wait until this task's held records are stored, if its message waits for them.

        An ``acks_late`` message is acknowledged when this hook returns: a record
        still held then (the database is down) would be lost with the process,
        with the message already gone. So the end waits for the database, up to
        ``HELD_RECORDS_WAIT`` seconds, while the message stays unacknowledged.
        """
        if not self.acks_late or not self._in_worker() or not held_writes.holds(task_id):
            return
        try:
            stored = held_writes.wait_stored(task_id, conf.HELD_RECORDS_WAIT)
        except SoftTimeLimitExceeded:
            return  # the task's limit ends the wait: the records stay held
        if not stored:
            logger.warning(
                "django_taskqueue: the records of task %s are still held after %.0f s "
                "(HELD_RECORDS_WAIT); its message is acknowledged without them",
                task_id,
                conf.HELD_RECORDS_WAIT,
            )

    def on_failure(
        self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Record failure: message, error code (the exception class) and traceback."""
        super().on_failure(exc, task_id, args, kwargs, einfo)
        if not self._tracking() or isinstance(exc, TimeLimitExceeded):
            # A hard time limit is recorded by TrackedRequest.on_timeout in the
            # worker's main process (newer Celery also calls on_failure there).
            return
        state = self._run_state()
        if state is not None:
            state.ended = True
        text = getattr(einfo, "traceback", "") or ""
        mark = lifecycle.failure(
            task_id,
            error_message=error_message_for(exc),
            error_code=error_code_for(exc),
            traceback=bound_traceback(str(text), conf.TRACEBACK_MAX_CHARS),
            evidence=True,
            **self._end_args(state),
        )
        # The canvas steps Celery failed with it are other tasks' rows: written now.
        record_safely("canvas steps not run", task_id, record_unpublished_steps, self, exc)
        self._record_end("failure", task_id, mark)


# --- errors outside the task body (connected in receivers.py) ------------------------


def note_postrun(sender: Any, task_id: str, retval: Any, celery_state: str | None) -> None:
    """Remember a run that ends without ``on_success``/``on_failure`` (``task_postrun``).

    Celery stores the outcome before it calls those hooks; when storing fails
    it calls neither and sends ``task_internal_error`` right after this
    signal. This is the last moment the run's state, and the body's return
    value, can be seen.
    """
    if not isinstance(sender, TrackedTask):
        return
    state = sender._run_state()
    if state is not None and not state.ended and held_writes.holds(task_id):
        # A run that ends without an end of its own (a Reject, an Ignore) may be
        # recorded by the worker's main process once this process reports back
        # (TrackedRequest): its start, still queued, must be on file first, or it
        # would land after that end and reopen the task.
        held_writes.wait_stored(task_id, QUEUED_WAIT)
    # SUCCESS: the body returned; None: Celery failed while handling its error.
    # (IGNORED, REJECTED and RETRY runs end without those hooks on purpose.)
    if state is None or state.ended or celery_state not in ("SUCCESS", None):
        return
    _thread_runs.unrecorded = _Unrecorded(task_id, state, celery_state, retval)


def record_internal_error(sender: Any, task_id: str, exception: BaseException | None) -> None:
    """Record what happened to a task when Celery failed outside its body (``task_internal_error``).

    * The body returned (Celery could not store the result, or send what
      follows it): ``completed`` with the result, ``error_code="result_not_stored"``.
    * The body raised (Celery could not store the failure): ``failed`` with the
      body's error and ``error_code="result_not_stored"``.
    * The body never ran (e.g. ``track_started`` could not be stored):
      ``failed`` with ``error_code="internal_error"``.
    * A retry already recorded stays ``retrying``: its next attempt is queued.

    Each case also gets an ``internal_error`` event naming Celery's error.
    """
    if not isinstance(sender, TrackedTask) or not sender._tracking() or not task_id:
        return
    run = _thread_runs.unrecorded
    if run is not None and run.task_id != task_id:
        run = None
    if run is not None and run.recorded:
        return  # Celery sends the signal again when its own failure handling fails too
    celery_error = error_message_for(exception) if exception is not None else "unknown error"
    celery_class = type(exception).__name__ if exception is not None else ""
    state = run.state if run is not None else None
    # The body's own error, when it raised: what Celery was storing when it failed.
    body_error = _body_error(exception)
    if run is not None and run.celery_state == "SUCCESS":
        message = f"The task returned, but Celery could not store its result: {celery_error}"
        record_safely(
            "unstored result",
            task_id,
            lifecycle.mark_completed,
            task_id,
            result=encode_result(run.retval, conf.RESULT_MAX_BYTES),
            error_message=message,
            error_code=RESULT_NOT_STORED,
            **TrackedTask._end_args(state),
            hold=True,
        )
    elif state is not None and state.retry_recorded:
        message = f"Celery could not store the retry: {celery_error}"
    elif state is not None:
        what = (
            f"The task failed ({type(body_error).__name__}: {error_message_for(body_error)})"
            if body_error is not None
            else "The task failed"
        )
        message = f"{what}, and Celery could not store the failure: {celery_error}"
        record_safely(
            "unstored failure",
            task_id,
            lifecycle.mark_failed,
            task_id,
            error_message=message,
            error_code=RESULT_NOT_STORED,
            traceback=_traceback_of(body_error or exception),
            **TrackedTask._end_args(state),
            hold=True,
        )
    else:
        message = f"Celery failed before the task ran: {celery_error}"
        record_safely(
            "internal error",
            task_id,
            lifecycle.mark_failed,
            task_id,
            error_message=message,
            error_code=INTERNAL_ERROR,
            traceback=_traceback_of(exception),
            hold=True,
        )
    record_safely(
        "internal error",
        task_id,
        lifecycle.record_event,
        EventType.INTERNAL_ERROR,
        message,
        {"exception": celery_class, "celery_error": celery_error},
        celery_task_id=task_id,
        pk=state.pk if state is not None else None,
        hold=True,
    )
    if run is not None:
        run.recorded = True
        run.retval = None  # keep no result alive in the thread


def _body_error(exception: BaseException | None) -> BaseException | None:
    """The exception Celery was handling when storing failed: the body's, if it raised.

    Storing the failure ran while the body's exception was being handled, so
    that exception is the first one of the chain of ``__context__``s.
    """
    first = None
    seen: set[int] = set()
    current = exception.__context__ if exception is not None else None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        first = current
        current = current.__context__
    return first if isinstance(first, Exception) else None


def _traceback_of(exception: BaseException | None) -> str:
    if exception is None:
        return ""
    import traceback

    text = "".join(traceback.format_exception(exception))
    return bound_traceback(text, conf.TRACEBACK_MAX_CHARS)


# --- canvas steps that a failure keeps from running ------------------------------------


def record_unpublished_steps(task: TrackedTask, exc: BaseException) -> list[TaskLog]:
    """Record the canvas steps Celery failed along with ``task`` (from its ``on_failure``).

    Celery's backend has just marked the rest of the task's chain (and, for a
    chord header member, the chord's body) failed without publishing them;
    those that are tracked tasks of the app get a ``failed`` row with
    ``error_code="upstream_failed"`` (see
    :func:`~django_taskqueue.lifecycle.record_unpublished`).
    """
    request = task.request

    def tracked(name: str) -> bool:
        found = task.app.tasks.get(name)
        return isinstance(found, TrackedTask) and found._tracking()

    steps = canvas.unpublished_steps(request, tracked=tracked)
    if not steps:
        return []

    def fields_of(name: str) -> dict[str, Any]:
        found = task.app.tasks[name]
        if not isinstance(found, TrackedTask):
            return {}
        return {"task_type": found.task_type, "max_retries": found.max_retries}

    lineage = canvas.from_request(request)
    return lifecycle.record_unpublished(
        steps,
        upstream_id=str(request.id),
        upstream_name=task.name,
        root_id=lineage.root_id,
        reason=f"{type(exc).__name__}: {error_message_for(exc)}",
        fields_of=fields_of,
    )
