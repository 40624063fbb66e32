"""Hand-built SQL for the lifecycle's hot paths on PostgreSQL.

Building a statement through the ORM (a queryset, its ``Q`` filters, an
``UpdateQuery`` and its compiler) costs the worker several times what
PostgreSQL spends running it, and every tracked task makes three such
statements: that Python time decides how many tasks a worker gets through. The
builders here produce the same statements from the models' metadata with plain
string joins and the fields' own ``get_db_prep_save``.

They know only simple shapes: plain values, the two expressions below and
``AND``-ed comparisons. For anything else they return ``None`` and the
lifecycle uses the ORM. Only :mod:`django_taskqueue.lifecycle` calls them.
"""

from __future__ import annotations

import functools
import itertools
import sys
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_taskqueue.models import TaskEventLog, TaskLog
from django_taskqueue.serialization import to_json

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

Event = tuple[str, str, Mapping[str, Any] | None]

# Where a built statement takes the clause that turns off synchronous_commit.
_ASYNC_SLOT = " /*async*/"


@dataclass(frozen=True)
class KeepFirst:
    """An update that sets the column only while it is NULL (``COALESCE(col, value)``)."""

    value: Any


@dataclass(frozen=True)
class FillEmpty:
    """An update that sets a text column only while it is empty."""

    value: str


def orm_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """The same updates for ``QuerySet.update()``: the markers become ORM expressions."""
    out: dict[str, Any] = {}
    for name, value in updates.items():
        if isinstance(value, KeepFirst):
            field = cast("models.Field[Any, Any]", TaskLog._meta.get_field(name))
            out[name] = Coalesce(F(name), Value(value.value), output_field=field)
        elif isinstance(value, FillEmpty):
            out[name] = Case(When(**{name: ""}, then=Value(value.value)), default=F(name))
        else:
            out[name] = value
    return out


_OPERATORS = {"exact": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# Values psycopg sends as they are; anything else goes through the field's
# get_db_prep_save (JSON above all, which needs the driver's Jsonb wrapper).
_NATIVE = (str, int, float, datetime, uuid.UUID)


def _quote(name: str | None) -> str:
    # PostgreSQL's quoting, as DatabaseOperations.quote_name does it.
    assert name is not None
    return name if name.startswith('"') else f'"{name}"'


@functools.cache
def _column(name: str) -> tuple[models.Field[Any, Any], str] | None:
    """A plain TaskLog field and its quoted column, or ``None`` for a relation."""
    field = TaskLog._meta.get_field(name)
    if not isinstance(field, models.Field) or field.is_relation:
        return None
    return field, _quote(field.column)


def _prep(field: models.Field[Any, Any], value: Any, conn: BaseDatabaseWrapper) -> Any:
    if type(value) in _NATIVE and not isinstance(field, models.JSONField):
        return value
    return field.get_db_prep_save(value, conn)


@functools.cache
def _event_columns() -> str:
    meta = TaskEventLog._meta
    return ", ".join(
        _quote(cast("models.Field[Any, Any]", meta.get_field(name)).column)
        for name in ("task", "event_type", "message", "metadata", "created_at")
    )


@functools.cache
def _insert_fields() -> tuple[tuple[models.Field[Any, Any], str, bool], ...]:
    """``(field, quoted column, is JSON)`` of every TaskLog column, in order."""
    return tuple(
        (field, _quote(field.column), isinstance(field, models.JSONField))
        for field in TaskLog._meta.concrete_fields
    )


def _where(q: Q, conn: BaseDatabaseWrapper, params: list[Any]) -> list[str] | None:
    """``AND``-ed simple comparisons of ``q`` as SQL, or ``None`` for any other shape."""
    if q.negated or (q.connector != Q.AND and len(q.children) > 1):
        return None
    parts: list[str] = []
    for child in q.children:
        if isinstance(child, Q):
            nested = _where(child, conn, params)
            if nested is None:
                return None
            parts.extend(nested)
            continue
        name, value = cast("tuple[str, Any]", child)
        column, _, lookup = str(name).partition("__")
        found = _column(column)
        if (
            found is None
            or hasattr(value, "resolve_expression")
            or value is None
            or (lookup and lookup not in _OPERATORS)
        ):
            return None
        field, qcol = found
        parts.append(f"{qcol} {_OPERATORS[lookup or 'exact']} %s")
        params.append(_prep(field, value, conn))
    return parts


def _literal(identifier: str) -> str:
    if not identifier.replace("_", "").isalnum():
        raise ValueError(f"not a status: {identifier!r}")
    return f"'{identifier}'"


def _assignments(
    updates: Mapping[str, Any], conn: BaseDatabaseWrapper, params: list[Any]
) -> list[str] | None:
    parts: list[str] = []
    for name, value in updates.items():
        found = _column(name)
        if found is None:
            return None
        field, col = found
        if isinstance(value, KeepFirst):
            parts.append(f"{col} = COALESCE({col}, %s)")
            params.append(_prep(field, value.value, conn))
        elif isinstance(value, FillEmpty):
            parts.append(f"{col} = CASE WHEN {col} = '' THEN %s ELSE {col} END")
            params.append(_prep(field, value.value, conn))
        elif hasattr(value, "resolve_expression"):
            return None
        else:
            prepared = None if value is None else _prep(field, value, conn)
            if prepared is None:
                parts.append(f"{col} = NULL")
            else:
                parts.append(f"{col} = %s")
                params.append(prepared)
    return parts


def event_insert(conn: BaseDatabaseWrapper, event: Event, source: str) -> tuple[str, list[Any]]:
    """``INSERT INTO <events> ... SELECT id, ... FROM <source>`` and its parameters."""
    kind, message, metadata = event
    field = cast("models.Field[Any, Any]", TaskEventLog._meta.get_field("metadata"))
    params = [
        str(kind),
        message[:10_000],
        field.get_db_prep_save(to_json(metadata or {}), conn),
        timezone.now(),
    ]
    sql = (
        f"INSERT INTO {_quote(TaskEventLog._meta.db_table)} ({_event_columns()}) "
        f"SELECT id, %s, %s, %s, %s FROM {source}"
    )
    return sql, params


def update_with_event(
    conn: BaseDatabaseWrapper,
    *,
    key: tuple[str, Any],
    statuses: Iterable[str],
    guard: Q | None,
    updates: Mapping[str, Any],
    event: Event,
) -> tuple[str, list[Any]] | None:
    """The conditional UPDATE of one TaskLog and its event's INSERT as one statement.

    The statement returns ``(id, parent_id)`` when the row matched, nothing
    otherwise. ``key`` is ``("id", pk)`` or ``("celery_task_id", id)``.

    Returns:
        ``(sql, params)``, or ``None`` when a value or the guard has a shape
        this builder does not know (the caller then uses the ORM).
    """
    params: list[Any] = []
    assignments = _assignments(updates, conn, params)
    if assignments is None:
        return None
    name, value = key
    found = _column(name)
    if found is None or value is None:
        return None
    field, column = found
    conditions = [
        f"{column} = %s",
        # Statuses are the package's own identifiers: written into the text,
        # they spare the driver quoting a parameter each.
        f"{_quote('status')} IN ({', '.join(_literal(status) for status in sorted(statuses))})",
    ]
    params.append(_prep(field, value, conn))
    if guard is not None:
        extra = _where(guard, conn, params)
        if extra is None:
            return None
        conditions.extend(extra)
    event_sql, event_params = event_insert(conn, event, "u")
    sql = (
        f"WITH u AS (UPDATE {_quote(TaskLog._meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)} RETURNING id, parent_id), "
        f"e AS ({event_sql}) SELECT id, parent_id FROM u{_ASYNC_SLOT}"
    )
    return sql, [*params, *event_params]


def insert_with_event(
    conn: BaseDatabaseWrapper, log: TaskLog, event: Event
) -> tuple[str, list[Any]]:
    """The INSERT of a new TaskLog and of its first event, as one statement."""
    columns: list[str] = []
    values: list[str] = []
    params: list[Any] = []
    for field, column, is_json in _insert_fields():
        columns.append(column)
        value = field.pre_save(log, True)
        # Values at their usual defaults go into the SQL text: fewer
        # parameters to send, and still one statement text to prepare.
        kind = type(value)
        if value is None:
            values.append("NULL")
        elif kind is str and not value:
            values.append("''")
        elif kind is bool:
            values.append("TRUE" if value else "FALSE")
        elif kind is int and value == 0:
            values.append("0")
        elif is_json and value in ([], {}):
            values.append("'[]'" if value == [] else "'{}'")
        else:
            values.append("%s")
            params.append(_prep(field, value, conn))
    event_sql, event_params = event_insert(conn, event, "t")
    sql = (
        f"WITH t AS (INSERT INTO {_quote(TaskLog._meta.db_table)} ({', '.join(columns)}) "
        f"VALUES ({', '.join(values)}) RETURNING id) {event_sql}{_ASYNC_SLOT} RETURNING id"
    )
    return sql, [*params, *event_params]


# Appended to a statement's last FROM: turns off the wait for the WAL flush for
# the transaction the statement is in. A function call, not ``SET LOCAL``, so
# the statement stays a single one (which server-side binding requires).
_ASYNC_COMMIT_CLAUSE = " WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL"


def execute(
    conn: BaseDatabaseWrapper, sql: str, params: list[Any], *, async_commit: bool
) -> tuple[Any, ...] | None:
    """Run one built statement and return its first row.

    With psycopg 3 the statement is prepared once per connection, so PostgreSQL
    stops parsing and planning these wide statements for every task, most of its
    work per statement. It then runs through libpq's own prepared-statement call
    (see :func:`_run_prepared`), or, where that cannot be used, through a
    server-side-binding cursor. Django's cursor is used instead when queries are
    being logged or wrapped (``DEBUG``, ``assertNumQueries``, instrumentation),
    when the ``PREPARED_STATEMENTS`` setting is off, and with psycopg2.

    ``async_commit`` makes the statement itself turn off ``synchronous_commit``
    for its transaction (see :func:`django_taskqueue.lifecycle._recording`).
    """
    # The final SELECT/INSERT reads from a CTE that yields at most one row.
    sql = sql.replace(_ASYNC_SLOT, _ASYNC_COMMIT_CLAUSE if async_commit else "")
    raw = _server_side_connection(conn)
    if raw is None:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            first: tuple[Any, ...] | None = cursor.fetchone()
            return first
    with conn.wrap_database_errors:
        found = _run_prepared(raw, sql, params)
    if found is not _UNHANDLED:
        return cast("tuple[Any, ...] | None", found)
    import psycopg

    # Django connects with prepare_threshold=None, which turns preparing off
    # for the whole connection, even for an execute(prepare=True). Lift it
    # for this one statement only: the host's own queries stay unprepared.
    # psycopg keeps the connection's prepared statements in an LRU
    # (prepared_max), so they are reused across calls.
    threshold = raw.prepare_threshold
    raw.prepare_threshold = 0
    try:
        with conn.wrap_database_errors, psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=True)
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
    finally:
        raw.prepare_threshold = threshold


# --- libpq's prepared-statement call -------------------------------------------------
#
# A psycopg cursor spends most of a recording statement's client time on work
# these statements do not need: choosing a dumper for every parameter, keeping
# its own prepared-statement cache, building result loaders. Measured on one
# start write, psycopg's cursor took about 250 µs of CPU against about 35 µs for
# libpq's PQexecPrepared with the parameters as text. The statements here have a
# few plain types only, so they are sent that way; anything else (a parameter
# type not in _text_param, a gevent or eventlet pool, a transaction psycopg has
# not begun yet, statements dropped from the session) goes through the cursor,
# which knows every case.

_UNHANDLED = object()
# PostgreSQL type oids for the parameters, as psycopg would send them: a str
# goes as "unknown" so the server takes the column's type.
_OID_BOOL, _OID_INT8, _OID_FLOAT8, _OID_UUID, _OID_JSONB = 16, 20, 701, 2950, 3802
_OID_TIMESTAMP, _OID_TIMESTAMPTZ = 1114, 1184
_INT_OIDS = frozenset({20, 21, 23})
# Statement names per connection: a prepared statement lives in its session.
_prepared: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()
# The builders make a handful of shapes; past this many, a new one goes through
# the cursor rather than growing the session's statements without bound.
_MAX_PREPARED = 32
_names = itertools.count()
_MISSING_STATEMENT = b"26000"  # invalid_sql_statement_name: e.g. after DISCARD ALL


def _text_str(value: str, encoding: str) -> tuple[bytes | None, int] | None:
    if "\x00" in value:
        return None  # psycopg's cursor raises the clear error for this
    return str.encode(value, encoding), 0


def _text_int(value: int, encoding: str) -> tuple[bytes | None, int]:
    # int() first: an int subclass may print otherwise (IntEnum before Python 3.11).
    return str(int(value)).encode(), _OID_INT8


def _text_datetime(value: datetime, encoding: str) -> tuple[bytes | None, int]:
    oid = _OID_TIMESTAMP if value.tzinfo is None else _OID_TIMESTAMPTZ
    return value.isoformat().encode(), oid


def _text_jsonb(value: Any, encoding: str) -> tuple[bytes | None, int] | None:
    if value.dumps is None:
        return None  # psycopg's own JSON settings apply: leave it to the cursor
    return value.dumps(value.obj).encode(encoding), _OID_JSONB


_TextEncoder = Callable[[Any, str], "tuple[bytes | None, int] | None"]


@functools.cache
def _text_encoders() -> dict[type, _TextEncoder]:
    from psycopg.types.json import Jsonb

    return {
        str: _text_str,
        datetime: _text_datetime,
        int: _text_int,
        bool: lambda value, _: ((b"t" if value else b"f"), _OID_BOOL),
        float: lambda value, _: (repr(value).encode(), _OID_FLOAT8),
        uuid.UUID: lambda value, _: (str(value).encode(), _OID_UUID),
        type(None): lambda value, _: (None, 0),
        Jsonb: _text_jsonb,
    }


def _text_param(value: Any, encoding: str) -> tuple[bytes | None, int] | None:
    """A parameter as libpq text and its type oid, or ``None`` for a type not handled here."""
    encode = _text_encoders().get(type(value))
    if encode is not None:
        return encode(value, encoding)
    if isinstance(value, str):  # statuses and event types are str enums
        return _text_str(value, encoding)
    if isinstance(value, int) and not isinstance(value, bool):
        return _text_int(value, encoding)
    return None


def _decode(raw: bytes | None, oid: int, encoding: str) -> Any:
    if raw is None:
        return None
    if oid == _OID_UUID:
        return uuid.UUID(raw.decode())
    if oid in _INT_OIDS:
        return int(raw)
    return raw.decode(encoding)


def _green_threads() -> bool:
    """Whether gevent or eventlet patched ``socket`` (Celery's gevent/eventlet pools).

    libpq's call blocks the whole process until the server answers, which would
    stall every other greenlet; psycopg's cursor waits cooperatively there.
    """
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None and gevent.is_module_patched("socket"):
        return True
    eventlet = sys.modules.get("eventlet.patcher")
    return eventlet is not None and bool(eventlet.is_monkey_patched("socket"))


@dataclass
class _Session:
    """What this module knows of one psycopg connection's server session."""

    encoding: str
    names: dict[tuple[str, tuple[int, ...]], bytes]


def _run_prepared(raw: Any, sql: str, params: list[Any]) -> object:
    """Run ``sql`` with libpq's ``PQexecPrepared``; return its first row or ``_UNHANDLED``.

    Used in autocommit, or inside a transaction psycopg has already begun (before
    that, psycopg still has to send its ``BEGIN``). The statement is prepared
    once per connection, under a name of this package's own.
    """
    from psycopg import errors, pq

    if _green_threads():
        return _UNHANDLED
    pgconn = raw.pgconn
    status = pgconn.transaction_status
    if not (
        (status == pq.TransactionStatus.IDLE and raw.autocommit)
        or status == pq.TransactionStatus.INTRANS
    ):
        return _UNHANDLED
    session = _prepared.get(raw)
    if session is None:
        session = _prepared[raw] = _Session(raw.info.encoding, {})
    encoding = session.encoding
    values: list[bytes | None] = []
    oids: list[int] = []
    for value in params:
        text = _text_param(value, encoding)
        if text is None:
            return _UNHANDLED
        values.append(text[0])
        oids.append(text[1])
    key = (sql, tuple(oids))
    with raw.lock:
        name = session.names.get(key)
        if name is None:
            if len(session.names) >= _MAX_PREPARED:
                return _UNHANDLED
            name = f"_taskqueue_{next(_names)}".encode()
            # "%s" placeholders become "$n" (the builders never write a literal "%").
            pieces = sql.split("%s")
            numbered = pieces[0] + "".join(f"${n}{p}" for n, p in enumerate(pieces[1:], 1))
            prepared = pgconn.prepare(name, numbered.encode(encoding), oids)
            if prepared.status != pq.ExecStatus.COMMAND_OK:
                raise errors.error_from_result(prepared, encoding=encoding)
            session.names[key] = name
        result = pgconn.exec_prepared(name, values)
        if result.status == pq.ExecStatus.TUPLES_OK:
            if result.ntuples == 0:
                return None
            return tuple(
                _decode(result.get_value(0, column), result.ftype(column), encoding)
                for column in range(result.nfields)
            )
        if (
            result.error_field(pq.DiagnosticField.SQLSTATE) == _MISSING_STATEMENT
            and status == pq.TransactionStatus.IDLE
        ):
            # Someone dropped the session's prepared statements (DISCARD ALL):
            # this run goes through the cursor, the next one prepares afresh.
            session.names.clear()
            return _UNHANDLED
        raise errors.error_from_result(result, encoding=encoding)


def _server_side_connection(conn: BaseDatabaseWrapper) -> Any:
    from django_taskqueue.conf import conf

    if conn.queries_logged or conn.execute_wrappers or not conf.PREPARED_STATEMENTS:
        return None
    # What Django's cursor() does first: CONN_HEALTH_CHECKS, then (re)connect.
    conn.close_if_health_check_failed()
    conn.ensure_connection()
    conn.validate_no_broken_transaction()
    # Only reached on PostgreSQL, so one of the two drivers is importable.
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return conn.connection if is_psycopg3 else None
