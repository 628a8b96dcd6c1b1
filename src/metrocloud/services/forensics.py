"""Forensic support: an instrument's timeline, and evidence bundles that prove it offline.

* :func:`timeline`: everything the node knows about one instrument, in time order: its
  registration, its certificate's issue and changes, declarations, life-cycle events (each
  with the leaf index of its signed statement), verification results, a measurement summary
  per quantity and day (from the lake), what the intake flagged or quarantined, and who read
  the instrument's data (the access log).
* :func:`build_bundle` / :func:`export_bundle`: the evidence bundle of the instrument
  (:mod:`metrocloud.formats.evidence`, docs/forensics.md): every statement about it with an
  inclusion proof to one signed tree head, the lake extract of its readings and the
  timeline, in one file that ``metrocloud evidence verify`` checks with no node running.

Who: an authority, or the instrument's owner (its manufacturer) or operator
(:mod:`metrocloud.services.visibility` says who those are). Notified bodies and grantees read
the instrument's records through the other endpoints, not its forensic record, which holds
the access log of its owners. A read by anyone but the owner and the operator lands in their
access log (action ``forensics.timeline`` or ``evidence.export``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.formats.evidence import (
    EXTRACT_SCHEMA,
    BundleContents,
    BundleStatement,
    encode_bundle,
    extract_parquet,
    summarize_readings,
    verify_bundle,
)
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.lake.manifest import MANIFEST_NAME
from metrocloud.ledger import SignedTreeHead
from metrocloud.services._forensics_registry import (
    Entry,
    LedgerPart,
    Window,
    collect,
    instant,
    instrument_summary,
)
from metrocloud.services.common import Actor, log_reads
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.services.visibility import GRANT_RULE, refuse_node_admin

__all__ = [
    "FORENSIC_RULE",
    "ExportedBundle",
    "Progress",
    "Timeline",
    "build_bundle",
    "export_bundle",
    "node_actor",
    "timeline",
]

FORENSIC_RULE = (
    "forensic record: an authority, the instrument's owner or its operator "
    f"(docs/forensics.md; {GRANT_RULE})"
)

#: ``progress(what, done, total)``
Progress = Callable[[str, int, int], None]


def _silent(_what: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """An instrument's forensic timeline over ``window``, entries in time order."""

    instrument: dict[str, Any]
    window: Window
    entries: tuple[Entry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "window": self.window.to_json(),
            "entries": [e.to_json() for e in self.entries],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportedBundle:
    """An evidence bundle, verified by this node's own verifier before it is handed out."""

    data: bytes
    instrument_id: str
    statements: int
    readings: int
    tree_size: int
    sha256: str


def node_actor(node: Node) -> Actor:
    """The node itself as the authority that runs it (the local CLI, with the node's key)."""
    return Actor(party_id=node.node_id, role=PartyRole.AUTHORITY, country=node.country)


def _check_reader(actor: Actor, row: Any) -> None:
    refuse_node_admin(actor)
    if actor.role is PartyRole.AUTHORITY:
        return
    if actor.party_id in (row.manufacturer_id, row.operator_id):
        return
    raise Forbidden(
        f"{actor.party_id} may not read the forensic record of instrument {row.id}: only an "
        "authority, its manufacturer and its operator may",
        rule=FORENSIC_RULE,
    )


def _window(start: datetime | None, end: datetime | None) -> Window:
    try:
        lo = None if start is None else instant(start)
        hi = None if end is None else instant(end)
    except OverflowError:
        raise InvalidInput(
            f"window {start} to {end} lies outside the representable UTC times"
        ) from None
    if lo is not None and hi is not None and hi <= lo:
        raise InvalidInput(f"end {hi.isoformat()} must be after start {lo.isoformat()}")
    return Window(start=lo, end=hi)


def _registry(
    node: Node, actor: Actor, instrument_id: str, window: Window, action: str
) -> tuple[Any, LedgerPart, SignedTreeHead]:
    """The registry part in one transaction, the read logged in it; and the head."""
    with node.db.write() as conn:
        row = instrument_row(conn, instrument_id)
        _check_reader(actor, row)
        head = node.log.latest_head(conn)
        if head is None:  # pragma: no cover - an instrument's registration signed a head
            raise NotFound(f"log {node.log.log_id} has no signed tree head yet")
        part = collect(conn, node.log, row, head.tree_size, window)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            action,
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
        )
    return row, part, head


def _readings(node: Node, instrument_id: str, window: Window) -> pa.Table:
    """The instrument's readings in the window from the lake (:data:`EXTRACT_SCHEMA`)."""
    root = node.settings.lake_path()
    if not (root / MANIFEST_NAME).exists():  # no reading has arrived yet
        return EXTRACT_SCHEMA.empty_table()
    engine = DuckDBEngine(Lake.open(root).snapshot(), memory_limit="512MiB", threads=1)
    try:
        table = engine.instrument_readings(instrument_id, None, window.start, window.end)
    finally:
        engine.close()
    return table.select(EXTRACT_SCHEMA.names).cast(EXTRACT_SCHEMA)


def _measurements(table: pa.Table) -> list[Entry]:
    return [
        Entry(at=instant(s["first_t"]), type="measurements", details=s)
        for s in summarize_readings(table)
    ]


def _assemble(row: Any, window: Window, entries: list[Entry]) -> Timeline:
    return Timeline(
        instrument=instrument_summary(row),
        window=window,
        entries=tuple(sorted(entries, key=Entry.sort_key)),
    )


def timeline(
    node: Node,
    actor: Actor,
    instrument_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Timeline:
    """The instrument's forensic timeline in ``[start, end)`` (times without a zone: UTC)."""
    window = _window(start, end)
    row, part, _head = _registry(node, actor, instrument_id, window, "forensics.timeline")
    readings = _readings(node, instrument_id, window)
    return _assemble(row, window, [*part.timeline, *_measurements(readings)])


def export_bundle(
    node: Node,
    actor: Actor,
    instrument_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
) -> ExportedBundle:
    """The evidence bundle of the instrument, in memory, checked by :func:`verify_bundle`
    under this node's key before it is returned."""
    step = progress or _silent
    window = _window(start, end)
    row, part, head = _registry(node, actor, instrument_id, window, "evidence.export")
    step("registry", 1, 1)  # the first step reported: the export is authorized and possible
    leaves = sorted(part.entries)
    statements = []
    with node.db.read() as conn:
        for done, leaf in enumerate(leaves, 1):
            path = node.log.inclusion_proof(conn, leaf, head.tree_size)
            statements.append(
                BundleStatement(leaf_index=leaf, entry=part.entries[leaf], path=tuple(path))
            )
            step("proofs", done, len(leaves))
    step("readings", 0, 1)
    readings = _readings(node, instrument_id, window)
    step("readings", 1, 1)
    story = _assemble(row, window, [*part.timeline, *_measurements(readings)])
    w = window.to_json()
    data = encode_bundle(
        BundleContents(
            instrument_id=row.id,
            country=node.country,
            created_at=node.timestamp(),
            created_by=actor.party_id,
            start=w["start"],
            end=w["end"],
            head=head,
            statements=statements,
            readings=extract_parquet(readings),
            readings_rows=readings.num_rows,
            timeline=story.to_json(),
        ),
        node.key,
    )
    step("self-check", 0, 1)
    report = verify_bundle(data, trusted_key=node.key.public_key)
    if not report.ok:  # pragma: no cover - a bug of this node, never the reader's fault
        failed = report.failure
        raise InvalidInput(
            f"the bundle this node built fails its own check ({failed.number if failed else '?'})"
            f": {failed.detail if failed else ''}"
        )
    step("self-check", 1, 1)
    return ExportedBundle(
        data=data,
        instrument_id=row.id,
        statements=len(statements),
        readings=readings.num_rows,
        tree_size=head.tree_size,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def build_bundle(
    node: Node,
    actor: Actor,
    instrument_id: str,
    out_path: Path,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
) -> ExportedBundle:
    """Write the evidence bundle to ``out_path`` (atomically: a failed export leaves no file)."""
    bundle = export_bundle(node, actor, instrument_id, start=start, end=end, progress=progress)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(bundle.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InvalidInput(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return bundle
