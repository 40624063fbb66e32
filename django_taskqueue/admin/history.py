"""Progress history and events: capped inlines on the task page, read-only lists for the rest."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from django_taskqueue.admin.pagination import CappedCountPaginator
from django_taskqueue.models import TaskEventLog, TaskLog, TaskProgress

#: Rows an inline shows on the task page; the full list is one link away.
INLINE_CAP = 50


def pretty_json(value: Any) -> SafeString:
    """Render a JSON value indented in a ``<pre>`` block (``-`` for empty values)."""
    if value in (None, "", [], {}):
        return format_html("{}", "-")
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="tq-json">{}</pre>', text)


class CappedInlineFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """An inline formset showing only the newest :data:`INLINE_CAP` rows.

    Attributes:
        has_more: more rows exist than are shown.
        rest_url: the changelist with every row of this task.
    """

    has_more = False
    rest_url = ""

    def get_queryset(self) -> Any:
        """The newest rows first, at most :data:`INLINE_CAP` of them (one query)."""
        if not hasattr(self, "_capped_rows"):
            rows = list(super().get_queryset().order_by("-created_at", "-id")[: INLINE_CAP + 1])
            self.has_more = len(rows) > INLINE_CAP
            self._capped_rows = rows[:INLINE_CAP]
        return self._capped_rows


class _ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    formset = CappedInlineFormSet
    template = "admin/django_taskqueue/capped_tabular.html"
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # The history is part of the task's record: whoever may see the task sees it.
        parent = self.admin_site._registry.get(TaskLog)
        return parent is not None and parent.has_view_permission(request, obj)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if obj is not None:
            opts = self.model._meta
            url = reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist",
                current_app=self.admin_site.name,
            )
            capped = cast("type[CappedInlineFormSet]", formset)
            capped.rest_url = f"{url}?task__id__exact={obj.pk}"
        return formset

    @admin.display(description=_("data"))
    def data_json(self, obj: Any) -> SafeString:
        return pretty_json(getattr(obj, "data", None) or getattr(obj, "metadata", None))


class ProgressInline(_ReadOnlyInline):
    """The task's progress history, newest first."""

    model = TaskProgress
    fields = ("created_at", "progress", "message", "data_json")
    readonly_fields = fields
    verbose_name_plural = _("progress history (newest first)")


class EventInline(_ReadOnlyInline):
    """The task's events, newest first."""

    model = TaskEventLog
    fields = ("created_at", "event_type", "message", "data_json")
    readonly_fields = fields
    verbose_name_plural = _("events (newest first)")


class _HistoryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only, count-free list of one history table, usually filtered by task."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_select_related = ("task",)
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    list_per_page = 100
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # The audit trail is never edited by hand; retention removes it with its task.
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        parent = self.admin_site._registry.get(TaskLog)
        own = super().has_view_permission(request, obj)
        return own or (parent is not None and parent.has_view_permission(request, None))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The task column shows only the task's name and id.
        return (
            super()
            .get_queryset(request)
            .defer(
                "task__result",
                "task__traceback",
                "task__args",
                "task__kwargs",
                "task__metadata",
                "task__error_message",
            )
        )

    @admin.display(description=_("task"))
    def task_link(self, obj: Any) -> SafeString:
        url = reverse(
            f"{self.admin_site.name}:django_taskqueue_tasklog_change",
            args=[obj.task_id],
            current_app=self.admin_site.name,
        )
        return format_html(
            '<a href="{}">{}</a>', url, obj.task.task_name or obj.task.celery_task_id
        )

    @admin.display(description=_("data"))
    def data_json(self, obj: Any) -> SafeString:
        return pretty_json(getattr(obj, "data", None) or getattr(obj, "metadata", None))


@admin.register(TaskEventLog)
class TaskEventLogAdmin(_HistoryAdmin):
    """Every event, newest first; the task page links here filtered by task."""

    list_display = ("created_at", "task_link", "event_type", "message")
    list_filter = ("event_type",)
    fields = ("task_link", "created_at", "event_type", "message", "data_json")
    readonly_fields = fields


@admin.register(TaskProgress)
class TaskProgressAdmin(_HistoryAdmin):
    """Every progress step, newest first; the task page links here filtered by task."""

    list_display = ("created_at", "task_link", "progress", "message")
    fields = ("task_link", "created_at", "progress", "message", "data_json")
    readonly_fields = fields
