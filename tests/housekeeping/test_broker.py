"""What the broker can still deliver (django_taskqueue.broker), on real brokers.

The Redis tests run in the integration tier (TASKQUEUE_TEST_DB=postgres, the
broker in TASKQUEUE_TEST_BROKER). The RabbitMQ test needs a broker URL in
TASKQUEUE_TEST_AMQP (e.g. amqp://guest:guest@127.0.0.1:5672//) and skips
without one: CI starts no RabbitMQ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from django_taskqueue import broker
from tests.live import BROKER_URL, wait_for

AMQP_URL = os.environ.get("TASKQUEUE_TEST_AMQP", "")

# Consumes one message and holds it unacknowledged until killed (a worker's prefetch).
_HOLD = """
import sys, time
from kombu import Connection, Queue
held = []
with Connection(sys.argv[1]) as conn:
    channel = conn.channel()
    channel.basic_qos(0, 1, False)
    channel.basic_consume(sys.argv[2], callback=held.append)
    while not held:
        conn.drain_events(timeout=10)
    print(held[0].headers["id"], flush=True)
    while True:
        time.sleep(1)
"""


def _publish(url: str, queue: str, task_id: str) -> None:
    with Connection(url) as conn:
        producer = conn.Producer()
        exchange = Exchange(queue, type="direct")
        producer.publish(
            {"args": []},
            exchange=exchange,
            routing_key=queue,
            declare=[Queue(queue, exchange, routing_key=queue, auto_delete=False)],
            headers={"id": task_id, "task": "tests.add"},
            correlation_id=task_id,
        )


@pytest.fixture
def amqp_app() -> Iterator[Celery]:
    if not AMQP_URL:
        pytest.skip("set TASKQUEUE_TEST_AMQP to a RabbitMQ URL to run this test")
    app = Celery("tq-broker-test", broker=AMQP_URL, set_as_current=False)
    yield app
    app.close()


def test_rabbitmq_a_silent_consumer_may_hold_any_message(amqp_app: Celery) -> None:
    queue = f"tq-broker-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())
    _publish(AMQP_URL, queue, task_id)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, AMQP_URL, queue], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == task_id
        # The ready count is 0: the message is unacknowledged on the holder's channel.
        view = broker.look(amqp_app, [queue], consumers={})
        assert view.usable
        assert view.sizes[queue] == 0
        assert view.silent_consumers[queue] == 1
        assert "did not answer the inspect" in view.may_deliver(task_id, queue)
        # Counted as a worker that answered, the consumer is accounted for.
        accounted = broker.look(amqp_app, [queue], consumers={queue: 1})
        assert accounted.may_deliver(task_id, queue) == ""
        # The holder dies: RabbitMQ puts the message back on the queue at once.
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        back = wait_for(
            lambda: broker.look(amqp_app, [queue], consumers={}).sizes[queue] == 1,
            what="RabbitMQ to requeue the dead consumer's message",
        )
        assert back
        assert broker.look(amqp_app, [queue]).may_deliver(task_id, queue) == (
            f"queue {queue!r} holds 1 messages"
        )
    finally:
        if holder.poll() is None:
            holder.kill()
        with Connection(AMQP_URL) as conn:
            cleanup: Any = conn.default_channel
            cleanup.queue_delete(queue)


@pytest.mark.integration
def test_redis_reads_the_queue_and_the_unacked_hash(celery_app: Celery) -> None:
    queue = f"tq-broker-{uuid.uuid4().hex[:8]}"
    waiting, fetched = str(uuid.uuid4()), str(uuid.uuid4())
    _publish(BROKER_URL, queue, waiting)
    _publish(BROKER_URL, queue, fetched)
    with Connection(BROKER_URL) as conn:
        channel: Any = conn.channel()
        message = channel.basic_get(queue, no_ack=False)
        assert message is not None
        assert message.headers["id"] == waiting  # the first one out
        try:
            view = broker.look(celery_app, [queue])
            assert view.usable
            assert view.transport == "redis"
            assert view.sizes[queue] == 1
            assert fetched in view.queued
            assert waiting in view.unacked
            assert view.visibility_timeout == 3600
            assert "unacked hash" in view.may_deliver(waiting, queue)
            assert "waiting in a queue" in view.may_deliver(fetched, queue)
            # The queue was read whole: another task's id is not in it.
            assert view.may_deliver(str(uuid.uuid4()), queue) == ""
            # Too long to read: the queue may hold anything.
            short = broker.look(celery_app, [queue], scan_limit=0)
            assert short.may_deliver(str(uuid.uuid4()), queue).endswith("holds 1 messages")
        finally:
            message.ack()
            channel.queue_delete(queue)


def test_an_unreadable_broker_is_not_usable() -> None:
    app = Celery("tq-broker-down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    try:
        view = broker.look(app, ["celery"])
    finally:
        app.close()
    assert not view.usable
    assert view.error
