"""Page-number pagination whose sizes come from the live settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.views import APIView

from django_taskqueue.conf import conf


class TaskPagination(PageNumberPagination):
    """``?page=N&page_size=M``: ``API_PAGE_SIZE`` by default, at most ``API_MAX_PAGE_SIZE``.

    A ``page_size`` larger than the maximum is lowered to it. A ``page`` or a
    ``page_size`` that is not a positive integer is a 400 that names the
    parameter (an empty one means "not given"); a page past the end is a 404.
    """

    page_size_query_param = "page_size"
    page_size_query_description = "Results per page (at most the API_MAX_PAGE_SIZE setting)."
    page_query_description = "A page number (1 is the first); one past the end is a 404."

    def get_page_size(self, request: Request) -> int | None:
        # Read on every request (not at import) so override_settings works.
        self.page_size = conf.API_PAGE_SIZE
        self.max_page_size = conf.API_MAX_PAGE_SIZE
        # DRF falls back to the default size for ``?page_size=abc``; the schema
        # says it is an integer, so a value that is not one is refused instead.
        raw = request.query_params.get(self.page_size_query_param, "")
        if raw and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise ValidationError(
                {self.page_size_query_param: [f"{raw[:50]!r} is not a positive integer."]}
            )
        return super().get_page_size(request)

    def paginate_queryset(
        self,
        queryset: QuerySet[Any, Any] | Sequence[Any],
        request: Request,
        view: APIView | None = None,
    ) -> list[Any] | None:
        # DRF answers every bad page with a 404, as if a resource were missing.
        # A page that is not a positive integer is a bad query parameter: a 400.
        # One past the end is a valid number with nothing there: still a 404.
        raw = request.query_params.get(self.page_query_param, "")
        if raw and raw not in self.last_page_strings:
            try:
                number = int(raw)
            except ValueError:
                number = 0
            if number < 1:
                raise ValidationError(
                    {self.page_query_param: [f"{raw!r} is not a page number (1, 2, ...)."]}
                )
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] in (self.page_query_param, self.page_size_query_param):
                parameter["schema"] = {**parameter["schema"], "minimum": 1}
        return parameters
