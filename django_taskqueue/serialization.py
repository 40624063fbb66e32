"""Turning task arguments, results and errors into what the TaskLog stores.

Pure functions: no database, no Celery.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from itertools import accumulate, chain
from typing import Any
from urllib.parse import unquote_plus

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


# --- redaction ------------------------------------------------------------------------

# A key's words: cut at anything that is not a letter or digit, and where camelCase
# changes case ("XApiKey" -> X, Api, Key; "HTTPAuth" -> HTTP, Auth).
_WORD_BREAK = re.compile(r"[^0-9A-Za-z]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")

#: Terms this short match a whole word of a key only ("auth" matches ``X-Auth-Token``
#: and ``basic_auth`` but not ``author``); longer ones match anywhere in it.
WHOLE_WORD_MAX = 4

# A URL with a scheme, up to the next blank or quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
# One name=value pair of a query string.
_QUERY_PAIR = re.compile(r"(?P<name>[^&;=#]+)=(?P<value>[^&;#]*)")


def _squash(text: str) -> str:
    """Lower-case, without separators: ``"X-Api-Key"`` -> ``"xapikey"``."""
    return _NOT_ALNUM.sub("", text.lower())


class SecretKeys:
    """Decides whether a mapping key names a secret.

    Case and separators do not count: the key and each term are compared
    lower-cased with everything but letters and digits removed, so the term
    ``api_key`` matches ``apiKey``, ``API-KEY`` and ``X-Api-Key``. A term of
    up to :data:`WHOLE_WORD_MAX` characters must be a whole word of the key
    (words are cut at separators and camelCase); a longer one may be anywhere
    in it (``password`` matches ``db_password`` and ``dbpassword``).
    """

    def __init__(self, terms: Iterable[str]) -> None:
        squashed = {_squash(term) for term in terms} - {""}
        self.words = frozenset(term for term in squashed if len(term) <= WHOLE_WORD_MAX)
        self.parts = tuple(sorted(term for term in squashed if len(term) > WHOLE_WORD_MAX))
        self._known: dict[str, bool] = {}

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        known = self._known.get(key)
        if known is None:
            squashed = _squash(key)
            known = any(part in squashed for part in self.parts) or (
                bool(self.words)
                and any(word.lower() in self.words for word in _WORD_BREAK.split(key) if word)
            )
            if len(self._known) < 10_000:  # keys repeat; a flood of new ones is not cached
                self._known[key] = known
        return known


@functools.lru_cache(maxsize=16)
def secret_keys(terms: tuple[str, ...]) -> SecretKeys:
    """The :class:`SecretKeys` of ``terms`` (built once per distinct list)."""
    return SecretKeys(terms)


def _as_secret_keys(keys: Iterable[str] | SecretKeys) -> SecretKeys:
    return keys if isinstance(keys, SecretKeys) else secret_keys(tuple(keys))


def _redact_url(url: str, secrets: SecretKeys, replacement: str) -> str:
    """Mask the password of a URL's user info and the values of its secret query parameters."""
    start = url.index("://") + 3
    rest = url[start:]
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at == -1:
        colon = rest.find(":", 0, authority_end)
        ipv6 = rest.startswith("[")  # "[::1]:8000": its colons are the address's
        if colon != -1 and not ipv6 and not rest[colon + 1 : authority_end].isdigit():
            # "user:pa/ss@host": a password with an unencoded "/", "?" or "#" ends
            # the authority early; what follows the colon is no port, so it runs
            # up to the "@".
            at = rest.find("@", colon)
    head = url[:start]
    if at != -1:
        userinfo, rest = rest[:at], rest[at:]
        user, separator, password = userinfo.partition(":")
        head += f"{user}:{replacement}" if separator and password else userinfo
    query_at = rest.find("?")
    if query_at == -1:
        return head + rest
    query_end = rest.find("#", query_at)
    query_end = len(rest) if query_end == -1 else query_end

    def pair(match: re.Match[str]) -> str:
        name, value = match["name"], match["value"]
        if value and unquote_plus(name) in secrets:
            return f"{name}={replacement}"
        return match[0]

    query = _QUERY_PAIR.sub(pair, rest[query_at + 1 : query_end])
    return head + rest[: query_at + 1] + query + rest[query_end:]


def redact_text(text: str, keys: Iterable[str] | SecretKeys, replacement: str) -> tuple[str, bool]:
    """Mask the credentials of every URL in ``text``.

    ``postgres://user:pw@host/db`` becomes ``postgres://user:<replacement>@host/db``
    (also inside a longer text, such as an error message), and a query
    parameter whose name is a secret key has its value replaced
    (``?api_key=...``). A URL with a user name and no password is left alone.

    Returns:
        The masked text, and whether anything was replaced.
    """
    if "://" not in text:
        return text, False
    secrets = _as_secret_keys(keys)
    masked = _URL.sub(lambda match: _redact_url(match[0], secrets, replacement), text)
    return masked, masked != text


def _holds_nothing(value: Any) -> bool:
    """Nothing to hide: null, a boolean, or an empty string, list or object."""
    return (
        value is None
        or isinstance(value, bool)
        or (isinstance(value, (str, list, dict)) and not value)
    )


def redact(
    value: Any, keys: Iterable[str] | SecretKeys, replacement: str, *, _depth: int = 0
) -> tuple[Any, bool]:
    """Replace secrets, at any depth: the values of secret keys, and credentials in URLs.

    A mapping key that matches one of ``keys`` (see :class:`SecretKeys`) has
    its value replaced, unless the value holds nothing (null, true/false, an
    empty string, list or object). Every string is passed through
    :func:`redact_text`. Anything nested deeper than the depth that
    :func:`to_json` keeps is replaced whole.

    Args:
        value: JSON-compatible data (run it through :func:`to_json` first).
        keys: the secret terms (``REDACT_KEYS`` and ``REDACT_EXTRA_KEYS``), or
            their :class:`SecretKeys`.
        replacement: what a secret becomes.

    Returns:
        The redacted copy, and whether anything was replaced.
    """
    if isinstance(value, str):
        return redact_text(value, keys, replacement)
    if not isinstance(value, (dict, list)) or not value:
        return value, False
    if _depth > _MAX_DEPTH:
        return replacement, True
    secrets = _as_secret_keys(keys)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            if key in secrets and not _holds_nothing(item):
                out[key] = replacement
                changed = True
            else:
                out[key], sub = redact(item, secrets, replacement, _depth=_depth + 1)
                changed = changed or sub
        return out, changed
    items = [redact(item, secrets, replacement, _depth=_depth + 1) for item in value]
    return [item for item, _ in items], any(sub for _, sub in items)


def encode_result(value: Any, max_bytes: int) -> Any:
    """The task's return value as stored: JSON as is, or a marked, bounded repr.

    A result that JSON cannot hold, whose JSON is larger than ``max_bytes``, or
    that nests lists and dicts more than 32 levels deep, is stored as
    ``{"repr": "...", "truncated": bool, "type": "..."}`` so the row stays small
    and the reader can tell it is not the real value. Never raises.
    """
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except RecursionError:
        # Nested thousands of levels deep: its full repr would recurse as well.
        return {"repr": _shallow_repr(value), "type": type(value).__name__, "truncated": True}
    except Exception:  # not JSON (TypeError, ValueError), or a broken default()
        return {"repr": safe_repr(value, max(64, max_bytes)), "type": type(value).__name__}
    if len(text.encode()) <= max_bytes:
        # Each level takes two brackets: most results are too short to be too deep.
        if len(text) > 2 * _MAX_DEPTH and json_depth(text) > _MAX_DEPTH:
            # Stored, it would be read back by code that recurses (the admin's
            # pretty-printing, a jsonb parser): keep a shallow repr instead.
            return {"repr": _shallow_repr(value), "type": type(value).__name__, "truncated": True}
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


_LEAVES = frozenset({str, bytes, bytearray, int, float, bool, type(None)})


def _children(value: Any, objects: bool) -> Iterator[Any] | None:
    """The items a serializer recurses into, or ``None`` for a leaf."""
    if type(value) in _LEAVES:
        return None
    if isinstance(value, Mapping):
        return chain(value.keys(), value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return iter(value)
    if objects and not isinstance(value, type) and not callable(value):
        # pickle saves an instance's __dict__ as its state: one more level.
        state = getattr(value, "__dict__", None)
        if isinstance(state, dict):
            return iter((state,))
    return None


def nesting_depth(value: Any, limit: int, *, objects: bool = False) -> int:
    """How deeply lists, tuples, sets and dicts nest in ``value`` (a scalar is 0, ``[]`` is 1).

    Never recursive, so it measures what would make ``json.dumps`` or
    ``pickle.dumps`` raise ``RecursionError`` (or kill a process) without doing
    so itself. It stops as soon as the depth exceeds ``limit`` and then returns
    ``limit + 1``; linear in the size of ``value`` otherwise (a container seen
    twice is measured once, and a reference cycle does not count, as in pickle).

    Args:
        value: the data to measure.
        limit: the depth that is enough to know.
        objects: also count an object's ``__dict__`` as a level below it (what
            pickle serialises).
    """
    items = _children(value, objects)
    if items is None:
        return 0
    heights: dict[int, int] = {}  # the measured containers, by id
    on_path = {id(value)}
    # One frame per open container: its id, its remaining items, its tallest child so far.
    stack: list[list[Any]] = [[id(value), items, 0]]
    while stack:
        frame = stack[-1]
        child = next(frame[1], _DONE)
        if child is _DONE:  # every item measured: close the container
            stack.pop()
            on_path.discard(frame[0])
            height = frame[2] + 1
            heights[frame[0]] = height
            if stack and height > stack[-1][2]:
                stack[-1][2] = height
            continue
        if type(child) in _LEAVES:  # most items: the fast way out
            continue
        key = id(child)
        known = heights.get(key)
        if known is not None:
            frame[2] = max(frame[2], known)
            continue
        if key in on_path:  # a cycle: pickle writes a reference
            continue
        grandchildren = _children(child, objects)
        if grandchildren is None:
            continue
        if len(stack) >= limit:  # the child would be level limit + 1
            return limit + 1
        on_path.add(key)
        stack.append([key, grandchildren, 0])
    return heights[id(value)]


_DONE = object()


# A JSON string, escapes included (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON document (a scalar is 0, ``[]`` is 1).

    Reads the text without parsing it (no recursion, linear time), so it can
    be asked before a parser that recurses once per level is. Brackets inside
    strings do not count. For text that is not JSON the answer is a guess that
    the parser will refuse anyway.
    """
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(0, max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0))


def _shallow_repr(value: Any, limit: int = 1000) -> str:
    """A repr that stops a few levels down (the standard ``reprlib`` limits)."""
    import reprlib

    try:
        text = reprlib.repr(value)
    except Exception as exc:
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text[:limit]


# Characters no database stores as text: NUL (PostgreSQL refuses it in text and
# jsonb) and the UTF-16 surrogates, which only appear alone in a Python str (a
# JSON "\ud800" escape) and cannot be encoded to UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str):
                    yield f"{where} key {key!r}", key
                stack.append((child, f"{where}[{key!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))


def unstorable_text(value: Any, name: str) -> str | None:
    """Say where ``value`` holds a NUL character or a lone surrogate, or return ``None``.

    Walks dict keys and values and list items at any depth (without recursion).

    Returns:
        A message such as ``"metadata['a'][2] contains the character U+0000 (NUL)"``.
    """
    for where, text in _unstorable_strings(value, name):
        match = _UNSTORABLE.search(text)
        if match is not None:
            code = ord(match.group())
            what = "NUL" if code == 0 else "a lone surrogate"
            return (
                f"{where} contains the character U+{code:04X} ({what}), "
                "which cannot be stored as text."
            )
    return None
