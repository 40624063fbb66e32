"""Turning task arguments, results and errors into what the TaskLog stores.

Pure functions: no database, no Celery.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.encoding import force_str

# Nested structures deeper than this are cut: a guard against self-referencing
# or pathological data, not a limit anyone should meet.
_MAX_DEPTH = 32


def safe_repr(value: Any, limit: int = 1000) -> str:
    """``repr(value)`` that never raises and is at most ``limit`` characters."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not break recording
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def to_json(value: Any, *, _depth: int = 0) -> Any:
    """Return a JSON-compatible copy of ``value``.

    Dates, decimals, UUIDs and lazy strings go through Django's JSON encoder;
    sets and tuples become lists; anything else that JSON cannot hold becomes
    its (bounded) repr, so recording never fails on an odd value.
    """
    if _depth > _MAX_DEPTH:
        return safe_repr(value, 200)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN and infinity are not JSON; PostgreSQL's jsonb refuses them.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {force_str(key): to_json(item, _depth=_depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item, _depth=_depth + 1) for item in value]
    try:
        encoded = DjangoJSONEncoder().default(value)
    except TypeError:
        return safe_repr(value)
    return to_json(encoded, _depth=_depth + 1)


def redact(
    value: Any, keys: Iterable[str], replacement: str, *, _depth: int = 0
) -> tuple[Any, bool]:
    """Replace the values of secret-looking keys, at any depth.

    Args:
        value: JSON-compatible data (run it through :func:`to_json` first).
        keys: lower-case substrings; a mapping key containing one is secret.
        replacement: what a secret value becomes.

    Returns:
        The redacted copy, and whether anything was replaced.
    """
    keys = tuple(keys)
    if _depth > _MAX_DEPTH:
        return value, False
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            lowered = key.lower()
            if any(secret in lowered for secret in keys):
                out[key] = replacement
                changed = True
            else:
                out[key], sub = redact(item, keys, replacement, _depth=_depth + 1)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [redact(item, keys, replacement, _depth=_depth + 1) for item in value]
        return [item for item, _ in items], any(sub for _, sub in items)
    return value, False


def encode_result(value: Any, max_bytes: int) -> Any:
    """The task's return value as stored: JSON as is, or a marked, bounded repr.

    A result that JSON cannot hold, or whose JSON is larger than ``max_bytes``,
    is stored as ``{"repr": "...", "truncated": bool, "type": "..."}`` so the
    row stays small and the reader can tell it is not the real value.
    """
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError):
        return {"repr": safe_repr(value, max(64, max_bytes)), "type": type(value).__name__}
    if len(text.encode()) <= max_bytes:
        return json.loads(text)
    return {
        "repr": safe_repr(value, max(64, max_bytes)),
        "type": type(value).__name__,
        "truncated": True,
    }


def error_code_for(exc: BaseException) -> str:
    """The error code stored for an exception: its class name."""
    return type(exc).__name__


def error_message_for(exc: BaseException) -> str:
    """A one-paragraph message for an exception, never empty."""
    try:
        text = force_str(exc)
    except Exception:
        text = ""
    return text or type(exc).__name__


def bound_traceback(text: str, max_chars: int) -> str:
    """Keep the end of a long traceback: the innermost frames say the most."""
    if len(text) <= max_chars:
        return text
    return "...(truncated)\n" + text[-max_chars:]
