"""Page-number pagination whose sizes come from the live settings."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from django_taskqueue.conf import conf


class TaskPagination(PageNumberPagination):
    """``?page=N&page_size=M``: ``API_PAGE_SIZE`` by default, at most ``API_MAX_PAGE_SIZE``.

    A ``page_size`` larger than the maximum is lowered to it; one that is not a
    positive integer falls back to the default. A page past the end is a 404.
    """

    page_size_query_param = "page_size"
    page_size_query_description = "Results per page (at most the API_MAX_PAGE_SIZE setting)."

    def get_page_size(self, request: Request) -> int | None:
        # Read on every request (not at import) so override_settings works.
        self.page_size = conf.API_PAGE_SIZE
        self.max_page_size = conf.API_MAX_PAGE_SIZE
        return super().get_page_size(request)
