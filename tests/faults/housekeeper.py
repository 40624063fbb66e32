"""A process that runs the housekeeping jobs in a loop, as beat would, only faster.

``python -m tests.faults.housekeeper LOG`` calls ``reconcile_lost`` and
``mark_stale_tasks`` every ``--interval`` seconds, with ``LOST_AFTER`` set to
``--lost-after``, and appends each run's result to ``LOG`` as a JSON line. It
is a process of its own (like a worker running the beat tasks) so the fault
experiments can kill and restart the workers while housekeeping goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--lost-after", type=float, default=1.0)
    parser.add_argument("--inspect-timeout", type=float, default=0.5)
    options = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings
    from django.db import close_old_connections
    from django.test.utils import override_settings

    import tests.tasks  # noqa: F401  (a worker imports them; mark_stale reads their stale_after)
    from django_taskqueue import housekeeping
    from tests.celery_app import app

    tuned = {**settings.DJANGO_TASKQUEUE, "LOST_AFTER": options.lost_after}
    with override_settings(DJANGO_TASKQUEUE=tuned), open(options.log, "a") as log:
        while True:
            entry: dict[str, Any] = {"at": time.time()}
            try:
                close_old_connections()
                entry["lost"] = housekeeping.reconcile_lost(
                    inspect_timeout=options.inspect_timeout, app=app
                ).as_dict()
                entry["stale"] = housekeeping.mark_stale_tasks().as_dict()
            except Exception:
                # The broker or the database may be down on purpose: note it, go on.
                entry["error"] = traceback.format_exc(limit=3)
            log.write(json.dumps(entry, default=str) + "\n")
            log.flush()
            time.sleep(options.interval)


def runs(log: Path) -> list[dict[str, Any]]:
    """The housekeeper's runs so far (one dict per line of its log)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def housekeeper(tmp_path: Path, **options: float) -> Iterator[Path]:
    """Run the housekeeper beside the test; yield the path of its JSON log."""
    import sys

    from tests.live import WorkerProcess, spawn, wait_for, worker_env

    log = tmp_path / "housekeeping.jsonl"
    args = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    process = spawn(
        [sys.executable, "-m", "tests.faults.housekeeper", str(log), *args],
        tmp_path / "housekeeper.out",
        worker_env(),
    )
    handle = WorkerProcess(process, tmp_path / "housekeeper.out", "housekeeper")
    try:
        wait_for(lambda: runs(log) or process.poll() is not None, timeout=60, what="housekeeping")
        if process.poll() is not None:
            raise RuntimeError(f"the housekeeper exited:\n{handle.log}")
        yield log
    finally:
        handle.stop()


if __name__ == "__main__":
    main()
