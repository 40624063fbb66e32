"""Record the whole life of Celery tasks in Django.

``import django_taskqueue`` works without configured Django settings: the public
names are loaded lazily, on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

__all__ = [
    "FileNotAllowed",
    "MessageRefused",
    "TaskCancelled",
    "TrackedTask",
    "__version__",
    "open_allowed_file",
]

if TYPE_CHECKING:
    from django_taskqueue.exceptions import MessageRefused, TaskCancelled
    from django_taskqueue.files import FileNotAllowed, open_allowed_file
    from django_taskqueue.tracked import TrackedTask


def __getattr__(name: str) -> Any:
    # Importing TrackedTask pulls in Celery's Django integration and the models
    # lazily; doing it on attribute access keeps ``import django_taskqueue``
    # free of side effects (and of a settings requirement).
    if name == "TrackedTask":
        from django_taskqueue.tracked import TrackedTask

        return TrackedTask
    if name == "TaskCancelled":
        from django_taskqueue.exceptions import TaskCancelled

        return TaskCancelled
    if name in ("open_allowed_file", "FileNotAllowed"):
        from django_taskqueue import files

        return getattr(files, name)
    if name == "MessageRefused":
        from django_taskqueue.exceptions import MessageRefused

        return MessageRefused
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
