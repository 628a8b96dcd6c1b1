"""Bulk inserts that skip per-row SQL compilation (the registration hot path).

SQLAlchemy Core's ``execute(insert(), rows)`` compiles parameters row by row; for 10,000-row
registrations that costs more than SQLite's own work. :func:`insert_rows` sends one
driver-level ``executemany`` with tuples in the driver's parameter style.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table

__all__ = ["insert_rows", "insert_sql"]


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    conn.exec_driver_sql(insert_sql(conn.dialect, table, columns), list(rows))


def insert_sql(dialect: Dialect, table: Table, columns: Sequence[str]) -> str:
    """The driver-level ``INSERT`` of ``columns`` into ``table``, in ``dialect``'s
    parameter style (identifiers from the Table, quoted by the dialect; values bound)."""
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise KeyError(f"table {table.name} has no column(s) {unknown}")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join(mark for _ in columns)
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"  # noqa: S608
