"""Changelist filters that stay cheap on a large TaskLog table.

Django's stock filters for a free-text column (``AllValuesFieldListFilter``)
and a foreign key (``RelatedFieldListFilter``) list their choices with a
``SELECT DISTINCT`` over the whole table or by loading every user. These
build their choices with bounded queries instead.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import build_q_object_from_lookup_parameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext_lazy as _

from django_taskqueue.models import TaskLog

#: The most task types the filter lists.
MAX_TASK_TYPES = 100
#: The owner filter lists the owners of this many most recent tasks...
RECENT_TASKS_FOR_OWNERS = 1_000
#: ...and at most this many of them.
MAX_OWNERS = 30

NO_OWNER = "none"


def distinct_task_types(limit: int = MAX_TASK_TYPES) -> list[str]:
    """Return the distinct non-blank task types, sorted, at most ``limit`` of them.

    On PostgreSQL this walks the ``task_type`` index with a recursive query
    (one index probe per distinct value, a "loose index scan"), because
    ``SELECT DISTINCT`` would read every row. Other databases get the plain
    ``DISTINCT``: SQLite answers it from the index as well.
    """
    connection = connections[TaskLog.objects.db]
    if connection.vendor != "postgresql":
        values = (
            TaskLog.objects.exclude(task_type="")
            .order_by("task_type")
            .values_list("task_type", flat=True)
            .distinct()[:limit]
        )
        return list(values)
    table = connection.ops.quote_name(TaskLog._meta.db_table)
    column = connection.ops.quote_name(TaskLog._meta.get_field("task_type").column or "task_type")
    sql = f"""
        WITH RECURSIVE types(value) AS (
            (SELECT {column} FROM {table} WHERE {column} > '' ORDER BY {column} LIMIT 1)
            UNION ALL
            SELECT (SELECT {column} FROM {table} WHERE {column} > types.value
                    ORDER BY {column} LIMIT 1)
            FROM types WHERE types.value IS NOT NULL
        )
        SELECT value FROM types WHERE value IS NOT NULL LIMIT %s
    """  # identifiers come from the model, quoted by the backend
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class TaskTypeFilter(admin.SimpleListFilter):
    """Filter by task type; the choices come from an index walk, not a table scan."""

    title = _("task type")
    parameter_name = "task_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """List the task types present in the table (at most :data:`MAX_TASK_TYPES`)."""
        return [(value, value) for value in distinct_task_types()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Keep the tasks of the chosen type."""
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(task_type=value)


class OwnerFilter(admin.SimpleListFilter):
    """Filter by owner, listing only people who started tasks recently.

    The choices are the owners of the newest :data:`RECENT_TASKS_FOR_OWNERS`
    tasks (at most :data:`MAX_OWNERS`, by username) plus the selected owner,
    in one bounded query: the filter never loads every user. Any owner can be
    reached from the owner column of the list, which links to this filter.
    """

    title = _("owner")
    parameter_name = "owner"

    def _selected_pk(self) -> Any:
        value = self.value()
        if value is None or value == NO_OWNER:
            return None
        try:
            return get_user_model()._meta.pk.to_python(value)
        except ValidationError as exc:
            raise IncorrectLookupParameters(exc) from exc

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        """The recent owners and the selected one, plus "no owner"."""
        user_model = get_user_model()
        selected = self._selected_pk()
        recent = (
            TaskLog.objects.filter(owner__isnull=False)
            .order_by("-created_at")
            .values("owner_id")[:RECENT_TASKS_FOR_OWNERS]
        )
        wanted = Q(pk__in=recent)
        if selected is not None:
            wanted |= Q(pk=selected)
        # The selected owner sorts first so the LIMIT never drops it.
        first = (
            Case(When(pk=selected, then=Value(0)), default=Value(1), output_field=IntegerField())
            if selected is not None
            else Value(1, output_field=IntegerField())
        )
        users = list(
            user_model._default_manager.filter(wanted)
            .annotate(_first=first)
            .order_by("_first", user_model.USERNAME_FIELD)[:MAX_OWNERS]
        )
        users.sort(key=lambda user: user.get_username())
        choices: list[tuple[Any, str]] = [(NO_OWNER, str(_("No owner")))]
        choices += [(str(user.pk), user.get_username()) for user in users]
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Keep the tasks of the chosen owner (or those without one)."""
        if self.value() == NO_OWNER:
            return queryset.filter(owner__isnull=True)
        selected = self._selected_pk()
        if selected is None:
            return queryset
        return queryset.filter(owner_id=selected)


class DateRangeFilter(admin.DateFieldListFilter):
    """Django's date filter (today, past 7 days, ...) plus a from/before date form.

    The form submits the same ``<field>__gte`` / ``<field>__lt`` parameters
    the preset links use; plain dates are read as midnight in the current
    time zone.
    """

    template = "admin/django_taskqueue/date_range_filter.html"

    def choices(self, changelist: ChangeList) -> Iterator[Any]:
        """The preset links; also remembers the other parameters for the form."""
        own = set(self.expected_parameters())
        self.other_params = sorted(
            (key, value) for key, value in changelist.params.items() if key not in own | {"p"}
        )
        self.since_value = self._date_value(self.lookup_kwarg_since)
        self.until_value = self._date_value(self.lookup_kwarg_until)
        yield from super().choices(changelist)

    def _date_value(self, key: str) -> str:
        raw = (self.date_params.get(key) or "")[:10]
        try:
            return raw if parse_date(raw) is not None else ""
        except ValueError:
            return ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Filter, reading a bare ``YYYY-MM-DD`` as midnight in the current time zone."""
        params: dict[str, Iterable[Any]] = {}
        for key, values in self.used_parameters.items():
            items = values if isinstance(values, list) else [values]
            params[key] = [self._aware(item) for item in items]
        try:
            return queryset.filter(build_q_object_from_lookup_parameters(params))
        except (ValueError, ValidationError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    @staticmethod
    def _aware(value: Any) -> Any:
        if not isinstance(value, str) or len(value) != 10:
            return value
        try:
            day = parse_date(value)
        except ValueError:
            return value
        if day is None:
            return value
        return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))
