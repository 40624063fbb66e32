"""Where a task sits in a Celery canvas, read from Celery's own data.

Celery's canvas (chain, group, chord, ``Task.replace``, ``link``) gives every
message three ids besides the task's own: its parent (the task that sent it),
its root (the first task of the whole canvas) and its group. This module reads
them from the two places a tracked task sees: the options a canvas passes to
``apply_async`` on the producer side, and ``self.request`` on the worker side.

It also lists the steps of a canvas that Celery marks failed without ever
publishing them, because a step before them failed (see
:func:`unpublished_steps`). It reads only; the writes are
:mod:`django_taskqueue.lifecycle`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

#: ``error_code`` of a canvas step Celery failed because a step before it failed.
UPSTREAM_FAILED = "upstream_failed"

_MAX_ID = 255


def _id(value: Any) -> str:
    """A Celery id as stored: text, at most 255 characters, ``""`` for none."""
    if not value:
        return ""
    return str(value)[:_MAX_ID]


@dataclass(frozen=True)
class Lineage:
    """The canvas ids of one task (each ``""`` when it has none).

    Attributes:
        parent_id: the Celery id of the task that sent this one.
        root_id: the Celery id of the canvas's first task (the task's own id
            when it is the first).
        group_id: the Celery id of the group, or chord header, it is part of.
    """

    parent_id: str = ""
    root_id: str = ""
    group_id: str = ""

    def fields(self) -> dict[str, str]:
        """The :class:`~django_taskqueue.models.TaskLog` fields, for the non-empty ids."""
        values = {
            "celery_parent_id": self.parent_id,
            "celery_root_id": self.root_id,
            "celery_group_id": self.group_id,
        }
        return {name: value for name, value in values.items() if value}


def from_options(task_id: str, options: Mapping[str, Any], app: Any) -> Lineage:
    """The lineage of a task about to be published, as Celery will send it.

    ``options`` are the keyword options of ``apply_async``: a canvas passes
    ``parent_id``, ``root_id`` and ``group_id`` there. What is missing is
    filled the way Celery's ``send_task`` fills it: from the task the worker
    is running (``app.current_worker_task``), else the task is its own root.
    """
    parent_id = _id(options.get("parent_id"))
    root_id = _id(options.get("root_id"))
    if not parent_id or not root_id:
        current = getattr(app, "current_worker_task", None)
        request = getattr(current, "request", None)
        if request is not None and getattr(request, "id", None):
            root_id = root_id or _id(getattr(request, "root_id", None) or request.id)
            parent_id = parent_id or _id(request.id)
    return Lineage(
        parent_id=parent_id,
        root_id=root_id or _id(task_id),
        group_id=_id(options.get("group_id")),
    )


def from_request(request: Any) -> Lineage:
    """The lineage a worker received with the task (Celery's ``self.request``).

    These are authoritative: they are what the message carried, whoever sent it.
    """
    return Lineage(
        parent_id=_id(getattr(request, "parent_id", None)),
        root_id=_id(getattr(request, "root_id", None) or getattr(request, "id", None)),
        group_id=_id(getattr(request, "group", None)),
    )


@dataclass(frozen=True)
class Step:
    """A canvas step that will never be published.

    Attributes:
        celery_task_id: the id Celery gave (and failed) the step.
        task_name: the step's Celery task name.
        args: the step's own positional arguments (without a previous result).
        kwargs: the step's keyword arguments.
        group_id: the step's group (a chord body group, or a chord header's).
        root_id: the step's root, when its signature carries one.
    """

    celery_task_id: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    group_id: str = ""
    root_id: str = ""


def _options(sig: Mapping[str, Any]) -> Mapping[str, Any]:
    options = sig.get("options")
    return options if isinstance(options, Mapping) else {}


def _step(sig: Mapping[str, Any]) -> Step | None:
    """The step of one plain task signature with an id; ``None`` for anything else."""
    options = _options(sig)
    task_id = options.get("task_id")
    if sig.get("subtask_type") or not task_id or not isinstance(sig.get("task"), str):
        return None
    args = sig.get("args")
    kwargs = sig.get("kwargs")
    return Step(
        celery_task_id=_id(task_id),
        task_name=str(sig["task"]),
        args=tuple(args) if isinstance(args, (list, tuple)) else (),
        kwargs=dict(kwargs) if isinstance(kwargs, Mapping) else {},
        group_id=_id(options.get("group_id")),
        root_id=_id(options.get("root_id")),
    )


def _result_step(sig: Mapping[str, Any]) -> Step | None:
    """The task whose result stands for ``sig``: what Celery fails for a group member.

    A plain task itself; for a chord, its body's; for a chain, its last task's;
    nothing for a group (its id is no task's).
    """
    for _ in range(_MAX_DEPTH):
        kwargs = sig.get("kwargs")
        kind = sig.get("subtask_type")
        if not kind:
            return _step(sig)
        if not isinstance(kwargs, Mapping):
            return None
        if kind == "chord":
            inner = _signatures(kwargs.get("body"))
        elif kind == "chain":
            inner = _signatures(kwargs.get("tasks"))[-1:]
        else:
            return None
        if not inner:
            return None
        sig = inner[0]
    return None


_MAX_DEPTH = 32


def _signatures(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def _chain_steps(chain: Any) -> Iterator[Step]:
    """The steps Celery's backend fails after a chain element failed (``_fail_chain``).

    Each remaining element that is a plain task; for a chord element, its body
    (a chord completes only when its body does); and, for an element that is
    part of a chord header, that chord's body, which fails with its header.
    """
    pending = deque(_signatures(chain))
    while pending:
        sig = pending.popleft()
        step = _step(sig)
        if step is not None:
            yield step
        kwargs = sig.get("kwargs")
        if sig.get("subtask_type") == "chord" and isinstance(kwargs, Mapping):
            pending.extend(_signatures(kwargs.get("body")))
        chord = _options(sig).get("chord")
        if chord:
            yield from chord_body_steps(chord)


def chord_body_steps(body: Any) -> Iterator[Step]:
    """The steps Celery fails when a chord's header fails (``chord_error_from_stack``).

    The body itself, or each task of a body that is a group, and the steps
    chained after the body.
    """
    for sig in _signatures(body):
        kwargs = sig.get("kwargs")
        if sig.get("subtask_type") == "group" and isinstance(kwargs, Mapping):
            # The members would have run with the body group's own id as their
            # group (what its GroupResult holds); their frozen options may still
            # name the chord header's.
            group_id = _id(_options(sig).get("task_id"))
            for member in _signatures(kwargs.get("tasks")):
                step = _result_step(member)
                if step is not None:
                    yield replace(step, group_id=group_id) if group_id else step
        else:
            step = _step(sig)
            if step is not None:
                yield step
        yield from _chain_steps(_options(sig).get("chain"))


def unpublished_steps(request: Any, *, tracked: Callable[[str], bool]) -> list[Step]:
    """The canvas steps that will never run because the task of ``request`` failed.

    They are the remaining steps of the request's chain (Celery keeps it in
    reverse order: they are returned in the order they would have run) and,
    for a member of a chord header, the chord's body. Only steps whose task
    name ``tracked`` accepts are returned, each once.

    Args:
        request: the failed task's Celery request (``self.request``).
        tracked: whether a task name is a tracked task of the app.
    """
    chain = _signatures(getattr(request, "chain", None))
    found: Iterable[Step] = _chain_steps(list(reversed(chain)))
    chord = getattr(request, "chord", None)
    if chord:
        found = [*found, *chord_body_steps(chord)]
    steps: list[Step] = []
    seen = {_id(getattr(request, "id", None))}
    for step in found:
        if step.celery_task_id in seen or not tracked(step.task_name):
            continue
        seen.add(step.celery_task_id)
        steps.append(step)
    return steps
