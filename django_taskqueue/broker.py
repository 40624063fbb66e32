"""What the broker can still deliver: the evidence housekeeping needs before it calls a task lost.

A message the database calls ``pending`` can be in more places than its queue:
a worker that fetched it ahead (prefetch) and died leaves it on Redis in the
transport's ``unacked`` hash until the visibility timeout, when a worker puts
it back on the queue; on RabbitMQ a consumer's unacknowledged messages return
to the queue when its connection closes. A task is lost only when no such
structure can still deliver it. :func:`look` reads what the transport lets a
client see, through the Celery app's own broker connection and kombu's
channel attributes:

- Redis: the length of each queue (all priority lists), the task ids of the
  messages in the queue when it is short enough to read whole, and the task
  ids in the ``unacked`` hash (every queue's), with the visibility timeout;
- RabbitMQ (AMQP): the ready messages and the consumers of each queue. An
  unacknowledged message cannot be seen from outside its channel, so a queue
  with a consumer that did not answer the workers' inspect may still deliver
  anything;
- the ``memory`` and ``filesystem`` transports: the queue's length (what a
  dead process had fetched died with it);
- any other transport: nothing, and :attr:`BrokerView.supported` is false, so
  housekeeping marks nothing lost there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("django_taskqueue.housekeeping")

#: Messages read per queue at most to find task ids (Redis); a longer queue
#: counts as possibly holding any task.
SCAN_LIMIT = 5000

_TRANSPARENT = frozenset({"redis", "amqp", "memory", "filesystem"})


@dataclass
class BrokerView:
    """One reading of the broker.

    Attributes:
        transport: kombu's ``driver_type`` (``redis``, ``amqp``...).
        supported: the transport is one whose in-flight messages this module
            knows how to account for.
        error: why the broker could not be read (the view then holds nothing).
        sizes: messages waiting per queue (``None``: unknown).
        unacked: task ids in Redis's ``unacked`` hash (delivered, not acknowledged).
        queued: task ids found in the queues read whole.
        read_whole: the queues whose every message's task id is in ``queued``.
        silent_consumers: per queue, consumers beyond those of the workers
            that answered the inspect (AMQP only).
        visibility_timeout: seconds after which Redis puts an unacknowledged
            message back on its queue (``None`` elsewhere).
    """

    transport: str = ""
    supported: bool = False
    error: str = ""
    sizes: dict[str, int | None] = field(default_factory=dict)
    unacked: set[str] = field(default_factory=set)
    queued: set[str] = field(default_factory=set)
    read_whole: set[str] = field(default_factory=set)
    silent_consumers: dict[str, int] = field(default_factory=dict)
    visibility_timeout: float | None = None

    @property
    def usable(self) -> bool:
        """The view can be relied on to call a message gone."""
        return self.supported and not self.error

    def holds(self, task_id: str) -> str:
        """Where the broker was seen holding this task's message; ``""`` when it was not.

        Positive evidence only (the task id was read in the unacked hash or in a
        queue): a queue too long to read, or a silent consumer, proves nothing here.
        """
        if task_id in self.unacked:
            return (
                "the message is in the broker's unacked hash: it goes back to its queue "
                f"after the visibility timeout ({self.visibility_timeout:g}s)"
            )
        if task_id in self.queued:
            return "the message is waiting in a queue"
        return ""

    def may_deliver(self, task_id: str, queue: str) -> str:
        """Why the broker may still deliver this task's message; ``""`` when it cannot.

        Only meaningful for a :attr:`usable` view.
        """
        held = self.holds(task_id)
        if held:
            return held
        size = self.sizes.get(queue)
        if size is None:
            return f"the size of queue {queue!r} is unknown"
        if size and queue not in self.read_whole:
            return f"queue {queue!r} holds {size} messages"
        silent = self.silent_consumers.get(queue, 0)
        if silent:
            return (
                f"{silent} consumer(s) of queue {queue!r} did not answer the inspect and may "
                "hold the message unacknowledged"
            )
        return ""


def look(
    app: Any,
    queues: Iterable[str],
    *,
    consumers: Mapping[str, int] | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> BrokerView:
    """Read what the broker holds for ``queues``; never raises.

    Args:
        app: the Celery app (its broker connection is used).
        queues: the queue names of the tasks in question.
        consumers: per queue, how many of its consumers are workers that
            answered the inspect (AMQP, where the broker counts consumers: the
            others are in :attr:`BrokerView.silent_consumers`). ``None``: not compared.
        scan_limit: messages read per queue at most (Redis).
    """
    names = sorted(set(queues))
    view = BrokerView()
    try:
        with app.connection_for_write() as conn:
            view.transport = str(conn.transport.driver_type)
            view.supported = view.transport in _TRANSPARENT
            if not view.supported:
                return view
            channel = conn.default_channel
            for name in names:
                view.sizes[name], count = _declare(channel, name)
                if view.transport == "amqp" and consumers is not None and count is not None:
                    view.silent_consumers[name] = max(0, count - consumers.get(name, 0))
            if view.transport == "redis":
                _read_redis(channel, view, names, scan_limit)
    except Exception as exc:
        logger.warning("Could not read the broker's queues", exc_info=True)
        view.error = f"{type(exc).__name__}: {exc}"
    return view


def _declare(channel: Any, name: str) -> tuple[int | None, int | None]:
    """``(messages waiting, consumers)`` of a queue; ``(0, 0)`` when it does not exist."""
    try:
        _, count, consumers = channel.queue_declare(queue=name, passive=True)
    except Exception as exc:
        if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
            return 0, 0
        raise
    return int(count), int(consumers)


def _read_redis(channel: Any, view: BrokerView, queues: list[str], scan_limit: int) -> None:
    """The task ids of the ``unacked`` hash and of the queues short enough to read whole.

    The keys are kombu's (``unacked_key``, the priority lists ``queue + sep + n``),
    under its ``global_keyprefix``, which kombu's client adds itself only to
    the commands it uses: HSCAN and LRANGE get it here.
    """
    prefix = str(getattr(channel, "global_keyprefix", "") or "")
    view.visibility_timeout = float(channel.visibility_timeout)
    with channel.conn_or_acquire() as client:
        for _, raw in client.hscan_iter(prefix + channel.unacked_key, count=500):
            payload = _loads(raw)
            if isinstance(payload, list) and payload:
                _add_id(view.unacked, payload[0])
        for name in queues:
            size = view.sizes.get(name)
            if size is None or size > scan_limit:
                continue
            ids: set[str] = set()
            for pri in channel.priority_steps:
                key = f"{name}{channel.sep}{pri}" if pri else name
                for raw in client.lrange(prefix + key, 0, scan_limit):
                    _add_id(ids, _loads(raw))
            view.queued |= ids
            view.read_whole.add(name)


def _loads(raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _add_id(ids: set[str], message: Any) -> None:
    """Add the task id a kombu message carries (protocol 2 header, or correlation id)."""
    if not isinstance(message, Mapping):
        return
    headers = message.get("headers")
    properties = message.get("properties")
    task_id = headers.get("id") if isinstance(headers, Mapping) else None
    if not task_id and isinstance(properties, Mapping):
        task_id = properties.get("correlation_id")
    if task_id:
        ids.add(str(task_id))
