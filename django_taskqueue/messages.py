"""What a tracked task may publish: the checks that keep a poison message off the queue.

A Celery worker's main process decodes every message it receives and, with the
prefork pool, pickles the task's arguments again to hand them to a child.
Pickling recurses once or more per level of nesting, so arguments nested a few
hundred levels deep raise ``RecursionError`` *in the main process*: the worker
dies, the broker gives the message back, and the next worker dies on it too.
:class:`~django_taskqueue.TrackedTask` runs :func:`check_message` before it
records or publishes anything, so such a message is refused at the producer
with :class:`~django_taskqueue.exceptions.MessageRefused`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kombu import serialization

from django_taskqueue.conf import conf
from django_taskqueue.exceptions import ArgumentsRefused, MessageRefused, UnserializableMessage
from django_taskqueue.serialization import json_depth, nesting_depth, unstorable_text

# What kombu's JSON serializer says it produced; its payload is scanned as text.
_JSON_CONTENT_TYPE = "application/json"


@functools.lru_cache(maxsize=512)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def check_arguments(task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse arguments that the task's ``run`` cannot take.

    A task made by ``@shared_task``/``@app.task`` is checked the way Celery
    checks it when publishing (its ``__header__``, a copy of the function's
    signature); a hand-written subclass against its ``run`` method. Tasks with
    ``typing = False`` (Celery's switch for this check) are not checked.

    Raises:
        MessageRefused: ``code="arguments"``.
    """
    if not getattr(task, "typing", True):
        return
    header = getattr(task, "__header__", None)
    if header is not None:
        bind: Callable[..., Any] = header
    else:
        run = task.run
        bound_to = getattr(run, "__self__", None)
        func = getattr(run, "__func__", None)
        try:
            if bound_to is not None and func is not None:
                # A method: bind its own first parameter too, so that a keyword
                # named like it ("self") is refused, as the call would refuse it.
                bind = functools.partial(_signature(func).bind, bound_to)
            else:
                bind = _signature(run).bind
        except (TypeError, ValueError):  # no signature to check against (a builtin...)
            return
    try:
        bind(*args, **kwargs)
    except TypeError as exc:
        raise ArgumentsRefused(
            f"The task {task.name} cannot take these arguments: {exc}.", code="arguments"
        ) from None


def _too_deep(limit: int) -> MessageRefused:
    return MessageRefused(
        f"An argument nests lists or objects more than {limit} levels deep; the limit is "
        f"{limit} (MESSAGE_MAX_DEPTH).",
        code="too_deep",
    )


def _recursed(exc: BaseException) -> bool:
    """Whether ``exc`` is a RecursionError, or kombu's EncodeError wrapping one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RecursionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_message(
    task: Any,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    *,
    serializer: str | None = None,
) -> None:
    """Refuse a message that the task cannot take or that could take a worker down.

    In order: the arguments must fit the task's signature
    (:func:`check_arguments`), no argument may nest lists, tuples, sets or dicts
    deeper than ``MESSAGE_MAX_DEPTH``, and the arguments must encode with the
    serializer (the task's, unless given) into at most ``MESSAGE_MAX_BYTES``.
    Costs one serialisation of the arguments.

    Raises:
        MessageRefused: with ``code`` ``"arguments"``, ``"too_deep"``,
            ``"too_large"`` or ``"unserializable"``.
    """
    # Celery's own rule (an empty value of any type counts as none), checked
    # here so that nothing is recorded for a call Celery would refuse.
    if args and not isinstance(args, (list, tuple)):
        raise ArgumentsRefused("task args must be a list or tuple", code="arguments")
    if kwargs and not isinstance(kwargs, Mapping):
        raise ArgumentsRefused("task keyword arguments must be a mapping", code="arguments")
    args = list(args or ())
    kwargs = dict(kwargs or {})
    check_arguments(task, args, kwargs)
    values = (*args, *kwargs.values())
    if any(callable(getattr(value, "model_dump", None)) for value in values):
        # A pydantic model: a task declared with pydantic=True has Celery dump it
        # before publishing, so these values are not yet what will be sent (and a
        # task without it gets Celery's own EncodeError). Depth is still bounded.
        limit = conf.MESSAGE_MAX_DEPTH
        if any(nesting_depth(value, limit) > limit for value in values):
            raise _too_deep(limit)
        return
    name = serializer or getattr(task, "serializer", None) or "json"
    depth_limit = conf.MESSAGE_MAX_DEPTH
    if name != "json":
        # Measured on the values (JSON is measured faster on its text, below);
        # pickle also recurses into an object's __dict__.
        values = (*args, *kwargs.values())
        if any(
            nesting_depth(value, depth_limit, objects=name == "pickle") > depth_limit
            for value in values
        ):
            raise _too_deep(depth_limit)
    try:
        content_type, _, payload = serialization.dumps([args, kwargs], serializer=name)
    except Exception as exc:
        if _recursed(exc):
            raise _too_deep(depth_limit) from None
        raise UnserializableMessage(
            f"The arguments cannot be serialised with {name!r}: {exc}.", code="unserializable"
        ) from None
    size = len(payload.encode() if isinstance(payload, str) else payload)
    size_limit = conf.MESSAGE_MAX_BYTES
    if size > size_limit:
        raise MessageRefused(
            f"The arguments are {size} bytes serialised; the limit is {size_limit} "
            "(MESSAGE_MAX_BYTES).",
            code="too_large",
        )
    # Each level takes two brackets: a shorter text cannot be too deep (most are).
    if content_type == _JSON_CONTENT_TYPE and size >= 2 * (depth_limit + 3):
        text = payload if isinstance(payload, str) else payload.decode()
        # Less the two levels of the [args, kwargs] pair around the arguments.
        if json_depth(text) - 2 > depth_limit:
            raise _too_deep(depth_limit)


def check_storable(value: Any, name: str) -> None:
    """Refuse JSON to be stored (``metadata``, ``tags``) that holds NUL or a lone surrogate.

    Raises:
        MessageRefused: ``code="text"``, saying where.
    """
    problem = unstorable_text(value, name)
    if problem is not None:
        raise MessageRefused(problem, code="text")
