"""Bulk inserts that skip per-row SQL compilation (the registration hot path).

SQLAlchemy Core's ``execute(insert(), rows)`` compiles parameters row by row; for 10,000-row
registrations that costs more than SQLite's own work. :func:`insert_rows` sends one
driver-level ``executemany`` with tuples in the driver's parameter style.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table

__all__ = ["insert_rows"]


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise KeyError(f"table {table.name} has no column(s) {unknown}")
    style = conn.dialect.paramstyle
    mark = "?" if style == "qmark" else "%s"
    quote = conn.dialect.identifier_preparer.quote
    # identifiers come from the Table and are quoted by the dialect; values are bound
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join(mark for _ in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"  # noqa: S608
    conn.exec_driver_sql(sql, list(rows))
