"""Evidence bundles: one file that proves what a node holds about one instrument, checked
offline with no node and no database (``metrocloud evidence verify``).

A bundle (format ``metrocloud-evidence-v1``, docs/forensics.md) is a canonical stored ZIP
(:mod:`metrocloud.formats._evidence_zip`) of these members, in this order:

* ``manifest.json``: RFC 8785 canonical JSON naming the instrument, the node (id, country,
  key id, algorithm, SubjectPublicKeyInfo), who made it and when, the window, the tree size,
  the counts, and every other member with its SHA-256 and size;
* ``manifest.sig``: the node key's signature over ``b"metrocloud-evidence-manifest-v1\\x00"``
  followed by the manifest bytes;
* the manifest's members, sorted by name: ``ledger/entries/<leaf>.json`` (each the exact
  bytes of one ledger entry, a signed statement), ``ledger/head.json`` (a signed tree head),
  ``ledger/proofs.json`` (an RFC 9162 inclusion proof of every entry to that head),
  ``readings.parquet`` (the lake's readings of the instrument in the window) and
  ``timeline.json``.

The signature covers the manifest, the manifest covers every other member's hash, and the
container has exactly one byte form for its members: any changed byte fails
:func:`verify_bundle`. It checks, in this order (:data:`CHECKS`; the steps are tagged
``# (n):`` in :mod:`metrocloud.formats._evidence_steps`):

1. the container is canonical: re-encoded from its members it is byte for byte the input;
2. the manifest is canonical JSON of format v1; its node id derives from its key; the key
   is the pinned one when one is given;
3. the members are exactly the manifest's, in its order, each of its SHA-256 and size;
4. the manifest signature holds under the node key;
5. the signed tree head holds under the node key, for the node's log and the manifest's size;
6. every statement is a canonical envelope signed by the node key;
7. every statement is in the log: its RFC 9162 inclusion proof leads to the head's root;
8. the statements concern the instrument: its registration, events and declarations, its
   certificate's statements, and the admissions of the parties that signed them;
9. the readings extract parses with pyarrow with the v1 schema, the manifest's row count,
   only the instrument's readings, all inside the window;
10. the timeline is the instrument's, in time order, every entry that cites a leaf cites a
    statement of the bundle about the same record, and its measurement summary is the
    extract's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from metrocloud.domain.errors import InvalidInput, MetrocloudError
from metrocloud.formats import _evidence_zip as container
from metrocloud.formats._evidence_checks import BUNDLE_RULE, EXTRACT_SCHEMA, summarize_readings
from metrocloud.formats._evidence_format import (
    FORMAT,
    HEAD,
    MANIFEST,
    MANIFEST_DOMAIN,
    PROOFS,
    READINGS,
    SIGNATURE,
    TIMELINE,
    entry_name,
    node_id_for,
    sign_manifest,
)
from metrocloud.formats._evidence_steps import STEPS, Skip, State
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "BUNDLE_RULE",
    "CHECKS",
    "EXTRACT_SCHEMA",
    "FORMAT",
    "MANIFEST_DOMAIN",
    "MAX_BUNDLE_BYTES",
    "BundleCheck",
    "BundleContents",
    "BundleReport",
    "BundleStatement",
    "encode_bundle",
    "entry_name",
    "extract_parquet",
    "node_id_for",
    "summarize_readings",
    "verify_bundle",
]

#: the verifier reads a bundle whole; a bigger file is refused before it is read
MAX_BUNDLE_BYTES: Final = 2**32

#: what :func:`verify_bundle` checks, in order
CHECKS: Final = (
    (1, "container is canonical (one byte form for its members)"),
    (2, "manifest is canonical and names the instrument and the node key"),
    (3, "members are exactly the manifest's, each of its SHA-256 and size"),
    (4, "manifest signature holds under the node key"),
    (5, "signed tree head holds under the node key"),
    (6, "every statement is canonical and signed by the node key"),
    (7, "every statement is in the log (RFC 9162 inclusion proof)"),
    (8, "the statements concern the instrument"),
    (9, "readings extract parses with the v1 schema, rows and instrument"),
    (10, "timeline agrees with the statements and the readings"),
)


def extract_parquet(table: pa.Table) -> bytes:
    """The Parquet bytes of a readings extract, cast to :data:`EXTRACT_SCHEMA`."""
    buffer = io.BytesIO()
    pq.write_table(
        table.select(EXTRACT_SCHEMA.names).cast(EXTRACT_SCHEMA), buffer, compression="zstd"
    )
    return buffer.getvalue()


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleStatement:
    """One ledger entry of a bundle and its inclusion proof to the bundle's tree head."""

    leaf_index: int
    entry: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True, kw_only=True)
class BundleContents:
    """What a node puts into a bundle; :func:`encode_bundle` makes the file of it."""

    instrument_id: str
    country: str
    created_at: str
    created_by: str
    start: str | None
    end: str | None
    head: SignedTreeHead
    statements: Sequence[BundleStatement]
    readings: bytes  # Parquet (extract_parquet)
    readings_rows: int
    timeline: Mapping[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_bundle(contents: BundleContents, key: PrivateKey) -> bytes:
    """The bundle file of ``contents``, its manifest signed with the node ``key``."""
    node_id = node_id_for(contents.country, key.key_id)
    if contents.head.log_id != node_id or contents.head.key_id != key.key_id:
        raise InvalidInput(
            f"tree head of log {contents.head.log_id} (key {contents.head.key_id}) is not a "
            f"head of node {node_id} (key {key.key_id})"
        )
    statements = sorted(contents.statements, key=lambda s: s.leaf_index)
    members = {entry_name(s.leaf_index): s.entry for s in statements}
    members[HEAD] = canonical_json(contents.head.to_json())
    members[PROOFS] = canonical_json(
        {
            "tree_size": contents.head.tree_size,
            "proofs": [
                {"leaf_index": s.leaf_index, "path": [p.hex() for p in s.path]} for s in statements
            ],
        }
    )
    members[READINGS] = contents.readings
    members[TIMELINE] = canonical_json(contents.timeline)
    names = sorted(members)
    manifest = canonical_json(
        {
            "format": FORMAT,
            "instrument_id": contents.instrument_id,
            "node": {
                "node_id": node_id,
                "country": contents.country,
                "key_id": key.key_id,
                "alg": key.algorithm.value,
                "public_key": key.public_key.to_spki_b64(),
            },
            "created_at": contents.created_at,
            "created_by": contents.created_by,
            "window": {"start": contents.start, "end": contents.end},
            "tree_size": contents.head.tree_size,
            "statements": len(statements),
            "readings": contents.readings_rows,
            "members": [
                {"name": n, "sha256": _sha256(members[n]), "size": len(members[n])} for n in names
            ],
        }
    )
    return container.pack(
        [
            (MANIFEST, manifest),
            (SIGNATURE, sign_manifest(key, manifest)),
            *((n, members[n]) for n in names),
        ]
    )


# -- verifying --------------------------------------------------------------------------------

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, kw_only=True, slots=True)
class BundleCheck:
    """The result of one check: ``pass``, ``fail`` (with the evidence) or ``skip``."""

    number: int
    title: str
    status: Status
    detail: str
    rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "rule": self.rule,
        }


@dataclass(frozen=True, kw_only=True)
class BundleReport:
    """The outcome of :func:`verify_bundle`: every check of :data:`CHECKS`, in order."""

    source: str
    checks: tuple[BundleCheck, ...]
    instrument_id: str | None = None
    node_id: str | None = None
    key_id: str | None = None
    key_pinned: bool = False
    tree_size: int | None = None
    statements: int = 0
    readings: int = 0

    @property
    def ok(self) -> bool:
        """True when every check passed: the only verdict that counts as verified."""
        return len(self.checks) == len(CHECKS) and all(c.status == "pass" for c in self.checks)

    @property
    def failure(self) -> BundleCheck | None:
        """The first check that did not pass."""
        return next((c for c in self.checks if c.status != "pass"), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "verdict": "valid" if self.ok else "invalid",
            "instrument_id": self.instrument_id,
            "node_id": self.node_id,
            "key_id": self.key_id,
            "key_pinned": self.key_pinned,
            "tree_size": self.tree_size,
            "statements": self.statements,
            "readings": self.readings,
            "checks": [c.to_json() for c in self.checks],
        }


def _read(source: Path) -> bytes:
    try:
        size = source.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise InvalidInput(
                f"{source} has {size} bytes; a v1 bundle has at most {MAX_BUNDLE_BYTES}",
                rule=BUNDLE_RULE,
            )
        return source.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from None


def _run(number: int, title: str, state: State) -> BundleCheck:
    status: Status = "pass"
    rule = None
    try:
        detail = STEPS[number](state)
    except Skip as exc:
        status, detail = "skip", str(exc)
    except MetrocloudError as exc:
        status, detail, rule = "fail", exc.message, exc.rule
    except Exception as exc:  # untrusted input: whatever breaks a step, the check fails
        status, rule = "fail", BUNDLE_RULE
        detail = f"malformed bundle: {type(exc).__name__}: {exc}"[:500]
    return BundleCheck(number=number, title=title, status=status, detail=detail, rule=rule)


def verify_bundle(source: Path | bytes, *, trusted_key: PublicKey | None = None) -> BundleReport:
    """Check an evidence bundle offline; every check of :data:`CHECKS` gets a result.

    ``trusted_key`` pins the node key; without it the key the bundle carries is used, and
    the report names its key id for the reader to compare with the node's published one
    (``GET /api/v1/node``). A file that cannot be read raises :class:`InvalidInput`;
    anything the file holds is answered with a report.
    """
    if isinstance(source, Path):
        data, name = _read(source), str(source)
    else:
        data, name = bytes(source), "<bytes>"
    state = State(data=data, pinned=trusted_key)
    checks = tuple(_run(number, title, state) for number, title in CHECKS)
    m = state.manifest or {}
    node = m.get("node") or {}
    return BundleReport(
        source=name,
        checks=checks,
        instrument_id=m.get("instrument_id"),
        node_id=node.get("node_id"),
        key_id=state.key.key_id if state.key else None,
        key_pinned=trusted_key is not None,
        tree_size=state.head.tree_size if state.head else None,
        statements=len(state.payloads or {}),
        readings=state.extract.num_rows if state.extract is not None else 0,
    )
