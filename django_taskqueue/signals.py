"""Django signals that tell the host project about tracked tasks.

They are sent after the database transaction that recorded the change commits,
so a receiver always sees the row as written. Receivers run in the process
that recorded the change (usually a Celery worker) and must be quick.

Example::

    from django.dispatch import receiver
    from django_taskqueue.signals import task_status_changed

    @receiver(task_status_changed)
    def notify(sender, task_log, status, event_type, **kwargs):
        if status == "failed":
            alert_on_call(task_log)
"""

from __future__ import annotations

from django.dispatch import Signal

#: A task moved to a new status. Sent with ``sender=TaskLog`` and the keyword
#: arguments ``task_log`` (the row as written), ``status`` (the new status),
#: ``previous_status`` (or ``None`` when not known without an extra query) and
#: ``event_type`` (the :class:`~django_taskqueue.status.EventType` recorded).
task_status_changed = Signal()

#: A task's progress was written. Sent with ``sender=TaskLog`` and the keyword
#: arguments ``task_log_id``, ``celery_task_id``, ``progress`` (0-100),
#: ``message`` and ``data``. Progress writes are throttled, so this is not
#: sent for every ``update_progress`` call.
task_progress = Signal()
