"""A sequential bulk run's messages: none grows with the number of files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kombu.serialization import dumps

from django_taskqueue import actions, bulk, lifecycle
from django_taskqueue.models import TaskLog
from tests.helpers import SIDE_QUEUE, Published, published, purge_queue
from tests.live import wait_finished

# As much metadata as the API accepts by default (API_METADATA_MAX_BYTES, 8 KB).
METADATA = {"note": "x" * 8000}


@pytest.fixture
def side_queue(celery_app: Any) -> Iterator[str]:
    yield SIDE_QUEUE
    purge_queue(celery_app)


def paths(files: int) -> list[dict[str, Any]]:
    return [{"file_path": f"/data/file-{i:04d}.txt"} for i in range(files)]


def continuation_size(message: Published) -> int:
    """The size of the message the child's success callback will be (its body as JSON)."""
    [callback] = message.body[2]["callbacks"]
    _, _, body = dumps((callback["args"], callback["kwargs"], {}), serializer="json")
    return len(body)


def publish_every_step(files: int, queue: str) -> list[Published]:
    """Publish a sequential run's files as its workers would, one after the other.

    The first file as ``bulk_create`` publishes it, then each next one as the
    success callback of the previous one does; no worker runs them.
    """
    parent, children = lifecycle.create_bulk(
        "tests.echo", paths(files), kwargs=METADATA, parallel=False
    )
    with published() as sent:
        bulk.publish_chain(parent, children, METADATA, queue=queue)
        for child in children[:-1]:
            bulk.publish_next(parent.pk, child.celery_task_id, METADATA, queue=queue)
    return sent


@pytest.mark.django_db
def test_a_sequential_run_of_300_files_sends_no_larger_message_than_one_of_3(
    celery_app: Any, side_queue: str
) -> None:
    few = publish_every_step(3, side_queue)
    many = publish_every_step(300, side_queue)
    assert len(many) == 300  # one message per file: the first holds no other file
    largest = max(message.size for message in many)
    # One file's arguments with the metadata, and the metadata once more in the success
    # callback that publishes the next file: about 18 KB, whatever the run's size.
    assert largest < 20 * 1024, largest
    assert largest <= max(message.size for message in few) + 16
    # That callback's own message holds the metadata once.
    assert max(continuation_size(message) for message in many) < 9 * 1024


def test_a_sequential_run_runs_its_files_in_order_on_a_worker(worker: Any) -> None:
    with published() as sent:
        parent, children = lifecycle.create_bulk(
            "tests.echo", paths(4), kwargs=METADATA, parallel=False
        )
        bulk.publish_chain(parent, children, METADATA)
        parent = wait_finished(parent.celery_task_id, timeout=60)
    assert parent.status == "completed", parent.error_message
    assert parent.result == {"total": 4, "completed": 4, "failed": 0, "cancelled": 0}
    runs = TaskLog.objects.filter(parent=parent).order_by("started_at")
    assert [run.file_path for run in runs] == [f"/data/file-{i:04d}.txt" for i in range(4)]
    assert all((run.result or {}).get("kwargs") == METADATA for run in runs)
    names = [message.task for message in sent]
    assert names == ["tests.echo", "django_taskqueue.continue_bulk"] * 4
    assert max(message.size for message in sent) < 20 * 1024


@pytest.mark.django_db(transaction=True)
def test_the_next_file_is_published_once(celery_app: Any, side_queue: str) -> None:
    parent, children = lifecycle.create_bulk("tests.echo", paths(3), kwargs={}, parallel=False)
    after = children[0].celery_task_id
    with published() as sent:
        first = bulk.publish_next(parent.pk, after, {}, queue=side_queue)
        again = bulk.publish_next(parent.pk, after, {}, queue=side_queue)
    assert (first, again) == (children[1].celery_task_id, None)
    assert [m.headers["id"] for m in sent] == [children[1].celery_task_id]
    # A cancelled run publishes nothing more.
    actions.cancel(parent, revoke=False)
    assert bulk.publish_next(parent.pk, children[1].celery_task_id, {}) is None
