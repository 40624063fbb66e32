"""The OpenAPI schema class of the task API (drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from django_taskqueue.api.docstrings import markdown_description

#: A string the API stores as text: no NUL character (PostgreSQL refuses it).
NO_NUL = "^[^\\x00]*$"

#: The name of the component that describes one value inside ``metadata``.
METADATA_VALUE = "TaskMetadataValue"

#: ``metadata``: a JSON object whose strings, at any depth, hold no NUL. OpenAPI 3.0
#: has no keyword for a rule on keys (``propertyNames`` came with 3.1), so the same
#: rule for keys is in the field's description only.
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"$ref": f"#/components/schemas/{METADATA_VALUE}"},
}

#: One value inside ``metadata``; arrays and objects refer back to it.
METADATA_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{METADATA_VALUE}"}},
        # nullable here stands for JSON null, which OpenAPI 3.0 has no type for.
        {**METADATA_SCHEMA, "nullable": True},
    ]
}


class TaskQueueAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema``, stating that an empty query value means "not given".

    django-filter skips a filter whose value is empty, and DRF's pagination reads an
    empty ``page`` or ``page_size`` as absent, so ``?to_date=&status=&page=`` is the
    unfiltered first page. Each query parameter says so with OpenAPI's
    ``allowEmptyValue``; without it the schema calls ``?to_date=`` an invalid date, which
    the API then accepts.
    """

    def get_operation(
        self,
        path: str,
        path_regex: str,
        path_prefix: str,
        method: str,
        registry: Any,
    ) -> dict[str, Any] | None:
        """The operation as drf-spectacular builds it, its query parameters marked."""
        # ``metadata`` refers to this component (recursively), so it is always there.
        registry.register_on_missing(
            # drf-spectacular's constructor carries no annotations.
            ResolvedComponent(  # type: ignore[no-untyped-call]
                name=METADATA_VALUE,
                type=ResolvedComponent.SCHEMA,
                schema=METADATA_VALUE_SCHEMA,
                object=METADATA_VALUE,
            )
        )
        operation: dict[str, Any] | None = super().get_operation(
            path, path_regex, path_prefix, method, registry
        )
        for parameter in (operation or {}).get("parameters", []):
            if parameter.get("in") == "query":
                parameter["allowEmptyValue"] = True
        return operation

    # drf-spectacular's signature differs from DRF's base inspector, as it declares too.
    def get_description(self) -> str:  # type: ignore[override]
        """The view's or action's docstring, its Sphinx markup read as Markdown."""
        return markdown_description(super().get_description())
