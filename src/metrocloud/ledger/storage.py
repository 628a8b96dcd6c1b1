"""SQL access to the ledger tables: every query the log runs, each on the caller's connection.

Statements are built once at import so SQLAlchemy's compiled cache serves them; node lookups
are ONE ``SELECT ... WHERE id IN (...)`` each. Inserts pass plain dict lists to
``conn.execute(table.insert(), rows)``, which SQLAlchemy runs as a DBAPI ``executemany``.
Streams page by primary key (keyset pagination), so PostgreSQL and SQLite both read them in
bounded memory without server-side cursors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
)

from metrocloud.domain.errors import VerificationError
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.ledger.schema import (
    LEVEL_SHIFT,
    ledger_entries,
    ledger_heads,
    ledger_nodes,
    ledger_state,
    node_id,
)
from metrocloud.ledger.subtrees import NodeKey

__all__ = [
    "fetch_nodes",
    "insert_entries",
    "insert_head",
    "insert_runs",
    "iter_entries",
    "iter_entry_pages",
    "iter_heads",
    "latest_head",
    "node_level_summary",
    "nodes_completed_in",
    "read_entry",
    "read_head",
    "read_tree_size",
    "write_tree_size",
]

_E, _N, _H, _S = ledger_entries.c, ledger_nodes.c, ledger_heads.c, ledger_state.c

_STATE = select(_S.tree_size).where(_S.id == 1)
_STATE_LOCKED = _STATE.with_for_update()
_NODES = select(_N.id, _N.hash).where(_N.id.in_(bindparam("ids", expanding=True)))
_ENTRY = select(_E.entry).where(_E.idx == bindparam("idx"))
_HEAD_COLUMNS = (_H.tree_size, _H.root_hash, _H.timestamp, _H.key_id, _H.signature)
_HEAD = select(*_HEAD_COLUMNS).where(_H.tree_size == bindparam("size"))
_LATEST_HEAD = select(*_HEAD_COLUMNS).order_by(_H.tree_size.desc()).limit(1)
# integer division on both dialects; a literal, so SELECT and GROUP BY are the same expression
_LEVEL = (_N.id // literal_column(str(1 << LEVEL_SHIFT), BigInteger)).label("level")
_LEVELS = (
    select(_LEVEL, func.count(), func.min(_N.id), func.max(_N.id)).group_by(_LEVEL).order_by(_LEVEL)
)


def read_tree_size(conn: Connection, *, lock: bool = False) -> int | None:
    """``ledger_state.tree_size``, None if the row is missing; ``lock`` takes the row lock."""
    value = conn.execute(_STATE_LOCKED if lock else _STATE).scalar_one_or_none()
    return None if value is None else int(value)


def write_tree_size(conn: Connection, tree_size: int, *, insert: bool) -> None:
    if insert:
        conn.execute(ledger_state.insert().values(id=1, tree_size=tree_size))
    else:
        conn.execute(ledger_state.update().where(_S.id == 1).values(tree_size=tree_size))


def fetch_nodes(conn: Connection, keys: Iterable[NodeKey], *, purpose: str) -> dict[NodeKey, bytes]:
    """The stored hashes of ``keys`` in one query; VerificationError names any missing one."""
    wanted = {node_id(level, index): (level, index) for level, index in keys}
    if not wanted:
        return {}
    rows = conn.execute(_NODES, {"ids": list(wanted)}).all()
    found = {wanted[int(id_)]: bytes(hash_) for id_, hash_ in rows}
    if len(found) != len(wanted):
        missing = sorted(set(wanted.values()) - found.keys())
        shown = ", ".join(f"(level {lv}, index {ix})" for lv, ix in missing[:4])
        raise VerificationError(
            f"ledger storage is damaged: {purpose} needs {len(missing)} subtree hash(es) not "
            f"in ledger_nodes: {shown}; run verify_storage"
        )
    return found


def insert_entries(conn: Connection, start: int, entries: Sequence[bytes], at_ms: int) -> None:
    conn.execute(
        ledger_entries.insert(),
        [{"idx": i, "entry": e, "appended_at": at_ms} for i, e in enumerate(entries, start)],
    )


def insert_runs(conn: Connection, runs: Iterable[tuple[int, int, list[bytes]]]) -> None:
    """Insert the ``(level, first_index, hashes)`` runs of :func:`subtrees.extend`."""
    rows = [
        {"id": i, "hash": h}
        for level, first, hashes in runs
        for i, h in enumerate(hashes, node_id(level, first))
    ]
    if rows:
        conn.execute(ledger_nodes.insert(), rows)


def read_entry(conn: Connection, index: int) -> bytes | None:
    value = conn.execute(_ENTRY, {"idx": index}).scalar_one_or_none()
    return None if value is None else bytes(value)


def iter_entry_pages(
    conn: Connection, start: int, stop: int, *, chunk: int = 1000
) -> Iterator[list[tuple[int, bytes]]]:
    """Pages of ``(idx, entry)`` for ``start <= idx < stop`` in order, ``chunk`` per query."""
    cursor = start
    while cursor < stop:
        rows = conn.execute(
            select(_E.idx, _E.entry)
            .where(_E.idx >= cursor, _E.idx < stop)
            .order_by(_E.idx)
            .limit(chunk)
        ).all()
        if not rows:
            return
        yield [(int(idx), bytes(entry)) for idx, entry in rows]
        cursor = int(rows[-1][0]) + 1


def iter_entries(
    conn: Connection, start: int, stop: int, *, chunk: int = 1000
) -> Iterator[tuple[int, bytes]]:
    """``(idx, entry)`` for ``start <= idx < stop`` in order, ``chunk`` rows per query."""
    for page in iter_entry_pages(conn, start, stop, chunk=chunk):
        yield from page


def _head(log_id: str, row: Row[Any, Any, Any, Any, Any] | None) -> SignedTreeHead | None:
    if row is None:
        return None
    return SignedTreeHead(
        log_id=log_id,
        tree_size=int(row.tree_size),
        root_hash=bytes(row.root_hash),
        timestamp=int(row.timestamp),
        key_id=str(row.key_id),
        signature=bytes(row.signature),
    )


def read_head(conn: Connection, log_id: str, tree_size: int) -> SignedTreeHead | None:
    return _head(log_id, conn.execute(_HEAD, {"size": tree_size}).first())


def latest_head(conn: Connection, log_id: str) -> SignedTreeHead | None:
    return _head(log_id, conn.execute(_LATEST_HEAD).first())


def insert_head(conn: Connection, head: SignedTreeHead) -> None:
    conn.execute(
        ledger_heads.insert().values(
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            timestamp=head.timestamp,
            key_id=head.key_id,
            signature=head.signature,
        )
    )


def iter_heads(conn: Connection, log_id: str, *, chunk: int = 500) -> Iterator[SignedTreeHead]:
    """Every stored head by increasing tree size, ``chunk`` per query."""
    after = -1
    while True:
        rows = conn.execute(
            select(*_HEAD_COLUMNS).where(_H.tree_size > after).order_by(_H.tree_size).limit(chunk)
        ).all()
        for row in rows:
            head = _head(log_id, row)
            assert head is not None
            yield head
            after = head.tree_size
        if len(rows) < chunk:
            return


def nodes_completed_in(conn: Connection, start: int, stop: int) -> dict[int, bytes]:
    """Stored nodes completed by the leaves ``[start, stop)``: at level l the indexes
    ``[start >> l, stop >> l)``; keyed by ``ledger_nodes.id``. One query."""
    ranges = []
    level = 0
    while stop >> level > start >> level:
        base = level << LEVEL_SHIFT
        ranges.append(and_(_N.id >= base + (start >> level), _N.id < base + (stop >> level)))
        level += 1
    if not ranges:
        return {}
    rows = conn.execute(select(_N.id, _N.hash).where(or_(*ranges))).all()
    return {int(id_): bytes(hash_) for id_, hash_ in rows}


def node_level_summary(conn: Connection) -> list[tuple[int, int, int, int]]:
    """``(level, count, min index, max index)`` of the stored nodes, one row per level present."""
    rows = conn.execute(_LEVELS).all()
    return [
        (
            int(level),
            int(count),
            int(low) - (int(level) << LEVEL_SHIFT),
            int(high) - (int(level) << LEVEL_SHIFT),
        )
        for level, count, low, high in rows
    ]
