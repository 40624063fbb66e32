"""Prepare the example project for the schemathesis run: users, tokens, tasks and files.

Run inside the example's own settings (``DJANGO_SETTINGS_MODULE=example_project.settings``)
after ``migrate``::

    python -m tests.schema.seed

It writes small seed files into the example's allowed root (``ALLOWED_FILE_ROOTS``), one
kind per task type so the tasks the run starts really complete, creates two users and a
staff user with an API token each, and records a few tasks of every status through the
lifecycle (so cancel and retry have targets before the run creates any). It prints, as
JSON, the tokens by username and the seed files by task type.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

#: The users the run authenticates as: two ordinary users who must not see each other's
#: tasks, and a staff user who sees every task.
USERS = {"alice": False, "bob": False, "admin": True}

#: A few rows of the sales CSV the report task reads.
SALES = (
    "date,region,product,units,unit_price\n"
    "2025-01-03,north,kettle,3,39.5\n"
    "2025-02-11,south,toaster,1,29.0\n"
    "2025-02-19,east,blender,2,79.9\n"
    "2025-03-07,west,grinder,5,54.0\n"
)

DOCUMENT = (
    "A short note for the document task. It has a few sentences to count. "
    "The summary keeps some of them. Nothing here is secret.\n"
)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour (8-bit RGB), written with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def write_seed_files(root: Path) -> dict[str, list[str]]:
    """Small files of every kind inside ``root``; their absolute paths by task type.

    Names include spaces and non-ASCII letters (valid UTF-8), as real uploads do.
    """
    root.mkdir(parents=True, exist_ok=True)
    nested = root / "nested dir"
    nested.mkdir(exist_ok=True)
    seeds: dict[str, list[Path]] = {
        "image": [root / "tiny.png", nested / "ciel étoilé.png"],
        "document": [root / "note.txt", nested / "résumé final.txt"],
        "report": [root / "sales.csv", nested / "ventes 2025.csv"],
        "video": [root / "clip.bin", nested / "clip deux.bin"],
    }
    for number, path in enumerate(seeds["image"]):
        path.write_bytes(png(48 + number * 16, 32, (40 * number, 120, 200)))
    for path in seeds["document"]:
        path.write_text(DOCUMENT, encoding="utf-8")
    for path in seeds["report"]:
        path.write_text(SALES, encoding="utf-8")
    for path in seeds["video"]:
        path.write_bytes(os.urandom(16 * 1024))
    return {kind: [str(path) for path in paths] for kind, paths in seeds.items()}


def make_users() -> dict[str, str]:
    """The users and their API tokens (``Authorization: Token <key>``), by username."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    model = get_user_model()
    tokens = {}
    for username, staff in USERS.items():
        user = model.objects.create_user(
            username, f"{username}@example.test", password=None, is_staff=staff
        )
        tokens[username] = Token.objects.create(user=user).key
    return tokens


def make_tasks(seeds: dict[str, list[str]]) -> None:
    """A task in each status for every user, recorded as a producer and a worker would."""
    from django.contrib.auth import get_user_model

    from django_taskqueue import lifecycle
    from django_taskqueue.progress import ProgressWrite

    document = seeds["document"][0]
    for user in get_user_model().objects.all():
        for status in ("pending", "processing", "completed", "failed", "cancelled"):
            celery_task_id = str(uuid.uuid4())
            lifecycle.create_task_log(
                celery_task_id,
                task_name="jobs.tasks.process_document",
                task_type="document",
                args=[document],
                owner=user,
                file_path=document,
                file_name=Path(document).name,
                file_size=Path(document).stat().st_size,
            )
            if status == "pending":
                continue
            lifecycle.mark_started(celery_task_id)
            lifecycle.record_progress(
                ProgressWrite(40, "halfway", None, history=True),
                celery_task_id=celery_task_id,
            )
            if status == "completed":
                lifecycle.mark_completed(celery_task_id, result={"words": 24})
            elif status == "failed":
                lifecycle.mark_failed(
                    celery_task_id, error_message="it broke", error_code="ValueError"
                )
            elif status == "cancelled":
                lifecycle.mark_cancelled(celery_task_id, reason="no longer needed")


def main() -> dict[str, Any]:
    """Seed everything; what the run needs to know."""
    import django

    django.setup()
    from django_taskqueue.conf import conf

    seeds = write_seed_files(Path(conf.ALLOWED_FILE_ROOTS[0]))
    tokens = make_users()
    make_tasks(seeds)
    return {"tokens": tokens, "seeds": seeds}


if __name__ == "__main__":
    print(json.dumps(main()))
