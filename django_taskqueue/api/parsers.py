"""The API's JSON parser: bounded depth, and every failure a 400."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

from django_taskqueue.conf import conf
from django_taskqueue.serialization import json_depth


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than ``API_JSON_MAX_DEPTH``.

    Python's JSON decoder recurses once per level: a body nested a few
    thousand levels deep made it raise ``RecursionError``, a 500. The depth is
    measured on the text first, without recursion, and whatever goes wrong
    afterwards (bad UTF-8, bad JSON, ``NaN``) is a :class:`ParseError`: a 400
    whose ``detail`` says what is wrong. The body's size is bounded before
    this runs, by Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding} text: {exc}") from None
        limit = conf.API_JSON_MAX_DEPTH
        depth = json_depth(text)
        if depth > limit:
            raise ParseError(
                f"The JSON body nests arrays or objects {depth} levels deep; the limit is "
                f"{limit} (API_JSON_MAX_DEPTH)."
            )
        try:
            return json.loads(text, parse_constant=strict_constant if self.strict else None)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
