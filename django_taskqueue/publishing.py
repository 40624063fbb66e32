"""Publishing within a deadline, and what a failed publish means.

A publish waits in three places, and each has its own Celery or kombu knob:

1. Celery's result backend is asked first (``backend.on_task_call``): the Redis
   backend subscribes to the task's result channel, retrying a lost connection
   by ``result_backend_transport_options["retry_policy"]`` (20 retries a second
   apart by default, about 19 s) and then raising ``RuntimeError``. A frozen
   Redis holds each attempt for ``redis_socket_timeout`` (120 s by default).
2. kombu connects to the broker: ``broker_connection_timeout`` and, for
   Redis, ``broker_transport_options["socket_connect_timeout"]``.
3. kombu sends the message and, for Redis, waits for the reply: the publish
   ``retry_policy`` of ``apply_async`` and ``broker_transport_options["socket_timeout"]``
   (``None`` by default: a frozen Redis holds the publish forever).

The package sets only what belongs to its own calls: every publish it makes
(:meth:`TrackedTask.submit() <django_taskqueue.TrackedTask.submit>`, the API,
bulk runs and re-runs) carries a retry policy derived from ``PUBLISH_TIMEOUT``
(see :func:`publish_retry_policy`) unless the call gives its own. A plain
``.delay()``/``apply_async()`` of a tracked task is published exactly as Celery
publishes it, with Celery's own retry policy and exceptions: tracking changes
nothing about how a message is sent.
The socket timeouts and the result backend's retry policy are settings of the
host's Celery app, shared with its workers: :func:`celery_settings` computes
them from the deadline and :func:`bound_publish_waits` applies them when the
host calls it; the package never changes them by itself. System check
``django_taskqueue.W009`` says when they let a publish wait longer.

A publish that fails raises :exc:`~django_taskqueue.exceptions.PublishError`
(a kombu ``OperationalError``) whose ``sent`` tells what is known: ``False``
when the message cannot have gone out (the connection was refused, the result
backend failed first), ``None`` when it may have (the broker took the bytes,
then did not answer in time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from kombu.exceptions import OperationalError

from django_taskqueue.conf import conf
from django_taskqueue.exceptions import PublishError
from django_taskqueue.serialization import error_message_for

logger = logging.getLogger("django_taskqueue")

_T = TypeVar("_T")

#: One socket operation (a connect, a reply) may take this share of the deadline.
#: A publish to a frozen Redis makes up to about five such waits in a row (the
#: result backend's subscribe and its reconnect, the broker's connect and
#: publish), so a sixth keeps the whole call inside the deadline.
SOCKET_SHARE = 6

# The kombu retry policy keys the package adds to an apply_async call.
_RETRY_KEYS = ("retry", "retry_policy")


def publish_retry_policy(timeout: float) -> dict[str, Any]:
    """The ``retry_policy`` of a publish that must end within ``timeout`` seconds.

    One retry, a tenth of the deadline after the first attempt: a broker that
    drops a pooled connection (a restart, a fail-over) is reconnected, while
    each attempt is bounded by the socket timeouts of :func:`celery_settings`.
    A publish that timed out is never retried (see :class:`_Attempt`): its
    message may already be in the queue, and a second copy would run twice.
    """
    pause = round(timeout / 10, 3)
    return {
        "max_retries": 1,
        "interval_start": pause,
        "interval_step": pause,
        "interval_max": pause,
    }


def celery_settings(timeout: float) -> dict[str, Any]:
    """Celery settings that bound each wait of a publish to a share of ``timeout`` seconds.

    =================================================== ==============================
    setting                                             value
    =================================================== ==============================
    ``broker_connection_timeout``                       ``timeout / 6``
    ``broker_transport_options["socket_connect_timeout"]`` ``timeout / 6`` (Redis)
    ``broker_transport_options["socket_timeout"]``      ``timeout / 6`` (Redis)
    ``redis_socket_connect_timeout``                    ``timeout / 6`` (Redis backend)
    ``redis_socket_timeout``                            ``timeout / 6`` (Redis backend)
    ``result_backend_transport_options["retry_policy"]`` one retry, no pause
    =================================================== ==============================

    The transport-option dicts hold only these keys: :func:`bound_publish_waits`
    merges them into the app's own.
    """
    share = round(timeout / SOCKET_SHARE, 3)
    return {
        "broker_connection_timeout": share,
        "broker_transport_options": {"socket_timeout": share, "socket_connect_timeout": share},
        "redis_socket_timeout": share,
        "redis_socket_connect_timeout": share,
        "result_backend_transport_options": {
            "retry_policy": {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0,
                "interval_max": 0,
            }
        },
    }


def bound_publish_waits(app: Any, timeout: float | None = None) -> dict[str, Any]:
    """Apply :func:`celery_settings` to a Celery app; call it where the host configures the app.

    This changes the app's global configuration, for its workers too: their
    broker connections get the same socket timeouts (kombu recommends one),
    and the Redis result backend retries a lost connection once instead of
    for about 19 s, so a worker that cannot store a result during a Redis
    outage gives up sooner (the task is still recorded, see
    :doc:`/tracked-task`). Set ``result_backend_always_retry`` on the workers
    to make their result writes ride out longer outages.

    Args:
        app: the host's Celery app.
        timeout: the deadline in seconds; ``PUBLISH_TIMEOUT`` by default.

    Returns:
        The settings as applied (the transport options merged with the app's).
    """
    seconds = conf.PUBLISH_TIMEOUT if timeout is None else float(timeout)
    if seconds is None:
        return {}
    wanted = celery_settings(seconds)
    for name in ("broker_transport_options", "result_backend_transport_options"):
        wanted[name] = {**dict(app.conf.get(name) or {}), **wanted[name]}
    app.conf.update(wanted)
    return wanted


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or while handling (loops cut)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _named(exc: BaseException, *names: str) -> bool:
    # Matched by class name so the Redis client's exceptions (which are not
    # OSErrors) count without importing an optional library.
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or _named(exc, "TimeoutError")


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, OSError)) or _named(
        exc, "ConnectionError", "TimeoutError"
    )


class _Attempt:
    """One publish: the options that bound it, and the errors kombu saw on the way."""

    def __init__(self, options: Mapping[str, Any], *, bounded: bool = True) -> None:
        self.errors: list[BaseException] = []
        self.options = dict(options)
        self.timeout = conf.PUBLISH_TIMEOUT if bounded else None
        if self.timeout is not None and not any(key in options for key in _RETRY_KEYS):
            self.options["retry"] = True
            self.options["retry_policy"] = {
                **publish_retry_policy(self.timeout),
                "errback": self._seen,
            }

    def _seen(self, exc: BaseException, interval: float) -> None:
        """kombu's errback, called before each retry: stop at a timeout."""
        self.errors.append(exc)
        if _is_timeout(exc):
            # The broker may have the message already: a second send could run
            # the task twice, so the outcome stays unknown instead.
            raise exc

    def outcome(self, exc: BaseException) -> Literal["not_sent", "unknown", "other"]:
        """What a publish that raised ``exc`` did; ``"other"``: not the broker's error."""
        if isinstance(exc, RuntimeError) and exc.__cause__ is not None:
            # Celery's result consumer gave up reconnecting; it runs before the
            # message is sent.
            return "not_sent" if _is_unreachable(exc.__cause__) else "other"
        if not _is_unreachable(exc):
            return "other"
        if any(_is_timeout(e) for error in (exc, *self.errors) for e in _causes(error)):
            return "unknown"
        return "not_sent"


def outcome_of(exc: BaseException) -> Literal["not_sent", "unknown", "other"]:
    """What a publish that raised ``exc`` did, for a publish the package did not bound.

    ``"not_sent"``: the broker or the result backend could not be reached, so
    nothing went out; ``"unknown"``: the broker may have the message (a timeout
    after the bytes were sent); ``"other"``: not the broker's error.
    """
    return _Attempt({}, bounded=False).outcome(exc)


def send(publish: Callable[..., _T], /, *args: Any, **options: Any) -> _T:
    """Call ``publish(*args, **options)`` (an ``apply_async``) within ``PUBLISH_TIMEOUT``.

    Adds the deadline's retry policy unless ``options`` has its own.

    Raises:
        PublishError: the broker or the result backend could not be reached in
            time; other errors (a message that cannot be serialised...) propagate
            as they are.
    """
    attempt = _Attempt(options)
    try:
        return publish(*args, **attempt.options)
    except Exception as exc:
        outcome = attempt.outcome(exc)
        if outcome == "other":
            raise
        raise PublishError(
            _describe(exc, outcome, attempt.timeout),
            sent=None if outcome == "unknown" else False,
            timeout=attempt.timeout,
        ) from exc


def _describe(exc: BaseException, outcome: str, timeout: float | None) -> str:
    within = f" within {timeout:g} s" if timeout is not None else ""
    if isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        what = f"Celery's result backend could not be reached{within}"
        exc = exc.__cause__
    elif outcome == "unknown":
        what = f"the broker did not confirm the message{within}; it may or may not be queued"
    else:
        what = f"the broker could not be reached{within}"
    detail = " ".join(error_message_for(exc).split())
    return f"{what}: {detail}"


def retry_after() -> int:
    """Seconds a client should wait before trying again (the ``Retry-After`` of a 503)."""
    timeout = conf.PUBLISH_TIMEOUT
    return max(1, math.ceil(timeout if timeout is not None else 10))
