"""``manage.py demo``: the whole example in one command.

Migrates, creates the demo users and sample files, starts a Celery worker, Celery beat,
the web server (and Flower, with ``--flower``) as child processes, prints the URLs and
the accounts, submits a few tasks and shows their progress live. Ctrl-C (or SIGTERM)
stops every child; nothing is left running.
"""

from __future__ import annotations

import signal
import sys
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from example_project import urls
from jobs import progress, runtime, sampledata, scenarios
from jobs.processes import Child, Children


class _Stop(Exception):
    """Raised by the signal handlers: leave the main loop and clean up."""


class Command(BaseCommand):
    """Run the example: worker, beat, web server, demo tasks with live progress."""

    help = __doc__

    def add_arguments(self, parser: ArgumentParser) -> None:
        """The command's options."""
        parser.add_argument("--host", default="127.0.0.1", help="web server address")
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--no-web", action="store_true", help="do not start the web server")
        parser.add_argument("--no-beat", action="store_true", help="do not start celery beat")
        parser.add_argument("--no-tasks", action="store_true", help="submit no demo tasks")
        parser.add_argument(
            "--exit-after-tasks",
            action="store_true",
            help="stop everything once the demo tasks have finished (exit 1 if one failed "
            "unexpectedly or they time out)",
        )
        parser.add_argument(
            "--timeout", type=float, default=300, help="seconds to wait for the demo tasks"
        )
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument("--flower", action="store_true", help="start Flower too")
        parser.add_argument("--flower-port", type=int, default=5555)
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=15,
            help="seconds the children get to stop before they are killed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the demo until the tasks finish (--exit-after-tasks) or Ctrl-C."""
        self.out = self.stdout
        children = Children(settings.LOG_DIR)
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # The first signal stops the demo; another one while stopping is ignored so
            # the children still get their orderly shutdown. While a child is being
            # started the exception waits until it is registered (see Children.start),
            # so no child can escape the cleanup.
            nonlocal stopping
            if not stopping:
                stopping = True
                children.interrupt(_Stop(signal.Signals(signum).name))

        previous = {
            signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        failed = False
        try:
            failed = self._run(children, options)
        except _Stop as stop:
            self.out.write(f"\n{stop} received: stopping")
        finally:
            stopping = True
            self._stop(children, options["shutdown_timeout"])
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if failed:
            raise CommandError("the demo did not finish as expected (see above)")

    # ------------------------------------------------------------------------------

    def _run(self, children: Children, options: dict[str, Any]) -> bool:
        host, port = options["host"], options["port"]
        self.out.write(f"Data folder: {settings.DATA_DIR}")
        self.out.write("Preparing the database, the demo users and the sample files...")
        started = time.monotonic()
        users, samples = runtime.prepare()
        self.out.write(f"  ready in {time.monotonic() - started:.1f}s")
        if not options["no_web"] and not runtime.port_free(host, port):
            raise CommandError(f"{host}:{port} is in use: pick another port with --port")

        runtime.reset_broadcast_state()
        env = runtime.child_env()
        hostname = runtime.new_hostname()
        worker = children.start(
            "worker",
            runtime.worker_argv(hostname, options["concurrency"]),
            env=env,
            cwd=runtime.PROJECT_DIR,
        )
        if not options["no_beat"]:
            children.start("beat", runtime.beat_argv(), env=env, cwd=runtime.PROJECT_DIR)
        web = None
        if not options["no_web"]:
            web = children.start(
                "web", runtime.web_argv(host, port), env=env, cwd=runtime.PROJECT_DIR
            )
        flower = options["flower"] and self._start_flower(children, env, options["flower_port"])

        self.out.write("Waiting for the worker...")
        if not runtime.wait_for_worker(hostname, 90, alive=worker.running):
            self._report_dead(worker)
            raise CommandError("the worker did not start")
        if web is not None and not runtime.wait_for_port(host, port, 30, alive=web.running):
            self._report_dead(web)
            raise CommandError("the web server did not start")
        self._banner(host, port, options, flower)

        failed = False
        if not options["no_tasks"]:
            ids = scenarios.submit_demo(users, samples)
            self.out.write(f"\nSubmitted {len(ids)} demo tasks; live progress (from TaskLog rows):")
            summary = progress.watch(
                ids,
                _Raw(self.out),
                tty=self.out.isatty(),
                timeout=options["timeout"],
                keep_going=lambda: not children.exited(),
            )
            self.out.write(summary.line())
            for child in children.exited():
                self._report_dead(child)
                failed = True
            failed = failed or not summary.finished
        if options["exit_after_tasks"]:
            return failed
        self.out.write("\nRunning. Press Ctrl-C to stop.")
        while True:
            for child in children.exited():
                self._report_dead(child)
                return True
            time.sleep(0.5)

    def _start_flower(self, children: Children, env: dict[str, str], port: int) -> bool:
        if not settings.HAS_FLOWER:
            self.out.write(
                self.style.WARNING(
                    "Flower is not installed: pip install --group flower (see docs/example.md)"
                )
            )
            return False
        children.start("flower", runtime.flower_argv(port), env=env, cwd=runtime.PROJECT_DIR)
        return True

    def _banner(self, host: str, port: int, options: dict[str, Any], flower: bool) -> None:
        write = self.out.write
        write("")
        if not options["no_web"]:
            base = f"http://{host}:{port}"
            write(self.style.SUCCESS(f"Web:    {base}/"))
            tasklog = f"{base}/admin/django_taskqueue/tasklog/"
            write(f"Admin:  {base}/admin/   task log: {tasklog}   overview: {tasklog}overview/")
            if urls.API_MOUNTED:
                write(f"API:    {base}/api/tasks/   docs: {base}/api/docs/   {base}/api/redoc/")
                write(f"        schema: {base}/api/schema/")
        if flower:
            write(f"Flower: http://127.0.0.1:{options['flower_port']}/")
        write("Accounts (username / password):")
        for user in sampledata.DEMO_USERS:
            role = "superuser" if user.staff else "user"
            write(f"  {user.username} / {user.password}   ({role}, {user.email})")
        write(f"Logs of the worker, beat and web server: {settings.LOG_DIR}")
        write(f"Mail sent by the tasks: {settings.MAIL_DIR}")

    def _report_dead(self, child: Child) -> None:
        self.out.write(
            self.style.ERROR(
                f"{child.name} exited with code {child.process.returncode}; its log ends with:"
            )
        )
        self.out.write(child.tail())

    def _stop(self, children: Children, timeout: float) -> None:
        if not children.children:
            return
        self.out.write("Stopping " + ", ".join(child.name for child in children.children) + "...")
        children.stop(timeout)
        self.out.write("All child processes have exited.")
        sys.stdout.flush()


class _Raw:
    """The command's output as a plain stream (OutputWrapper adds a newline to each write)."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(text, ending="")
        return len(text)

    def flush(self) -> None:
        self._out.flush()
