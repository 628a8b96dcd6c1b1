"""Point reads by primary key on the driver's cursor (the hot path of record look-ups).

``conn.execute(select(table).where(table.c.id == x))`` spends most of a point read in
SQLAlchemy Core: building the statement, its cache key, event dispatch and result set-up,
several times SQLite's own work. :func:`get_row` sends one prepared ``SELECT`` per table on
the driver cursor of the same connection (so inside its transaction, if one is open) and
converts the values with the column types' own result processors (dates, booleans, JSON),
so callers see the same values as through Core.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table

__all__ = ["get_row"]

_Plan = tuple[str, Callable[..., Any], tuple[tuple[int, Callable[[Any], Any]], ...]]
_PLANS: dict[tuple[str, str, str], _Plan] = {}


def _plan(conn: Connection, table: Table, key: str) -> _Plan:
    dialect = conn.dialect
    cache_key = (dialect.name, table.name, key)
    plan = _PLANS.get(cache_key)
    if plan is None:
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        columns = list(table.columns)
        names = ", ".join(quote(c.name) for c in columns)
        # identifiers come from the Table, quoted by the dialect; the value is bound
        sql = f"SELECT {names} FROM {quote(table.name)} WHERE {quote(key)} = {mark}"  # noqa: S608
        row_type = namedtuple(f"{table.name}_row", [c.name for c in columns])  # type: ignore[misc]
        processors = []
        for i, column in enumerate(columns):
            proc = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if proc is not None:
                processors.append((i, proc))
        plan = (sql, row_type, tuple(processors))
        _PLANS[cache_key] = plan
    return plan


def get_row(conn: Connection, table: Table, value: Any, key: str = "id") -> Any:
    """The row of ``table`` whose ``key`` column equals ``value`` (a named tuple), or None.

    ``key`` must be unique (a primary key): the first row found is returned.
    """
    sql, row_type, processors = _plan(conn, table, key)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, (value,))
        raw = cursor.fetchone()
    finally:
        cursor.close()
    if raw is None:
        return None
    if processors:
        raw = list(raw)
        for i, proc in processors:
            raw[i] = proc(raw[i])
    return row_type(*raw)
