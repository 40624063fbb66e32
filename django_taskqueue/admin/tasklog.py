"""The TaskLog admin: a fast changelist, a read-only record, cancel/retry and an overview."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext as _t
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_taskqueue import actions, live
from django_taskqueue.admin.charts import Bar, Segment, bar_chart
from django_taskqueue.admin.filters import DateRangeFilter, OwnerFilter, TaskTypeFilter
from django_taskqueue.admin.history import EventInline, ProgressInline, pretty_json
from django_taskqueue.admin.overview import build_overview
from django_taskqueue.admin.pagination import CappedCountPaginator
from django_taskqueue.conf import conf
from django_taskqueue.exceptions import TransitionRefused
from django_taskqueue.models import TaskLog
from django_taskqueue.stats import Bucket
from django_taskqueue.status import ACTIVE_STATUSES, TERMINAL_STATUSES, TaskStatus

logger = logging.getLogger(__name__)

#: Columns the changelist never shows: left out of its query (they can be large).
HEAVY_FIELDS = ("result", "traceback", "error_message", "args", "kwargs", "metadata", "tags")
#: An action acts on at most this many tasks per run (it writes one row and one event each).
ACTION_LIMIT = 500
#: Children and reruns listed on the task page; the rest are one link away.
LINEAGE_CAP = 20
RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})

COLOURS = {
    TaskStatus.COMPLETED: "#2e7d32",
    TaskStatus.FAILED: "#c62828",
    TaskStatus.CANCELLED: "#757575",
}


def format_duration(seconds: float | None) -> str:
    """Render seconds as ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 07 min`` or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def format_bytes(size: int | None) -> str:
    """Render a byte count as ``512 B``, ``1.5 KiB``, ``3.2 MiB``... (``-`` if unknown)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def status_badge(task: TaskLog, *, live: bool = False) -> SafeString:
    """The status as a coloured badge; ``live``: the page's progress widget keeps it current."""
    if live and task.status in ACTIVE_STATUSES:
        return format_html(
            '<span class="tq-badge tq-status-{}" data-tq-for="{}" data-tq-part="status" '
            'aria-live="polite">{}</span>',
            task.status,
            task.pk,
            task.get_status_display(),
        )
    return format_html(
        '<span class="tq-badge tq-status-{}">{}</span>', task.status, task.get_status_display()
    )


class TaskLogChangeList(ChangeList):
    """The changelist's query leaves out the large columns nobody sees in the list."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        # PostgreSQL refuses a NUL character in a text parameter, so a filter or
        # a search holding one was a 500. No value can hold one: refuse the query
        # string the way the admin refuses any bad lookup (a redirect to ?e=1).
        if any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            raise IncorrectLookupParameters("The query string holds a NUL character.")
        return super().get_queryset(request, exclude_parameters).defer(*HEAVY_FIELDS)


@admin.register(TaskLog)
class TaskLogAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The task console: list, read-only record, cancel and retry, overview.

    Built to stay fast with millions of rows: the list never counts the whole
    table (:class:`~django_taskqueue.admin.pagination.CappedCountPaginator`),
    filters build their choices with bounded queries, every filter and the
    default ordering are served by an index, and related rows come in bulk.

    Running tasks update live on the list and on the task's page (the
    progress widget, ``django_taskqueue/progress.js``): over the API's event
    stream when the API is mounted, else by polling :meth:`live_view`.

    Attributes:
        stale_after: the overview lists ``processing`` tasks silent for longer
            than this as stuck; ``None`` (the default) uses the ``STALE_AFTER``
            setting, the threshold the housekeeping task applies.
        live_stream: follow running tasks over the API's event stream when the
            API is mounted (``False``: the pages only poll the admin's status view).
    """

    list_display = (
        "status_column",
        "progress_column",
        "task_column",
        "task_type",
        "owner_column",
        "file_name",
        "created_at",
        "duration_column",
    )
    list_display_links = ("task_column",)
    list_filter = (
        "status",
        TaskTypeFilter,
        ("created_at", DateRangeFilter),
        OwnerFilter,
    )
    search_fields = ("=celery_task_id", "file_name", "task_name")
    search_help_text = _(
        "A Celery task id (exact), or part of a file name or task name. "
        "Narrow with the filters first on very large tables."
    )
    ordering = ("-created_at",)
    # Only the indexed column: sorting a million rows by anything else is a full sort.
    sortable_by = ("created_at",)
    list_select_related = ("owner",)
    list_per_page = 50
    list_max_show_all = 200
    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts are a COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    actions = ("cancel_tasks", "retry_tasks")
    inlines = (ProgressInline, EventInline)
    change_list_template = "admin/django_taskqueue/tasklog/change_list.html"
    change_form_template = "admin/django_taskqueue/tasklog/change_form.html"
    stale_after: timedelta | None = None
    live_stream = True

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status_column",
                    "progress_column",
                    "message_column",
                    "task_name",
                    "task_type",
                    "celery_task_id",
                    "queue",
                    "priority",
                    "owner_column",
                    "worker",
                    "tags_display",
                )
            },
        ),
        (_("File"), {"fields": ("file_name", "file_size_display", "file_path")}),
        (
            _("Timing"),
            {
                "fields": (
                    "created_at",
                    "eta",
                    "started_at",
                    "completed_at",
                    "cancelled_at",
                    "heartbeat_at",
                    "next_retry_at",
                    "duration_column",
                )
            },
        ),
        (_("Error"), {"fields": ("error_code", "error_message", "traceback_block")}),
        (_("Result"), {"fields": ("result_json",)}),
        (_("Arguments"), {"fields": ("args_json", "kwargs_json", "args_redacted")}),
        (_("Metadata"), {"fields": ("metadata_json",)}),
        (
            _("Retries and lineage"),
            {
                "fields": (
                    "attempt",
                    "retry_count",
                    "max_retries",
                    "parent_link",
                    "children_links",
                    "retry_of_link",
                    "reruns_links",
                )
            },
        ),
        (
            _("Canvas"),
            {
                "fields": (
                    "canvas_parent_link",
                    "canvas_root_link",
                    "celery_group_id",
                    "canvas_links",
                )
            },
        ),
    )
    readonly_fields = (
        "status_column",
        "progress_column",
        "message_column",
        "owner_column",
        "tags_display",
        "file_size_display",
        "duration_column",
        "traceback_block",
        "result_json",
        "args_json",
        "kwargs_json",
        "metadata_json",
        "parent_link",
        "children_links",
        "retry_of_link",
        "reruns_links",
        "canvas_parent_link",
        "canvas_root_link",
        "canvas_links",
    )

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("django_taskqueue/admin.css",)}

    # --- permissions ------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are created by running them, never by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """The record is read-only: its status moves only through the lifecycle."""
        return False

    def has_cancel_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """The ``django_taskqueue.cancel_tasklog`` permission."""
        return request.user.has_perm("django_taskqueue.cancel_tasklog")

    def has_retry_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """The ``django_taskqueue.retry_tasklog`` permission."""
        return request.user.has_perm("django_taskqueue.retry_tasklog")

    # --- queries ----------------------------------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return TaskLogChangeList

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> TaskLog | None:
        """The task with its owner, parent and original run, in one query."""
        queryset = self.get_queryset(request).select_related("owner", "parent", "retry_of")
        model_field = (
            TaskLog._meta.pk if from_field is None else TaskLog._meta.get_field(from_field)
        )
        try:
            value = model_field.to_python(object_id)  # type: ignore[union-attr]
            task: TaskLog = queryset.get(**{model_field.name: value})
        except (TaskLog.DoesNotExist, ValidationError, ValueError):
            return None
        return task

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """A term that is a UUID matches the Celery id or the primary key exactly (an index hit)."""
        term = search_term.strip()
        try:
            as_uuid = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(celery_task_id=term) | queryset.filter(pk=as_uuid), False

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """Offer only the actions that can apply to the statuses the list is filtered to."""
        # Django 6.1 passes action_location (actions may also show on the change form);
        # earlier versions pass nothing and do not accept it.
        extra = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **extra)
        status = request.GET.get("status__exact")
        if status in TERMINAL_STATUSES:
            actions.pop("cancel_tasks", None)
        if status is not None and status not in RETRYABLE:
            actions.pop("retry_tasks", None)
        return actions

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """Leave out the error section for a task that has none."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not (obj.error_message or obj.traceback or obj.error_code):
            fieldsets = [fs for fs in fieldsets if fs[0] != _("Error")]
        return fieldsets

    # --- columns ----------------------------------------------------------------------

    @admin.display(description=_("status"), ordering="status")
    def status_column(self, obj: TaskLog) -> SafeString:
        return status_badge(obj, live=True)

    @admin.display(description=_("progress"))
    def progress_column(self, obj: TaskLog) -> SafeString:
        stream_url = live.api_urls(obj.pk)[0] if self.live_stream else None
        return live.render_widget(
            obj, stream_url=stream_url, poll_url=self._url("live", obj.pk), compact=True
        )

    @admin.display(description=_("message"))
    def message_column(self, obj: TaskLog) -> SafeString:
        if obj.status not in ACTIVE_STATUSES:
            return format_html("{}", obj.progress_message or "-")
        # Kept current by the progress widget; the notice shows once the task has ended.
        return format_html(
            '<span data-tq-for="{}" data-tq-part="message">{}</span>'
            '<span class="tq-live-ended" data-tq-for="{}" data-tq-part="ended" hidden> {}</span>',
            obj.pk,
            obj.progress_message,
            obj.pk,
            # The message of the widget's template; translations are trusted, as in templates.
            mark_safe(_t('The task has ended: <a href="">reload the page</a> for its details.')),
        )

    @admin.display(description=_("task"))
    def task_column(self, obj: TaskLog) -> SafeString:
        # The id is long: the list shows its start, the hover text has all of it.
        short = obj.celery_task_id[:8] + ("…" if len(obj.celery_task_id) > 8 else "")
        return format_html(
            '{}<br><span class="tq-id" title="{}">{}</span>',
            obj.task_name or _t("(unnamed task)"),
            obj.celery_task_id,
            short,
        )

    @admin.display(description=_("owner"))
    def owner_column(self, obj: TaskLog) -> SafeString:
        if obj.owner is None:
            return format_html("{}", "-")
        return format_html(
            '<a href="{}?owner={}" title="{}">{}</a>',
            self._url("changelist"),
            obj.owner.pk,
            _t("Tasks of this owner"),
            obj.owner.get_username(),
        )

    @admin.display(description=_("duration"))
    def duration_column(self, obj: TaskLog) -> str:
        text = format_duration(obj.elapsed_time)
        if obj.started_at is not None and obj.status in ACTIVE_STATUSES:
            return _t("%(duration)s so far") % {"duration": text}
        return text

    @admin.display(description=_("tags"))
    def tags_display(self, obj: TaskLog) -> str:
        return ", ".join(str(tag) for tag in obj.tags or []) or "-"

    @admin.display(description=_("file size"))
    def file_size_display(self, obj: TaskLog) -> str:
        return format_bytes(obj.file_size)

    @admin.display(description=_("traceback"))
    def traceback_block(self, obj: TaskLog) -> SafeString:
        if not obj.traceback:
            return format_html("{}", "-")
        return format_html('<pre class="tq-traceback"><code>{}</code></pre>', obj.traceback)

    @admin.display(description=_("result"))
    def result_json(self, obj: TaskLog) -> SafeString:
        return pretty_json(obj.result)

    @admin.display(description=_("args"))
    def args_json(self, obj: TaskLog) -> SafeString:
        return pretty_json(obj.args)

    @admin.display(description=_("kwargs"))
    def kwargs_json(self, obj: TaskLog) -> SafeString:
        return pretty_json(obj.kwargs)

    @admin.display(description=_("metadata"))
    def metadata_json(self, obj: TaskLog) -> SafeString:
        return pretty_json(obj.metadata)

    def _task_link(self, task: TaskLog) -> SafeString:
        return format_html(
            '<a href="{}">{}</a> {}',
            self._url("change", task.pk),
            task.task_name or task.celery_task_id,
            status_badge(task),
        )

    def _related_links(self, obj: TaskLog, field: str, lookup: str) -> SafeString:
        # A plain filter, not the related manager: the manager would attach ``obj`` to
        # each row through the deferred foreign key column, one query per row.
        rows = list(
            TaskLog.objects.filter(**{field: obj.pk})
            .order_by("-created_at")
            .only("pk", "task_name", "celery_task_id", "status", "created_at")[: LINEAGE_CAP + 1]
        )
        if not rows:
            return format_html("{}", "-")
        items = format_html_join(
            "", "<li>{}</li>", ((self._task_link(t),) for t in rows[:LINEAGE_CAP])
        )
        more = (
            format_html(
                '<li><a href="{}?{}={}">{}</a></li>',
                self._url("changelist"),
                lookup,
                obj.pk,
                _t("See all"),
            )
            if len(rows) > LINEAGE_CAP
            else ""
        )
        return format_html('<ul class="tq-lineage">{}{}</ul>', items, more)

    @admin.display(description=_("parent"))
    def parent_link(self, obj: TaskLog) -> SafeString:
        return self._task_link(obj.parent) if obj.parent else format_html("{}", "-")

    @admin.display(description=_("children"))
    def children_links(self, obj: TaskLog) -> SafeString:
        return self._related_links(obj, "parent", "parent__id__exact")

    @admin.display(description=_("run again from"))
    def retry_of_link(self, obj: TaskLog) -> SafeString:
        return self._task_link(obj.retry_of) if obj.retry_of else format_html("{}", "-")

    @admin.display(description=_("run again as"))
    def reruns_links(self, obj: TaskLog) -> SafeString:
        return self._related_links(obj, "retry_of", "retry_of__id__exact")

    def _canvas_ends(self, obj: TaskLog) -> dict[str, TaskLog]:
        """The rows of the task's canvas parent and root, by Celery id (one query, kept)."""
        found: dict[str, TaskLog] | None = getattr(obj, "_taskqueue_canvas_ends", None)
        if found is None:
            ids = {obj.celery_parent_id, obj.celery_root_id} - {"", obj.celery_task_id}
            rows = (
                TaskLog.objects.filter(celery_task_id__in=ids).only(
                    "pk", "task_name", "celery_task_id", "status"
                )
                if ids
                else []
            )
            found = {row.celery_task_id: row for row in rows}
            obj._taskqueue_canvas_ends = found  # type: ignore[attr-defined]
        return found

    def _celery_link(self, obj: TaskLog, celery_id: str) -> SafeString:
        if not celery_id:
            return format_html("{}", "-")
        if celery_id == obj.celery_task_id:
            return format_html("{}", _t("this task"))
        row = self._canvas_ends(obj).get(celery_id)
        if row is None:
            # An untracked task, or one recorded before lineage was kept.
            return format_html("<code>{}</code> ({})", celery_id, _t("not recorded"))
        return self._task_link(row)

    @admin.display(description=_("canvas parent"))
    def canvas_parent_link(self, obj: TaskLog) -> SafeString:
        return self._celery_link(obj, obj.celery_parent_id)

    @admin.display(description=_("canvas root"))
    def canvas_root_link(self, obj: TaskLog) -> SafeString:
        return self._celery_link(obj, obj.celery_root_id)

    @admin.display(description=_("tasks of the canvas"))
    def canvas_links(self, obj: TaskLog) -> SafeString:
        root = obj.celery_root_id or obj.celery_task_id
        rows = list(
            TaskLog.objects.canvas(obj)
            .exclude(pk=obj.pk)
            .order_by("created_at", "pk")
            .only("pk", "task_name", "celery_task_id", "status", "created_at")[: LINEAGE_CAP + 1]
        )
        if not rows:
            return format_html("{}", "-")
        items = format_html_join(
            "", "<li>{}</li>", ((self._task_link(t),) for t in rows[:LINEAGE_CAP])
        )
        more = mark_safe("")
        if len(rows) > LINEAGE_CAP:
            links = [("celery_root_id", root, _t("See all tasks of this root"))]
            if obj.celery_group_id:
                links.append(("celery_group_id", obj.celery_group_id, _t("of this group")))
            more = format_html_join(
                "",
                '<li><a href="{}?{}={}">{}</a></li>',
                ((self._url("changelist"), field, value, text) for field, value, text in links),
            )
        return format_html('<ul class="tq-lineage">{}{}</ul>', items, more)

    # --- actions ----------------------------------------------------------------------

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        operation: Callable[[TaskLog], Any],
        done_message: Callable[[int], str],
    ) -> None:
        """Run ``operation`` on each selected task; report done, skipped (why) and failed."""
        tasks = list(
            queryset.defer(None)
            .select_related("owner", "parent")
            .order_by("-created_at")[: ACTION_LIMIT + 1]
        )
        done = 0
        skipped: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for task in tasks[:ACTION_LIMIT]:
            try:
                operation(task)
            except TransitionRefused as refused:
                skipped[str(refused)] += 1
            except Exception as exc:
                logger.exception("Admin action failed on task %s", task.pk)
                failed[f"{type(exc).__name__}: {exc}"] += 1
            else:
                done += 1
        if done:
            self.message_user(request, done_message(done), messages.SUCCESS)
        if skipped:
            self.message_user(request, self._summary(skipped, skipping=True), messages.WARNING)
        if failed:
            self.message_user(request, self._summary(failed, skipping=False), messages.ERROR)
        if len(tasks) > ACTION_LIMIT:
            self.message_user(
                request,
                _t(
                    "Only the newest %(limit)d selected tasks were processed; "
                    "run the action again for the rest."
                )
                % {"limit": ACTION_LIMIT},
                messages.WARNING,
            )
        if not tasks:
            self.message_user(request, _t("No tasks were selected."), messages.WARNING)

    @staticmethod
    def _summary(reasons: Counter[str], *, skipping: bool) -> str:
        total = sum(reasons.values())
        why = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common())
        if skipping:
            head = ngettext("Skipped %(count)d task", "Skipped %(count)d tasks", total)
        else:
            head = ngettext("%(count)d task failed", "%(count)d tasks failed", total)
        return f"{head % {'count': total}}: {why}."

    @admin.action(description=_("Cancel the selected tasks"), permissions=["cancel"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Cancel each selected task through :func:`django_taskqueue.actions.cancel`."""
        reason = _t("cancelled in the admin")
        self._apply(
            request,
            queryset,
            lambda task: actions.cancel(task, reason=reason, user=request.user),
            lambda n: (
                ngettext("Cancelled %(count)d task.", "Cancelled %(count)d tasks.", n)
                % {"count": n}
            ),
        )

    @admin.action(
        description=_("Run the selected failed or cancelled tasks again"), permissions=["retry"]
    )
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Run each selected task again through :func:`django_taskqueue.actions.rerun`."""
        self._apply(
            request,
            queryset,
            lambda task: actions.rerun(task, user=request.user),
            lambda n: (
                ngettext("Started %(count)d task again.", "Started %(count)d tasks again.", n)
                % {"count": n}
            ),
        )

    # --- extra views ------------------------------------------------------------------

    def _url(self, name: str, *args: Any) -> str:
        opts = self.model._meta
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{name}",
            args=args,
            current_app=self.admin_site.name,
        )

    def get_urls(self) -> list[URLPattern]:
        """Add the overview and the single-task cancel and retry endpoints."""
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("overview/", wrap(self.overview_view), name=f"{prefix}_overview"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{prefix}_cancel"),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=f"{prefix}_retry"),
            path("<path:object_id>/live/", wrap(self.live_view), name=f"{prefix}_live"),
            *super().get_urls(),
        ]

    def _task_for_post(self, request: HttpRequest, object_id: str, allowed: bool) -> TaskLog:
        if not allowed:
            raise PermissionDenied
        task = self.get_object(request, object_id)
        if task is None:
            raise Http404(_t("No task with this id."))
        return task

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: cancel one task, then return to its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        task = self._task_for_post(request, object_id, self.has_cancel_permission(request))
        try:
            actions.cancel(task, reason=_t("cancelled in the admin"), user=request.user)
        except TransitionRefused as refused:
            self.message_user(request, capfirst(str(refused)) + ".", messages.WARNING)
        else:
            self.message_user(request, _t("The task was cancelled."), messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", task.pk))

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: run one task again, then open the new run's page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        task = self._task_for_post(request, object_id, self.has_retry_permission(request))
        try:
            new_task = actions.rerun(task, user=request.user)
        except TransitionRefused as refused:
            self.message_user(request, capfirst(str(refused)) + ".", messages.WARNING)
            return HttpResponseRedirect(self._url("change", task.pk))
        except Exception as exc:
            logger.exception("Admin retry failed on task %s", task.pk)
            self.message_user(
                request,
                _t("The task could not be run again: %(error)s") % {"error": exc},
                messages.ERROR,
            )
            return HttpResponseRedirect(self._url("change", task.pk))
        self.message_user(request, _t("The task runs again as this new task."), messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", new_task.pk))

    def live_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """GET: the task's status and progress in JSON, which the progress widget polls.

        The fields of :data:`django_taskqueue.live.LIVE_FIELDS`, as the event
        stream sends them. Permission-checked like the change view (403 before
        404, so no one learns which ids exist); 404 for an unknown id.
        """
        if request.method != "GET":
            return JsonResponse({"detail": _t("Only GET is allowed.")}, status=405)
        try:
            pk = uuid.UUID(object_id)
        except ValueError:
            task = None
        else:
            task = self.get_queryset(request).filter(pk=pk).only(*live.LIVE_FIELDS).first()
        if not self.has_view_or_change_permission(request, task):
            return JsonResponse({"detail": _t("Permission denied.")}, status=403)
        if task is None:
            return JsonResponse({"detail": _t("No task with this id.")}, status=404)
        response = JsonResponse(live.live_state(task), encoder=DjangoJSONEncoder)
        response["Cache-Control"] = "no-store"
        return response

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        """Tell the template which of the cancel and retry buttons to show."""
        if obj is not None:
            context["tq_can_cancel"] = obj.is_cancellable and self.has_cancel_permission(request)
            context["tq_can_retry"] = obj.is_retryable and self.has_retry_permission(request)
            context["tq_overview_url"] = self._url("overview")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, with a link to the overview."""
        extra_context = {**(extra_context or {}), "tq_overview_url": self._url("overview")}
        return super().changelist_view(request, extra_context)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """The overview page: counts, charts, runtimes, stuck tasks and recent failures."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        stale_after = self.stale_after or conf.STALE_AFTER
        overview = build_overview(stale_after=stale_after)
        hourly = [
            (bucket, timezone.localtime(bucket.start).strftime("%H:00"))  # type: ignore[arg-type]
            for bucket in overview.hourly
        ]
        daily = [(bucket, bucket.start.strftime("%a %d")) for bucket in overview.daily]
        context = {
            **self.admin_site.each_context(request),
            "title": _t("Task overview"),
            "opts": self.model._meta,
            "overview": overview,
            "status_rows": [
                (
                    status,
                    overview.window_counts.get(status.value, 0),
                    overview.active_counts.get(status.value) if status in ACTIVE_STATUSES else None,
                )
                for status in TaskStatus
            ],
            "throughput_hourly": bar_chart(
                [
                    _throughput_bar(bucket, label, show_label=index % 6 == 0 or index == 23)
                    for index, (bucket, label) in enumerate(hourly)
                ],
                label=_t("Tasks ended per hour, last 24 hours"),
            ),
            "failure_hourly": bar_chart(
                [
                    _failure_bar(bucket, label, show_label=index % 6 == 0 or index == 23)
                    for index, (bucket, label) in enumerate(hourly)
                ],
                label=_t("Failure rate per hour, last 24 hours"),
                max_value=100,
                unit="%",
            ),
            "throughput_daily": bar_chart(
                [_throughput_bar(bucket, label, show_label=True) for bucket, label in daily],
                label=_t("Tasks ended per day, last 7 days"),
            ),
            "failure_daily": bar_chart(
                [_failure_bar(bucket, label, show_label=True) for bucket, label in daily],
                label=_t("Failure rate per day, last 7 days"),
                max_value=100,
                unit="%",
            ),
            "changelist_url": self._url("changelist"),
            "runtime_rows": [
                (
                    runtime.task_type,
                    runtime.count,
                    format_duration(runtime.p50.total_seconds()),
                    format_duration(runtime.p95.total_seconds()),
                )
                for runtime in overview.runtimes
            ],
            "stale_minutes": int(stale_after.total_seconds() // 60),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_taskqueue/tasklog/overview.html", context)


def _throughput_bar(bucket: Bucket, label: str, *, show_label: bool) -> Bar:
    title = _t("%(label)s: %(completed)d completed, %(failed)d failed, %(cancelled)d cancelled") % {
        "label": label,
        "completed": bucket.completed,
        "failed": bucket.failed,
        "cancelled": bucket.cancelled,
    }
    return Bar(
        segments=tuple(
            Segment(
                value=float(getattr(bucket, status)),
                css_class=f"tq-fill-{status}",
                fill=COLOURS[status],
            )
            for status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
        ),
        title=title,
        axis_label=label if show_label else "",
    )


def _failure_bar(bucket: Bucket, label: str, *, show_label: bool) -> Bar:
    rate = bucket.failure_percent
    if rate is None:
        title = _t("%(label)s: nothing finished") % {"label": label}
    else:
        title = _t("%(label)s: %(rate).1f%% failed (%(failed)d of %(finished)d)") % {
            "label": label,
            "rate": rate,
            "failed": bucket.failed,
            "finished": bucket.completed + bucket.failed,
        }
    return Bar(
        segments=(
            Segment(value=rate or 0.0, css_class="tq-fill-failed", fill=COLOURS[TaskStatus.FAILED]),
        ),
        title=title,
        axis_label=label if show_label else "",
    )
