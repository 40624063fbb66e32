"""django-celery-beat integration: schedule sync and missed-run monitoring.

Add ``"django_taskqueue.contrib.beat"`` to ``INSTALLED_APPS`` (next to
``"django_celery_beat"``) for the ``taskqueue_beat_sync`` and
``taskqueue_beat_check`` management commands. This is the only part of
django-taskqueue that imports django-celery-beat.
"""

from __future__ import annotations

try:
    import django_celery_beat  # noqa: F401  (fail early, with the fix in the message)
except ImportError as exc:  # pragma: no cover - exercised by the tests without the extra
    raise ImportError(
        "django_taskqueue.contrib.beat needs django-celery-beat: "
        'pip install "django-taskqueue[beat]"'
    ) from exc
