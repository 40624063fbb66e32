"""Every write of a tracked task's life: plain functions over the three models.

The task base class, the operations of :mod:`django_taskqueue.actions`, the
admin, the management commands and the housekeeping tasks all write through
these, and they can be tested without Celery: nothing in this package imports
Celery, nor anything that does (an import-linter contract in ``pyproject.toml``
keeps it so).

- :mod:`~django_taskqueue.lifecycle.transitions`: the conditional-update engine
  and every status change (a worker's marks, a cancel, a bulk parent's aggregate);
- :mod:`~django_taskqueue.lifecycle.creation`: the rows written before a message
  is published (and those of canvas steps never published);
- :mod:`~django_taskqueue.lifecycle.bulk`: a bulk run's parent and children;
- :mod:`~django_taskqueue.lifecycle.recovery`: stuck, lost and re-queued tasks,
  and the heartbeats;
- :mod:`~django_taskqueue.lifecycle.records`: what they share (the outcome, the
  events, the transaction).

These functions raise on database errors; :class:`~django_taskqueue.TrackedTask`
wraps its calls so that a failure to record never fails the user's task.

Cancelling (with Celery's revoke) and running again are operations of
:mod:`django_taskqueue.actions`, which reach Celery and call these.
"""

from __future__ import annotations

from django_taskqueue.lifecycle.batch import write_marks
from django_taskqueue.lifecycle.bulk import create_bulk, fail_bulk
from django_taskqueue.lifecycle.creation import (
    check_rerun_status,
    create_idempotent_task_log,
    create_rerun,
    create_task_log,
    find_by_idempotency_key,
    mark_republished,
    record_publish,
    record_unpublished,
)
from django_taskqueue.lifecycle.records import (
    LINEAGE_FIELDS,
    PUBLISH_FAILED,
    PUBLISH_UNKNOWN,
    FillEmpty,
    KeepFirst,
    Outcome,
    orm_updates,
    record_time,
    recorded_at,
    stored_arguments,
    stored_json,
    stored_text,
)
from django_taskqueue.lifecycle.recovery import mark_lost, mark_stale, requeue_stale, touch_many
from django_taskqueue.lifecycle.transitions import (
    Mark,
    RowState,
    cancel_with_children,
    completion,
    failure,
    mark_cancelled,
    mark_completed,
    mark_failed,
    mark_publish_failed,
    mark_publish_unknown,
    mark_retrying,
    mark_started,
    record_event,
    record_progress,
    record_revoked,
    row_state,
    starting,
    status_of,
    touch,
)
from django_taskqueue.progress import ProgressBuffer, ProgressWrite, percent_from

__all__ = [
    "LINEAGE_FIELDS",
    "PUBLISH_FAILED",
    "PUBLISH_UNKNOWN",
    "FillEmpty",
    "KeepFirst",
    "Mark",
    "Outcome",
    "ProgressBuffer",
    "ProgressWrite",
    "RowState",
    "cancel_with_children",
    "check_rerun_status",
    "completion",
    "create_bulk",
    "create_idempotent_task_log",
    "create_rerun",
    "create_task_log",
    "fail_bulk",
    "failure",
    "find_by_idempotency_key",
    "mark_cancelled",
    "mark_completed",
    "mark_failed",
    "mark_lost",
    "mark_publish_failed",
    "mark_publish_unknown",
    "mark_republished",
    "mark_retrying",
    "mark_stale",
    "mark_started",
    "orm_updates",
    "percent_from",
    "record_event",
    "record_progress",
    "record_publish",
    "record_revoked",
    "record_time",
    "record_unpublished",
    "recorded_at",
    "requeue_stale",
    "row_state",
    "starting",
    "status_of",
    "stored_arguments",
    "stored_json",
    "stored_text",
    "touch",
    "touch_many",
    "write_marks",
]
