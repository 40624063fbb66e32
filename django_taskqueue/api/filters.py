"""The list filters (django-filter): status, type, dates, search, parent, canvas and ordering."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema_field

from django_taskqueue.models import TaskLog
from django_taskqueue.status import TaskStatus


class _CommaSelectMultiple(forms.SelectMultiple):
    """Accept ``?status=a&status=b`` and ``?status=a,b`` alike."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        values = super().value_from_datadict(data, files, name)
        if not isinstance(values, list):
            return values
        return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


class _StatusField(forms.MultipleChoiceField):
    widget = _CommaSelectMultiple
    default_error_messages = {  # noqa: RUF012 (Django's own pattern for form fields)
        "invalid_choice": "%(value)s is not a status; use "
        + ", ".join(status.value for status in TaskStatus)
        + ".",
    }


class StatusFilter(django_filters.MultipleChoiceFilter):  # type: ignore[misc]  # django-filter is untyped
    """One or several statuses, repeated or comma-separated."""

    field_class = _StatusField

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        # One "status IN (...)" (an index condition), not django-filter's OR of
        # equalities, which PostgreSQL answers by filtering the whole index.
        if not value:
            return qs
        return qs.filter(status__in=list(value))


class _DateOrDateTimeField(forms.Field):
    """A date (``YYYY-MM-DD``) or an ISO 8601 date-time (naive: in the current time zone)."""

    default_error_messages = {  # noqa: RUF012
        "invalid": "Enter a date (YYYY-MM-DD) or an ISO 8601 date-time.",
    }

    def to_python(self, value: Any) -> dt.datetime | dt.date | None:
        if value in self.empty_values:
            return None
        text = str(value).strip()
        try:
            # A date first: Python's fromisoformat would read "2024-01-01" as midnight.
            day = parse_date(text)
            if day is not None:
                return day
            moment = parse_datetime(text)
        except ValueError:
            moment = None
        if moment is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        # In UTC: PostgreSQL refuses offsets beyond +-15:59 that Python accepts.
        try:
            return moment.astimezone(dt.timezone.utc)
        except OverflowError:  # an offset that pushes year 1 or 9999 off the calendar
            edge = dt.datetime.min if moment.year == dt.MINYEAR else dt.datetime.max
            return edge.replace(tzinfo=dt.timezone.utc)


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


@extend_schema_field(
    {
        "type": "string",
        "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
    }
)
class CreatedBoundFilter(django_filters.Filter):  # type: ignore[misc]  # django-filter is untyped
    """A bound on ``created_at``: ``from_date``, or ``to_date`` (a date includes its whole day).

    Both compare the indexed column itself (no ``__date`` cast), so the
    ``(status, created_at)`` and ``created_at`` indexes serve them.
    """

    field_class = _DateOrDateTimeField

    def __init__(self, *args: Any, upper: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, field_name="created_at", **kwargs)
        self.upper = upper

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        if value is None:
            return qs
        if isinstance(value, dt.datetime):
            return (
                qs.filter(created_at__lte=value) if self.upper else qs.filter(created_at__gte=value)
            )
        if self.upper:
            if value >= dt.date.max:
                return qs  # the end of the calendar bounds nothing
            return qs.filter(created_at__lt=_day_start(value + dt.timedelta(days=1)))
        return qs.filter(created_at__gte=_day_start(value))


class TaskLogFilter(django_filters.FilterSet):  # type: ignore[misc]  # django-filter is untyped
    """Filters of ``GET /api/tasks/``."""

    status = StatusFilter(
        choices=TaskStatus.choices,
        help_text="One or several statuses: repeat the parameter or separate them with commas.",
    )
    task_type = django_filters.CharFilter(help_text="The task type, exactly.")
    from_date = CreatedBoundFilter(
        help_text="Created at or after: a date (YYYY-MM-DD) or an ISO 8601 date-time."
    )
    to_date = CreatedBoundFilter(
        upper=True,
        help_text="Created at or before: a date (its whole day counts) or an ISO 8601 date-time.",
    )
    search = django_filters.CharFilter(
        method="filter_search",
        help_text="Part of the file name, the Celery task id or the task name (case-insensitive).",
    )
    parent = django_filters.UUIDFilter(
        field_name="parent_id", help_text="Only the children of this bulk task."
    )
    root_id = django_filters.CharFilter(
        method="filter_root",
        help_text="Only the tasks of the Celery canvas whose root task has this Celery id "
        "(the root included).",
    )
    group_id = django_filters.CharFilter(
        field_name="celery_group_id",
        help_text="Only the tasks of the Celery group (or chord header) with this id.",
    )
    celery_parent_id = django_filters.CharFilter(
        field_name="celery_parent_id",
        help_text="Only the tasks that the task with this Celery id sent (its canvas children).",
    )
    ordering = django_filters.OrderingFilter(
        fields=(
            "created_at",
            "started_at",
            "completed_at",
            "status",
            "progress",
            "task_type",
            "file_name",
            "file_size",
        ),
        help_text="Sort by a field, descending with a leading minus; the default is -created_at.",
    )

    class Meta:
        model = TaskLog
        fields = (
            "status",
            "task_type",
            "from_date",
            "to_date",
            "search",
            "parent",
            "root_id",
            "group_id",
            "celery_parent_id",
        )

    def filter_root(self, queryset: QuerySet[TaskLog], name: str, value: str) -> QuerySet[TaskLog]:
        value = value.strip()
        if not value:
            return queryset
        return queryset.in_canvas(value)  # type: ignore[attr-defined,no-any-return]

    def filter_search(
        self, queryset: QuerySet[TaskLog], name: str, value: str
    ) -> QuerySet[TaskLog]:
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(file_name__icontains=value)
            | Q(celery_task_id__icontains=value)
            | Q(task_name__icontains=value)
        )
