"""Serializer fields that take only the JSON type the schema states."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, nothing else.

    DRF's ``BooleanField`` also takes ``"yes"``, ``"on"``, ``1``, ``"0"`` and more, which
    the schema (``type: boolean``) does not allow: a client that sends them gets a 400
    instead of a guess.
    """

    default_error_messages = {"invalid": "Must be a JSON boolean: true or false."}  # noqa: RUF012

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid")


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else (DRF's ``CharField`` turns numbers into strings)."""

    default_error_messages = {"invalid": "Must be a JSON string."}  # noqa: RUF012

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
