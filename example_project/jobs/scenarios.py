"""The tasks the demo submits: one of each kind, and a chain, a group and a chord."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model

from jobs import launch, tasks


def submit_demo(users: dict[str, int], samples: dict[str, list[Path]]) -> list[str]:
    """Submit the demo's tasks; return their Celery ids, in the order to show them."""
    model = get_user_model()
    alice = model.objects.get(pk=users["alice"])
    bob = model.objects.get(pk=users["bob"])
    images, documents = samples["image"], samples["document"]
    sales, video = samples["report"][0], samples["video"][0]
    logs = [
        launch.start(tasks.process_image, args=(str(images[0]),), owner=alice, file_path=images[0]),
        launch.start(
            tasks.process_document, args=(str(documents[0]),), owner=alice, file_path=documents[0]
        ),
        # Slowed down a little per chunk, so the progress can be watched.
        launch.start(
            tasks.process_video,
            args=(str(video),),
            kwargs={"delay": 0.05},
            owner=bob,
            file_path=video,
        ),
        launch.start(
            tasks.generate_report,
            args=(str(sales),),
            kwargs={"format": "pdf"},
            owner=alice,
            file_path=sales,
        ),
        launch.start(
            tasks.generate_report,
            args=(str(sales),),
            kwargs={"format": "xlsx"},
            owner=bob,
            file_path=sales,
        ),
        # carol's address fails once: the task retries after a backoff and then succeeds.
        launch.start(tasks.send_welcome_email, args=(users["carol"],), owner=alice),
        launch.start(tasks.send_password_reset_email, args=(users["bob"],), owner=bob),
        # Stops at its 2 s soft time limit and returns what it counted by then.
        launch.start(tasks.count_primes, args=(10**9,), owner=alice),
    ]
    ids = [log.celery_task_id for log in logs]
    ids += launch.task_ids(launch.image_batch(images[1:], width=400))
    ids += launch.task_ids(launch.corpus_word_counts(documents))
    ids += launch.task_ids(launch.document_then_notify(documents[1], users["alice"]))
    return ids
