"""``manage.py taskqueue_beat_sync``: install a beat schedule as django-celery-beat rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from django_taskqueue.contrib.beat.sync import sync_schedule

DEFAULT_SOURCE = "django_taskqueue.beat.beat_schedule"


def load_schedule(source: str) -> Mapping[str, Mapping[str, Any]]:
    """Import ``source``: a ``beat_schedule`` dict, or a callable returning one."""
    try:
        value = import_string(source)
    except (ImportError, ValueError) as exc:  # ValueError: a path such as ".x"
        raise CommandError(f"--schedule: cannot import {source!r}: {exc}") from exc
    if callable(value):
        try:
            value = value()
        except Exception as exc:
            raise CommandError(f"--schedule: calling {source!r} failed: {exc}") from exc
    if not isinstance(value, Mapping) or not all(
        isinstance(e, Mapping) and "task" in e and "schedule" in e for e in value.values()
    ):
        raise CommandError(
            f"--schedule: {source!r} is not a beat_schedule dict "
            '(name -> {"task": ..., "schedule": ...})'
        )
    return value


class Command(BaseCommand):
    """Create, update and disable ``PeriodicTask`` rows to match a beat schedule."""

    help = (
        "Install the django-taskqueue beat presets (or another beat_schedule dict) as "
        "django-celery-beat PeriodicTask rows: create what is missing, update what differs, "
        "disable managed rows whose entry was removed. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--schedule",
            default=DEFAULT_SOURCE,
            metavar="DOTTED.PATH",
            help="A beat_schedule dict or a callable returning one, e.g. "
            f"myproject.celery.BEAT_SCHEDULE (default {DEFAULT_SOURCE}).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Show the differences; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        schedule = load_schedule(options["schedule"])
        try:
            result = sync_schedule(schedule, dry_run=options["dry_run"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for change in result.changes:
            self.stdout.write(change.describe())
        summary = (
            f"{len(result.names('create'))} to create, {len(result.names('update'))} to update, "
            f"{len(result.names('disable'))} to disable, {len(result.unchanged)} unchanged"
        )
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {summary}.")
        else:
            self.stdout.write(self.style.SUCCESS(summary.replace(" to ", " ") + "."))
