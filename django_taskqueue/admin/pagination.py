"""A paginator that never counts a whole large table.

Django's admin asks its paginator for ``count`` on every changelist page,
which is a ``SELECT COUNT(*)`` over everything the filters match. At a
million rows that one query costs more than the rest of the page. This
paginator counts at most ``cap + 1`` rows (the work is bounded whatever the
table size), and for the unfiltered list on PostgreSQL it reads the planner's
row estimate instead, so the page shows "about N" rather than an exact total.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

#: Below this many rows an exact count is cheap and better than an estimate.
EXACT_COUNT_BELOW = 10_000


def table_estimate(queryset: QuerySet[Any]) -> int | None:
    """Return PostgreSQL's estimate of the rows in ``queryset``'s table, or ``None``.

    ``None`` on other databases, and on PostgreSQL when the table was never
    analysed (``reltuples`` is -1 then).
    """
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A :class:`~django.core.paginator.Paginator` whose ``count`` costs a bounded amount.

    * Unfiltered list on PostgreSQL: the table's ``reltuples`` estimate, or
      the capped count when the estimate is small (one query either way).
    * Any other list: ``COUNT(*)`` over at most ``cap + 1`` rows. When more
      match, ``count`` is ``cap`` and :attr:`is_capped` is true, so the last
      reachable page is ``cap // per_page``; narrowing the filters reaches the rest.

    Attributes:
        cap: the most rows counted exactly.
        is_capped: more rows matched than ``cap``.
        is_estimate: ``count`` is PostgreSQL's estimate, not a count.
    """

    cap = EXACT_COUNT_BELOW

    def __init__(self, object_list: Any, per_page: int | str, *args: Any, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self.is_capped = False
        self.is_estimate = False

    @cached_property
    def count(self) -> int:
        """The number of rows, bounded as the class docstring describes."""
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        if not queryset.query.where and connections[queryset.db].vendor == "postgresql":
            counted = self._postgresql_unfiltered_count(queryset)
        else:
            # COUNT over a LIMIT subquery: the database stops after cap + 1 rows.
            counted = queryset.order_by().values("pk")[: self.cap + 1].count()
        if counted > self.cap and not self.is_estimate:
            self.is_capped = True
            return self.cap
        return counted

    def _postgresql_unfiltered_count(self, queryset: QuerySet[Any]) -> int:
        """The estimate for a large table, else a capped count: one query either way."""
        connection = connections[queryset.db]
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT c.reltuples::bigint,
                       CASE WHEN c.reltuples > %s THEN NULL
                            ELSE (SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT %s) AS capped)
                       END
                FROM pg_class AS c WHERE c.oid = %s::regclass
                """,  # the table name comes from the model, quoted by the backend
                [self.cap, self.cap + 1, table],
            )
            row = cursor.fetchone()
        estimate, counted = row if row is not None else (0, 0)
        if counted is None:
            self.is_estimate = True
            return int(estimate)
        return int(counted)
