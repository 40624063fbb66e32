"""The trigram indexes on PostgreSQL: created, used by the real searches, reversible.

The plans are read with sequential and plain index scans off (``_FORCE_BITMAP``), so they
do not depend on how many rows the table holds: a bitmap scan needs an index whose
expression matches a condition, so the planner takes the trigram indexes whatever the
costs, and a search that no index matches falls back to a disabled scan that reads the
table with the condition as a filter (the control test below proves it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_taskqueue.models import TaskLog

pytestmark = [pytest.mark.integration]

APP = "django_taskqueue_postgres"
INDEXES = {
    "taskqueue_file_name_trgm_idx": "file_name",
    "taskqueue_celery_id_trgm_idx": "celery_task_id",
    "taskqueue_task_name_trgm_idx": "task_name",
}
TABLE = TaskLog._meta.db_table

ROWS = (
    # (celery_task_id, file_name, task_name)
    ("aaaa-1111", "Report-2024.CSV", "jobs.export"),
    ("BBBB-2222-xyz", "photo.jpg", "Images.Resize"),
    ("cccc-3333", "100%_done.txt", "jobs.import"),
    ("dddd-4444", "", ""),
    ("eeee-5555", "Ünïcode-résumé.pdf", "mail.send"),
)
TERMS = (
    "report",
    "csv",
    "IMAGES.re",
    "  Resize  ",
    "bbbb-2222",
    "2222-XYZ",
    "2222",
    "jobs",
    "JOBS.IMPORT",
    "%",
    "_",
    "100%_",
    "0%_d",
    "o",
    "xx",
    "dddd-4444",
    "nothing-like-this",
)


def _indexes() -> dict[str, tuple[str, bool]]:
    """Our indexes on the task table: name -> (definition, valid)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = %s::regclass AND c.relname = ANY(%s)
            """,
            [connection.ops.quote_name(TABLE), list(INDEXES)],
        )
        return {name: (definition, valid) for name, definition, valid in cursor.fetchall()}


def _has_trigram_extension() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        return cursor.fetchone() is not None


_FORCE_BITMAP = (
    "SET LOCAL enable_seqscan = off",
    "SET LOCAL enable_indexscan = off",
    "SET LOCAL enable_indexonlyscan = off",
)


def _force_bitmap_scans() -> None:
    """Leave the planner bitmap scans only, for the rest of the test's transaction."""
    with connection.cursor() as cursor:
        for statement in _FORCE_BITMAP:
            cursor.execute(statement)


def _plan(sql: str) -> dict[str, Any]:
    """The plan of ``sql`` (a complete statement, as the query log holds it)."""
    _force_bitmap_scans()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return dict(plan[0]["Plan"])


def _sql(queryset: QuerySet[TaskLog]) -> str:
    sql, params = queryset.query.sql_with_params()
    ops: Any = connection.ops  # PostgreSQL's; django-stubs types the base class
    return str(ops.compose_sql(sql, params))


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _table_access(sql: str) -> tuple[set[str], list[str]]:
    """The trigram indexes a bitmap scan uses, and every other way the plan reads the table."""
    bitmap_indexes: set[str] = set()
    other: list[str] = []
    for node in _nodes(_plan(sql)):
        kind = node["Node Type"]
        if kind == "Bitmap Index Scan" and node["Index Name"] in INDEXES:
            bitmap_indexes.add(node["Index Name"])
        elif node.get("Relation Name") == TABLE and kind != "Bitmap Heap Scan":
            other.append(f"{kind} {node.get('Index Name', '')} {node.get('Filter', '')}".strip())
    return bitmap_indexes, other


def _searches(captured: CaptureQueriesContext) -> list[str]:
    sqls = [q["sql"] for q in captured.captured_queries if "LIKE UPPER" in q["sql"]]
    assert sqls, [q["sql"] for q in captured.captured_queries]
    return sqls


@pytest.fixture
def rows(db: Any) -> list[TaskLog]:
    return TaskLog.objects.bulk_create(
        TaskLog(celery_task_id=celery_id, file_name=file_name, task_name=task_name)
        for celery_id, file_name, task_name in ROWS
    )


def _api_search(term: str) -> tuple[set[str], list[str]]:
    """The ids ``GET /api/tasks/?search=term`` lists for a staff user, and its SQL."""
    pytest.importorskip("rest_framework")
    from rest_framework.test import APIClient

    staff = get_user_model().objects.get_or_create(username="trgm-staff", is_staff=True)[0]
    client = APIClient()
    client.force_authenticate(staff)
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/tasks/", {"search": term, "page_size": "100"})
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}, [
        q["sql"] for q in captured.captured_queries
    ]


def _expected(term: str) -> set[str]:
    """Case-insensitive substring on the file name, the Celery id or the task name."""
    needle = term.strip().upper()
    return {
        str(task.pk)
        for task in TaskLog.objects.all()
        if any(
            needle in value.upper()
            for value in (task.file_name, task.celery_task_id, task.task_name)
        )
    }


# --- the migration ------------------------------------------------------------------


@pytest.mark.django_db
def test_migration_created_the_extension_and_the_three_indexes() -> None:
    assert _has_trigram_extension()
    found = _indexes()
    assert set(found) == set(INDEXES)
    for name, column in INDEXES.items():
        definition, valid = found[name]
        assert valid, name
        assert f"USING gin (upper(({column})::text) gin_trgm_ops)" in definition, definition


@pytest.mark.django_db(transaction=True)
def test_migrating_backwards_drops_the_indexes_and_forwards_builds_them() -> None:
    try:
        call_command("migrate", APP, "zero", verbosity=0)
        assert _indexes() == {}
        # Kept: other indexes of the project may use it, and it may have been there before.
        assert _has_trigram_extension()
    finally:
        call_command("migrate", APP, verbosity=0)
    assert {name for name, (_, valid) in _indexes().items() if valid} == set(INDEXES)


@pytest.mark.django_db(transaction=True)
def test_an_invalid_index_left_by_an_interrupted_build_is_rebuilt() -> None:
    name = "taskqueue_file_name_trgm_idx"
    try:
        call_command("migrate", APP, "zero", verbosity=0)
        for _ in range(2):
            TaskLog.objects.create(celery_task_id=str(uuid.uuid4()), file_name="same.txt")
        # A concurrent build that fails leaves its index behind, marked invalid.
        with pytest.raises(IntegrityError), connection.cursor() as cursor:
            cursor.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY {name} "
                f"ON {connection.ops.quote_name(TABLE)} (file_name)"
            )
        assert _indexes()[name][1] is False
    finally:
        call_command("migrate", APP, verbosity=0)
    definition, valid = _indexes()[name]
    assert valid
    assert "gin_trgm_ops" in definition


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_indexes_are_built_the_plain_way() -> None:
    # CREATE INDEX CONCURRENTLY would fail here ("cannot run inside a transaction block").
    try:
        with transaction.atomic():
            call_command("migrate", APP, "zero", verbosity=0)
            assert _indexes() == {}
            call_command("migrate", APP, verbosity=0)
            assert {name for name, (_, valid) in _indexes().items() if valid} == set(INDEXES)
    finally:
        call_command("migrate", APP, verbosity=0)
    assert set(_indexes()) == set(INDEXES)


# --- the planner uses them for the real queries -------------------------------------


@pytest.mark.django_db
def test_the_api_search_count_and_page_use_the_three_indexes(rows: list[TaskLog]) -> None:
    _, sqls = _api_search("Report-20")
    searches = [sql for sql in sqls if "LIKE UPPER" in sql]
    # DRF's page: the COUNT and the page itself, both with the search condition.
    assert len(searches) == 2, sqls
    assert any("COUNT(" in sql for sql in searches)
    for sql in searches:
        used, other = _table_access(sql)
        assert used == set(INDEXES), sql
        assert other == [], other


@pytest.mark.django_db
def test_the_filter_queryset_uses_the_three_indexes(rows: list[TaskLog]) -> None:
    pytest.importorskip("django_filters")
    from django_taskqueue.api.filters import TaskLogFilter

    queryset: QuerySet[TaskLog] = TaskLogFilter(
        {"search": "photo"}, queryset=TaskLog.objects.all()
    ).qs
    used, other = _table_access(_sql(queryset))
    assert used == set(INDEXES)
    assert other == []


@pytest.mark.django_db
def test_a_search_the_indexes_do_not_match_shows_up_as_a_filter(rows: list[TaskLog]) -> None:
    # The control: case-sensitive "contains" is "file_name"::text LIKE '%...%', no UPPER(),
    # so no trigram index serves it, and the helper reports how the table is read instead.
    queryset = TaskLog.objects.filter(file_name__contains="photo")
    used, other = _table_access(_sql(queryset))
    assert used == set()
    assert other, "the unindexed search should read the table another way"
    assert any("~~" in access for access in other), other


@pytest.mark.django_db
def test_the_admin_search_uses_the_three_indexes(rows: list[TaskLog], admin_client: Any) -> None:
    url = reverse("admin:django_taskqueue_tasklog_changelist")
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, {"q": "images"})
    assert response.status_code == 200
    listed = {task.pk for task in response.context["cl"].result_list}
    assert listed == {rows[1].pk}
    for sql in _searches(captured):
        used, other = _table_access(sql)
        # "=celery_task_id" is UPPER(...) = UPPER('...'): pg_trgm 1.6 (PostgreSQL 14+)
        # answers equality from the same index.
        assert used == set(INDEXES), sql
        assert other == [], other


# --- and the answers do not change --------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("term", TERMS)
def test_search_results_are_case_insensitive_substrings(rows: list[TaskLog], term: str) -> None:
    # Through the indexes (a term without a whole trigram reads all of an index).
    _force_bitmap_scans()
    listed, _ = _api_search(term)
    assert listed == _expected(term)
