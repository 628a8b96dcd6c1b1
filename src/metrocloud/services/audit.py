"""``metrocloud audit``: rebuild the registry from the log and compare it with the tables.

The registry tables are a view of the transparency log (ARCHITECTURE.md decision 1). Audit
replays every statement of the log, in order, through the same projection the live node
uses, into a scratch database, and then compares every legally relevant table row by row.
A row changed, added or deleted behind the API shows up as a difference naming table, key
and columns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, select

from metrocloud.domain.errors import MetrocloudError
from metrocloud.services.node import Node
from metrocloud.store.database import Database
from metrocloud.store.projection import project
from metrocloud.store.schema import (
    alerts,
    certificate_history,
    certificates,
    declaration_instruments,
    declarations,
    device_keys,
    events,
    grid_anchors,
    grid_nodes,
    grid_replicated,
    instruments,
    parties,
    party_encryption_keys,
)
from metrocloud.trust.statements import SignedStatement

__all__ = ["AUDITED_TABLES", "AuditReport", "audit"]

AUDITED_TABLES: tuple[Table, ...] = (
    parties,
    certificates,
    certificate_history,
    instruments,
    device_keys,
    events,
    declarations,
    declaration_instruments,
    party_encryption_keys,  # confidential exchange (docs/exchange.md)
    # the Legal Metrology Grid (docs/grid.md): anchor, peer list, applied replicas, alerts
    grid_anchors,
    grid_nodes,
    grid_replicated,
    alerts,
)
_MAX_PROBLEMS = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditReport:
    ok: bool
    statements: int
    rows_compared: int
    problems: tuple[str, ...]


def _rows(conn: Connection, table: Table) -> Iterator[Any]:
    pk = list(table.primary_key.columns)
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(
        select(table).order_by(*pk)
    )
    yield from result


def _compare(table: Table, live: Connection, expected: Connection, problems: list[str]) -> int:
    pk = [c.name for c in table.primary_key.columns]
    cols = [c.name for c in table.columns]
    it_live, it_exp = _rows(live, table), _rows(expected, table)
    a, b = next(it_live, None), next(it_exp, None)
    n = 0
    while a is not None or b is not None:
        ka = tuple(getattr(a, k) for k in pk) if a is not None else None
        kb = tuple(getattr(b, k) for k in pk) if b is not None else None
        n += 1
        if kb is None or (ka is not None and ka < kb):
            problems.append(f"{table.name} {ka}: row is not backed by any statement in the log")
            a = next(it_live, None)
        elif ka is None or kb < ka:
            problems.append(f"{table.name} {kb}: row recorded in the log is missing")
            b = next(it_exp, None)
        else:
            diff = [c for c in cols if getattr(a, c) != getattr(b, c)]
            if diff:
                detail = ", ".join(
                    f"{c}: stored {getattr(a, c)!r}, log says {getattr(b, c)!r}" for c in diff[:5]
                )
                problems.append(f"{table.name} {ka}: {detail}")
            a, b = next(it_live, None), next(it_exp, None)
        if len(problems) >= _MAX_PROBLEMS:
            break
    return n


def audit(node: Node, progress: Callable[[str, int, int], None] | None = None) -> AuditReport:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="metrocloud-audit-") as tmp:
        scratch = Database(f"sqlite:///{Path(tmp) / 'replay.sqlite3'}")
        scratch.migrate()
        count = 0
        with node.db.read() as live, scratch.write() as sc:
            size = node.log.tree_size(live)
            for index, entry in node.log.entries(live, 0, size):
                try:
                    signed = SignedStatement.from_bytes(entry)
                    signed.verify(lambda key_id: node.key.public_key)
                    project(sc, signed.statement.payload(), index)
                except MetrocloudError as exc:
                    problems.append(f"log entry {index}: {exc}")
                count += 1
                if progress and count % 1000 == 0:
                    progress("replay", count, size)
            if progress:
                progress("replay", count, size)
        compared = 0
        with node.db.read() as live, scratch.read() as sc:
            for i, table in enumerate(AUDITED_TABLES):
                compared += _compare(table, live, sc, problems)
                if progress:
                    progress("compare", i + 1, len(AUDITED_TABLES))
        scratch.dispose()
    return AuditReport(
        ok=not problems, statements=count, rows_compared=compared, problems=tuple(problems)
    )
