"""The Django admin for django_taskqueue.

Importing this package (Django's admin autodiscovery does) registers
:class:`~django_taskqueue.admin.tasklog.TaskLogAdmin` and the read-only
lists of progress steps and events on the default admin site.
"""

from __future__ import annotations

from django_taskqueue.admin.history import TaskEventLogAdmin, TaskProgressAdmin
from django_taskqueue.admin.tasklog import TaskLogAdmin

__all__ = ["TaskEventLogAdmin", "TaskLogAdmin", "TaskProgressAdmin"]
