"""The OpenAPI schema class of the task API (drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema


class TaskQueueAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema``, stating that an empty query value means "not given".

    django-filter skips a filter whose value is empty, and DRF's pagination reads an
    empty ``page`` or ``page_size`` as absent, so ``?to_date=&status=&page=`` is the
    unfiltered first page. Each query parameter says so with OpenAPI's
    ``allowEmptyValue``; without it the schema calls ``?to_date=`` an invalid date, which
    the API then accepts.
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """The operation as drf-spectacular builds it, its query parameters marked."""
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        for parameter in (operation or {}).get("parameters", []):
            if parameter.get("in") == "query":
                parameter["allowEmptyValue"] = True
        return operation
