"""schemathesis hooks of the schema run: generated file paths that pass validation.

The schema can say what a path looks like but not which files exist inside the host's
``ALLOWED_FILE_ROOTS``; a generated path almost never names one, so without help
``create_task`` and ``bulk_create`` would only ever answer 400. Before each call this
hook replaces a generated ``file_path`` (and each of ``file_paths``) with one of the seed
files the run wrote inside the root, chosen by a hash of the generated request and
matching the request's ``task_type`` when it names one. One value in four (by the hash)
is sent as generated, so the API's answers to odd, missing and outside paths are
exercised too, except an absolute path in a request generated as valid: the schema cannot
state which files exist, so such a request must be accepted (``positive_data_acceptance``
holds the API to that) and always gets a seed file. A relative path in a valid request is
kept one time in four on purpose: it shows whether the schema states the rule that a
path is absolute. Values the API refuses before looking at the file system (not a
string, NUL, longer than 1,024 characters) are always sent as generated.

schemathesis revalidates a case a hook changed, so the case's positive or negative
label follows the values really sent.

``TASKQUEUE_SCHEMA_SEEDS`` names a JSON file: ``{"<task_type>": ["/abs/path", ...]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import schemathesis

#: The longest ``file_path`` the API documents.
MAX_PATH = 1024

_SEEDS: dict[str, list[str]] = json.loads(
    open(os.environ["TASKQUEUE_SCHEMA_SEEDS"], encoding="utf-8").read()  # noqa: SIM115
)
_ALL_SEEDS = sorted(path for paths in _SEEDS.values() for path in paths)


def _digest(value: object, body: dict[str, Any]) -> int:
    # The whole body goes in, so the same generated path (often "") gets different
    # treatment in different requests; sha256 rather than hash(), which changes per process.
    text = json.dumps([value, body], sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8])


def seed_for(value: object, body: dict[str, Any], *, negative: bool) -> object:
    """The seed file that stands in for ``value`` (a path in ``body``), or ``value`` itself."""
    if not isinstance(value, str) or "\x00" in value or len(value) > MAX_PATH:
        return value
    number = _digest(value, body)
    task_type = body.get("task_type")
    keep = number % 4 == 0 and (negative or not os.path.isabs(value))
    if keep:
        return value
    choices = _SEEDS.get(task_type, _ALL_SEEDS) if isinstance(task_type, str) else _ALL_SEEDS
    return choices[(number >> 2) % len(choices)]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Point generated file paths at the seed files (see the module's docstring)."""
    body = case.body
    if not isinstance(body, dict):
        return
    meta = case.meta
    negative = meta is not None and meta.generation.mode.is_negative
    if case.operation.path.endswith("/create_task/") and "file_path" in body:
        body["file_path"] = seed_for(body["file_path"], body, negative=negative)
    if case.operation.path.endswith("/bulk_create/") and isinstance(body.get("file_paths"), list):
        body["file_paths"] = [
            seed_for(item, body, negative=negative) for item in body["file_paths"]
        ]
