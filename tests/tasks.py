"""Sample tasks the tests run (module level, as a host project would write them)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

import django_taskqueue.tasks  # noqa: F401  (the housekeeping tasks, for the worker processes)
from django_taskqueue import TrackedTask, open_allowed_file


@shared_task(base=TrackedTask, bind=True, name="tests.add", task_type="sample")
def add(self: TrackedTask, x: int, y: int) -> int:
    return x + y


@shared_task(base=TrackedTask, bind=True, name="tests.boom")
def boom(self: TrackedTask, message: str = "boom") -> None:
    raise ValueError(message)


@shared_task(base=TrackedTask, bind=True, name="tests.echo")
def echo(self: TrackedTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@shared_task(base=TrackedTask, bind=True, name="tests.unserializable_result", ignore_result=True)
def unserializable_result(self: TrackedTask) -> object:
    return object()


@shared_task(base=TrackedTask, bind=True, name="tests.unserializable_stored_result")
def unserializable_stored_result(self: TrackedTask) -> object:
    return {"when": object()}  # the JSON result serializer cannot encode it


@shared_task(base=TrackedTask, bind=True, name="tests.progress")
def progress(self: TrackedTask, steps: int = 10, sleep: float = 0.0, message: str = "") -> int:
    for i in range(1, steps + 1):
        self.update_progress(current=i, total=steps, message=message.format(i=i) if message else "")
        if sleep:
            time.sleep(sleep)
    return steps


@shared_task(base=TrackedTask, bind=True, name="tests.wait_for_cancel")
def wait_for_cancel(self: TrackedTask, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        self.check_cancelled()
        time.sleep(0.05)
    return "not cancelled"


@shared_task(base=TrackedTask, bind=True, name="tests.flaky", max_retries=3)
def flaky(self: TrackedTask, fail_times: int = 2) -> int:
    if self.request.retries < fail_times:
        raise self.retry(exc=ConnectionError(f"attempt {self.request.retries} failed"), countdown=0)
    return self.request.retries


# Sub-second backoff and limits keep the tests fast; Celery accepts floats
# where celery-types declares ints, hence options passed as a dict.
_FAST_BACKOFF: dict[str, Any] = {"retry_backoff": 0.01, "retry_backoff_max": 0.05}
_SOFT_LIMIT: dict[str, Any] = {"soft_time_limit": 0.3}


@shared_task(
    base=TrackedTask,
    bind=True,
    name="tests.autoretry",
    autoretry_for=(ConnectionError,),
    retry_jitter=False,
    max_retries=2,
    **_FAST_BACKOFF,
)
def autoretry(self: TrackedTask) -> None:
    raise ConnectionError("always down")


@shared_task(base=TrackedTask, bind=True, name="tests.sleepy")
def sleepy(self: TrackedTask, seconds: float = 1.0) -> str:
    time.sleep(seconds)
    return "slept"


@shared_task(base=TrackedTask, bind=True, name="tests.soft_limited", **_SOFT_LIMIT)
def soft_limited(self: TrackedTask) -> str:
    time.sleep(3)
    return "too late"


@shared_task(base=TrackedTask, bind=True, name="tests.catches_soft_limit", **_SOFT_LIMIT)
def catches_soft_limit(self: TrackedTask) -> str:
    try:
        time.sleep(3)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "too late"


@shared_task(base=TrackedTask, bind=True, name="tests.hard_limited", time_limit=1)
def hard_limited(self: TrackedTask) -> str:
    time.sleep(10)
    return "too late"


@shared_task(bind=True, name="tests.untracked")
def untracked(self: Any, x: int) -> int:
    return x


class ImportCSV(TrackedTask):
    """A class-based tracked task (registered by subclassing)."""

    name = "tests.import_csv"
    task_type = "document"

    def run(self, rows: int = 3) -> int:
        for i in range(rows):
            self.update_progress(current=i + 1, total=rows, message=f"row {i + 1}")
        return rows


@shared_task(base=TrackedTask, bind=True, name="tests.process_file", task_type="file")
def process_file(self: TrackedTask, /, file_path: str, **options: Any) -> dict[str, Any]:
    """The API tests' file task: ``task(file_path, **metadata)``, as the seed's ``process_image``.

    ``seconds`` spreads ten-per-second progress reports over that time (each
    one a cancel point); ``fail_unless`` names a file that must exist, or the
    task fails (so a retry after creating it succeeds); ``hold_while`` names a
    file the task waits on while it exists (at most a minute), reporting
    progress unless ``quiet``.
    """
    fail_unless = options.get("fail_unless")
    if fail_unless and not os.path.exists(fail_unless):
        raise FileNotFoundError(f"{fail_unless} does not exist")
    hold_while = options.get("hold_while")
    deadline = time.monotonic() + 60
    while hold_while and os.path.exists(hold_while) and time.monotonic() < deadline:
        if not options.get("quiet"):
            self.update_progress(1, message="holding")
        time.sleep(0.1)
    size = os.path.getsize(file_path)
    seconds = float(options.get("seconds", 0))
    steps = max(4, int(seconds * 10))
    for i in range(1, steps + 1):
        self.update_progress(current=i, total=steps, message=f"step {i} of {steps}")
        if seconds:
            time.sleep(seconds / steps)
    return {"file_path": file_path, "size": size, "options": options}


@shared_task(base=TrackedTask, bind=True, name="tests.read_file", task_type="file")
def read_file(self: TrackedTask, /, file_path: str, start_when: str = "") -> dict[str, Any]:
    """Read the start of a file with ``open_allowed_file``, as a task given a path should.

    ``start_when`` names a file to wait for first, so that a test can change
    the file between the request that started the task and the run.
    """
    deadline = time.monotonic() + 20
    while start_when and not os.path.exists(start_when) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open_allowed_file(file_path) as handle:
        return {"head": handle.read(64).decode("utf-8", "replace")}


@shared_task(base=TrackedTask, bind=True, name="tests.bad_progress")
def bad_progress(self: TrackedTask) -> str:
    self.update_progress()  # neither a percentage nor current/total
    self.update_progress(current=1, total=0)
    self.update_progress(float("nan"))
    return "still fine"


@shared_task(base=TrackedTask, bind=True, name="tests.stuck_sleeper", stale_after=1.0)
def stuck_sleeper(self: TrackedTask, seconds: float = 30.0) -> str:
    """Sleeps without progress; stuck after 1 s without a heartbeat (housekeeping tests)."""
    time.sleep(seconds)
    return "slept"


@shared_task(
    base=TrackedTask,
    bind=True,
    name="tests.idempotent_sleeper",
    stale_after=1.0,
    acks_late=True,
    idempotent=True,
    max_retries=2,
)
def idempotent_sleeper(self: TrackedTask, seconds: float = 30.0) -> int:
    """Sleeps on its first attempt only: a re-queued run finishes at once."""
    if not self.request.retries:
        time.sleep(seconds)
    return int(self.request.retries or 0)


@shared_task(base=TrackedTask, bind=True, name="tests.busy_progress", **_SOFT_LIMIT)
def busy_progress(self: TrackedTask, seconds: float = 3.0) -> str:
    """Does nothing but report progress, so the soft limit fires inside a progress write."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        self.update_progress(i % 100, message=f"step {i}")
    return "ran to the end"


def nested(levels: int) -> Any:
    """``{"a": {"a": ... {}}}``, ``levels`` objects deep (built without recursion)."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@shared_task(base=TrackedTask, bind=True, name="tests.deep_result")
def deep_result(self: TrackedTask, levels: int = 10) -> Any:
    """Returns a value nested ``levels`` deep (the result path must survive it)."""
    return nested(levels)


@shared_task(
    base=TrackedTask, bind=True, name="tests.pickled", serializer="pickle", ignore_result=True
)
def pickled(self: TrackedTask, value: Any = None) -> str:
    """A task whose messages use pickle (the producer checks what pickle would recurse into)."""
    return type(value).__name__


# The fault suite's tasks (tests/faults): the body writes the ledger, the ground
# truth the records are checked against. No result is stored: what the suite
# checks is the TaskLog, and a result backend down with Redis is another story.
def _ledgered(task: TrackedTask, path: str, seconds: float) -> str:
    from tests.faults.ledger import append

    append(path, "start", str(task.request.id))
    if seconds:
        time.sleep(seconds)
    append(path, "done", str(task.request.id))
    return "done"


@shared_task(base=TrackedTask, bind=True, name="tests.ledger", ignore_result=True, stale_after=3)
def ledger(self: TrackedTask, path: str, seconds: float = 0.0) -> str:
    return _ledgered(self, path, seconds)


@shared_task(
    base=TrackedTask,
    bind=True,
    name="tests.ledger_late",
    acks_late=True,
    ignore_result=True,
    stale_after=3,
)
def ledger_late(self: TrackedTask, path: str, seconds: float = 0.0) -> str:
    return _ledgered(self, path, seconds)


@shared_task(
    base=TrackedTask,
    bind=True,
    name="tests.ledger_run",
    acks_late=True,
    ignore_result=True,
    stale_after=60,
)
def ledger_run(self: TrackedTask, path: str, seconds: float, fail_run: int = 0) -> str:
    """A ledgered body that knows which run of its id it is: run ``fail_run`` raises.

    For deliveries of one message twice (tests/faults/test_duplicate_delivery.py):
    the ledger counts the starts of the id, this one included, and a run that
    raises appends ``failed`` instead of ``done``.
    """
    from pathlib import Path

    from tests.faults.ledger import Ledger, append

    task_id = str(self.request.id)
    append(path, "start", task_id)
    run = Ledger(Path(path)).starts()[task_id]
    time.sleep(seconds)
    if run == fail_run:
        append(path, "failed", task_id)
        raise RuntimeError(f"run {run} of {task_id} fails on purpose")
    append(path, "done", task_id)
    return "done"


# --- Celery's own behaviours that tracking must keep (tests/test_celery_semantics.py) ---


@shared_task(base=TrackedTask, bind=True, name="tests.retry_without_throw", max_retries=3)
def retry_without_throw(self: TrackedTask) -> Any:
    # As Celery's own test task: the retry is returned, not raised.
    if self.request.retries >= 2:
        return 42
    return self.retry(exc=ConnectionError("not yet"), countdown=0, throw=False)


@shared_task(base=TrackedTask, bind=True, name="tests.retry_quietly", max_retries=3)
def retry_quietly(self: TrackedTask) -> Any:
    # retry(throw=False) in a worker: the retry is queued and this run returns normally.
    if self.request.retries >= 2:
        return 42
    self.retry(countdown=0, throw=False)
    return "scheduled"


@shared_task(base=TrackedTask, bind=True, name="tests.rejects")
def rejects(self: TrackedTask, requeue: bool = False) -> None:
    from celery.exceptions import Reject

    raise Reject("no thanks", requeue=requeue)


@shared_task(base=TrackedTask, bind=True, name="tests.replaced")
def replaced(self: TrackedTask, x: int) -> Any:
    return self.replace(add.s(x, 1))


@shared_task(base=TrackedTask, bind=True, name="tests.kept_alive")
def kept_alive(self: TrackedTask) -> bool:
    """Whether this run is on this process's heartbeat list."""
    from django_taskqueue import heartbeat

    return str(self.request.id) in heartbeat.running()


@shared_task(base=TrackedTask, bind=True, name="tests.total", task_type="sample")
def total(self: TrackedTask, values: list[int]) -> int:
    """A chord body: the sum of its header's results."""
    return sum(values)


@shared_task(base=TrackedTask, bind=True, name="tests.replaced_by_chain")
def replaced_by_chain(self: TrackedTask, x: int) -> Any:
    """Replaces itself with ``add(x, 1) | add(10)`` (Celery's ``Task.replace``)."""
    from celery import chain

    return self.replace(chain(add.s(x, 1), add.s(10)))


@shared_task(base=TrackedTask, bind=True, name="tests.sends_add")
def sends_add(self: TrackedTask, x: int) -> str:
    """Sends ``add(x, x)`` from its body and returns its Celery id."""
    return str(add.delay(x, x).id)
