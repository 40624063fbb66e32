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

    * Unfiltered list on PostgreSQL: the table's ``reltuples`` estimate
      (one catalogue lookup), or an exact count when the estimate is small.
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
        if not queryset.query.where:
            estimate = table_estimate(queryset)
            if estimate is not None and estimate > self.cap:
                self.is_estimate = True
                return estimate
        # COUNT over a LIMIT subquery: the database stops after cap + 1 rows.
        counted: int = queryset.order_by().values("pk")[: self.cap + 1].count()
        if counted > self.cap:
            self.is_capped = True
            return self.cap
        return counted
