"""Re-make the screenshots of the example project that the README and the docs show.

Usage (from a checkout, with the example's dependencies, selenium, and Debian's
chromium and chromium-driver installed)::

    python scripts/screenshots.py [--port 8765] [--out docs/images]

It runs the example project's ``demo`` (worker and web server, no beat) on a data
folder of its own, in a temporary directory, so nothing under ``example_project/var/``
is touched. Once the demo's tasks have finished it starts a few more, so that every
state is on screen: one that fails, one that is cancelled, one queued for later and
one running (the sample video, slowed down). Then headless Chromium, driven as the
browser tests drive it (``tests/browser.py``), takes:

- ``example-admin.png``: the admin's task list, signed in as ``admin``;
- ``example-live-progress.png``: the example's home page, signed in as ``alice``, with
  the live progress widget following her tasks.

Each PNG is reduced to a 256-colour palette, which keeps it well under 200 KB.
Everything the script started is stopped before it exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
WIDTH = 1440
#: The demo without beat (the screenshots need no schedule), with time for slow machines.
DEMO_OPTIONS = ("--no-beat", "--timeout", "180")
#: The largest PNG the docs take (bytes).
MAX_BYTES = 200_000


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def demo(data_dir: Path, port: int) -> Iterator[Path]:
    """``manage.py demo`` in its own process group; yields its log file."""
    log = data_dir / "demo.log"
    env = {**os.environ, "EXAMPLE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE / "manage.py"),
                "demo",
                *DEMO_OPTIONS,
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait(
            lambda: process.poll() is not None or "demo tasks finished" in log.read_text(),
            240,
            "the demo's tasks",
        )
        if process.poll() is not None:
            raise SystemExit(f"the demo exited early:\n{log.read_text()}")
        yield log
    finally:
        # The demo stops its own children on SIGTERM (the worker finishes its tasks).
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def setup_django(data_dir: Path) -> None:
    """This process uses the demo's settings, database and broker folder."""
    os.environ["EXAMPLE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    sys.path[:0] = [str(EXAMPLE), str(ROOT)]
    import django

    django.setup()


def more_states() -> dict[str, Any]:
    """Start the tasks that put every status on screen; return the running one's row."""
    from django.contrib.auth import get_user_model

    # The example project is on sys.path at run time only (setup_django).
    from jobs import launch, sampledata, tasks  # type: ignore[import-not-found]

    from django_taskqueue import actions
    from django_taskqueue.models import TaskLog

    users = get_user_model().objects
    alice, bob = users.get(username="alice"), users.get(username="bob")
    samples = sampledata.ensure_samples()
    video, sales = samples["video"][0], samples["report"][0]

    # A format the task does not know: it raises, and the task fails.
    failed = launch.start(
        tasks.generate_report,
        args=(str(sales),),
        kwargs={"format": "docx"},
        owner=alice,
        file_path=sales,
    )
    # Due in an hour: pending until then.
    launch.start(
        tasks.generate_report,
        args=(str(sales),),
        kwargs={"format": "csv"},
        owner=alice,
        file_path=sales,
        countdown=3600,
    )
    # Cancelled once it has started.
    doomed = launch.start(
        tasks.process_video, args=(str(video),), kwargs={"delay": 0.2}, owner=bob, file_path=video
    )
    wait(
        lambda: TaskLog.objects.get(pk=doomed.pk).progress >= 10,
        60,
        "the task to cancel to start",
    )
    actions.cancel(TaskLog.objects.get(pk=doomed.pk), reason="wrong file", user=bob)
    # Running while the screenshots are taken: 50 chunks of 0.4 s.
    running = launch.start(
        tasks.process_video,
        args=(str(video),),
        kwargs={"delay": 0.4},
        owner=alice,
        file_path=video,
    )
    wait(
        lambda: TaskLog.objects.filter(pk=failed.pk, status="failed").exists(),
        60,
        "the failing task to fail",
    )
    return {"running": running}


def at_progress(pk: Any, low: int, high: int) -> None:
    """Wait until the running task's progress is in [low, high]."""
    from django_taskqueue.models import TaskLog

    wait(lambda: low <= TaskLog.objects.get(pk=pk).progress <= high, 60, f"{low}-{high} %")


def save(driver: Any, path: Path, height: int, element: Any = None) -> None:
    """A screenshot of the window (or of one element), as a palette PNG."""
    from PIL import Image

    driver.set_window_size(WIDTH, height)
    time.sleep(0.8)  # let the bars' transitions end
    raw = path.with_suffix(".raw.png")
    if element is not None:
        element.screenshot(str(raw))
    else:
        driver.save_screenshot(str(raw))
    with Image.open(raw) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    raw.unlink()
    size = path.stat().st_size
    print(f"{path}: {size:,} bytes")
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is larger than {MAX_BYTES:,} bytes")


def sign_in(driver: Any, base: str, login_path: str, username: str, target: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}{login_path}?next={target}")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(username)
    driver.find_element(By.CSS_SELECTOR, "[type=submit]").click()


def shoot(base: str, out: Path, profile: Path, running_pk: Any) -> None:
    sys.path.insert(0, str(ROOT))
    from selenium.webdriver.common.by import By

    from tests.browser import MISSING, start_chromium

    if MISSING:
        raise SystemExit(MISSING)
    driver = start_chromium(profile, width=WIDTH, height=800)
    try:
        sign_in(driver, base, "/admin/login/", "admin", "/admin/django_taskqueue/tasklog/")
        driver.find_element(By.ID, "result_list")
        # Fold the navigation sidebar so the list has the whole width.
        driver.find_element(By.ID, "toggle-nav-sidebar").click()
        at_progress(running_pk, 25, 60)
        driver.refresh()
        driver.find_element(By.ID, "result_list")
        save(driver, out / "example-admin.png", 820)

        driver.delete_all_cookies()
        sign_in(driver, base, "/accounts/login/", "alice", "/")
        at_progress(running_pk, 35, 80)
        table = driver.find_element(By.CSS_SELECTOR, "table")
        save(driver, out / "example-live-progress.png", 900, element=table)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="the demo's web server port")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taskqueue-screenshots-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        with demo(data_dir, args.port):
            setup_django(data_dir)
            started = more_states()
            shoot(
                f"http://127.0.0.1:{args.port}",
                args.out.resolve(),
                Path(tmp) / "chromium",
                started["running"].pk,
            )


if __name__ == "__main__":
    main()
