"""The numbered checks of :func:`metrocloud.formats.evidence.verify_bundle`, one function
each, tagged ``# (n):`` as in :data:`metrocloud.formats.evidence.CHECKS`.

Each step reads what earlier steps left in a :class:`State` and either returns a one-line
summary of what held, raises :class:`~metrocloud.domain.errors.VerificationError` with the
evidence, or raises :class:`Skip` when an earlier step it needs did not get far enough.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats import _evidence_zip as container
from metrocloud.formats._evidence_checks import (
    BUNDLE_RULE,
    check_concern,
    check_extract,
    check_timeline,
    parse_json,
)
from metrocloud.formats._evidence_format import (
    ENTRY,
    FORMAT,
    HEAD,
    MANIFEST,
    PROOFS,
    READINGS,
    REQUIRED,
    SIGNATURE,
    TIMELINE,
    node_id_for,
    verify_manifest_signature,
)
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.ledger.merkle import leaf_hash, verify_inclusion
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import SignedStatement

__all__ = ["STEPS", "Skip", "State"]

T = TypeVar("T")
_MANIFEST_KEYS = frozenset(
    {
        "format",
        "instrument_id",
        "node",
        "created_at",
        "created_by",
        "window",
        "tree_size",
        "statements",
        "readings",
        "members",
    }
)
_NODE_KEYS = frozenset({"node_id", "country", "key_id", "alg", "public_key"})


class Skip(Exception):
    """A check that cannot run because one it builds on failed."""


@dataclass
class State:
    data: bytes
    pinned: PublicKey | None
    members: list[tuple[str, bytes]] | None = None
    manifest: dict[str, Any] | None = None
    key: PublicKey | None = None
    head: SignedTreeHead | None = None
    entries: dict[int, bytes] = field(default_factory=dict)
    payloads: dict[int, dict[str, Any]] | None = None
    extract: pa.Table | None = None

    def member(self, name: str) -> bytes:
        found = [d for n, d in self.members or () if n == name]
        if len(found) != 1:
            raise _fail(f"bundle has {len(found)} members named {name}, expected 1")
        return found[0]


def _need(value: T | None, what: str) -> T:
    if value is None:
        raise Skip(f"needs {what}")
    return value


def _fail(message: str, rule: str = BUNDLE_RULE) -> VerificationError:
    return VerificationError(message, rule=rule)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _instant(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _fail(f"manifest window bound {value!r:.60} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _fail(f"manifest window bound {value!r:.60} has no time zone")
    return parsed


# (1): the container
def _container(s: State) -> str:
    s.members = container.read(s.data)
    container.check_canonical(s.data, s.members)
    return f"{len(s.members)} members, {len(s.data)} bytes, canonical"


def _manifest_fields(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict) or set(m) != _MANIFEST_KEYS:
        got = sorted(m) if isinstance(m, dict) else type(m).__name__
        raise _fail(f"manifest needs exactly {sorted(_MANIFEST_KEYS)}, got {got}")
    if m["format"] != FORMAT:
        raise _fail(f"manifest format is {m['format']!r:.60}, expected {FORMAT!r}")
    node = m["node"]
    if not isinstance(node, dict) or set(node) != _NODE_KEYS:
        raise _fail(f"manifest node needs exactly {sorted(_NODE_KEYS)}")
    if not all(isinstance(v, str) for v in node.values()):
        raise _fail("manifest node fields must be strings")
    for name in ("instrument_id", "created_at", "created_by"):
        if not isinstance(m[name], str):
            raise _fail(f"manifest {name} must be a string")
    for name in ("tree_size", "statements", "readings"):
        if type(m[name]) is not int or m[name] < 0:
            raise _fail(f"manifest {name} must be an integer >= 0")
    window = m["window"]
    if not isinstance(window, dict) or set(window) != {"start", "end"}:
        raise _fail("manifest window needs exactly start and end")
    for bound in window.values():
        if bound is not None:
            _instant(bound)
    return m


# (2): the manifest, the node key and the trust in it
def _manifest(s: State) -> str:
    members = _need(s.members, "a readable container (1)")
    if [n for n, _ in members[:2]] != [MANIFEST, SIGNATURE]:
        raise _fail(f"the first members must be {MANIFEST} and {SIGNATURE}")
    m = _manifest_fields(parse_json(members[0][1], MANIFEST))
    s.manifest = m
    node = m["node"]
    try:
        carried = PublicKey.from_spki_b64(node["public_key"])
    except InvalidInput as exc:
        raise _fail(f"manifest node public_key is not a key: {exc.message}") from None
    s.key = s.pinned or carried
    if carried.key_id != node["key_id"] or carried.algorithm.value != node["alg"]:
        raise _fail(
            f"manifest names key {node['key_id']:.64} ({node['alg']:.20}), its public key is "
            f"{carried.key_id} ({carried.algorithm.value})"
        )
    expected_id = node_id_for(node["country"], carried.key_id)
    if node["node_id"] != expected_id:
        raise _fail(f"node id {node['node_id']!r:.60} does not derive from its key: {expected_id}")
    if s.pinned is not None and s.pinned.key_id != carried.key_id:
        raise _fail(
            f"bundle is signed by node key {carried.key_id}, the trusted key is {s.pinned.key_id}",
            rule="node key pinned by the verifier (--trusted-key)",
        )
    how = "pinned" if s.pinned is not None else "carried in the bundle, not pinned"
    return f"instrument {m['instrument_id']}, node {node['node_id']}, key {carried.key_id} ({how})"


# (3): every member listed, hashed and sized
def _members(s: State) -> str:
    m = _need(s.manifest, "a valid manifest (2)")
    listed = m["members"]
    if not isinstance(listed, list) or not all(
        isinstance(x, dict) and set(x) == {"name", "sha256", "size"} for x in listed
    ):
        raise _fail("manifest members must be a list of {name, sha256, size}")
    names = [x["name"] for x in listed]
    if not all(isinstance(n, str) for n in names) or names != sorted(set(names)):
        raise _fail("manifest members must be sorted by name, each once")
    odd = [n for n in names if n not in REQUIRED and ENTRY.fullmatch(n) is None]
    if odd or not set(names) >= REQUIRED:
        raise _fail(
            f"manifest members must be {sorted(REQUIRED)} and ledger entries; odd {odd[:5]}"
        )
    found = _need(s.members, "a readable container (1)")[2:]
    if [n for n, _ in found] != names:
        extra = sorted({n for n, _ in found} - set(names))
        missing = sorted(set(names) - {n for n, _ in found})
        raise _fail(
            f"bundle members differ from the manifest's: not listed {extra[:5]}, missing "
            f"{missing[:5]}" + ("" if extra or missing else " (or in another order)")
        )
    for x, (name, data) in zip(listed, found, strict=True):
        if x["size"] != len(data) or x["sha256"] != _sha256(data):
            raise _fail(
                f"member {name}: the manifest says SHA-256 {str(x['sha256'])[:64]} and "
                f"{x['size']} bytes, found {_sha256(data)} and {len(data)} bytes"
            )
    s.entries = {
        int(match.group(1)): data
        for name, data in found
        if (match := ENTRY.fullmatch(name)) is not None
    }
    return f"{len(names)} members match their SHA-256 and size"


# (4): the manifest signature
def _signature(s: State) -> str:
    key = _need(s.key, "the node key (2)")
    manifest = s.member(MANIFEST)
    verify_manifest_signature(key, parse_json(s.member(SIGNATURE), SIGNATURE), manifest)
    return f"by {key.key_id} ({key.algorithm.value}) over manifest SHA-256 {_sha256(manifest)}"


# (5): the signed tree head
def _head(s: State) -> str:
    key = _need(s.key, "the node key (2)")
    m = _need(s.manifest, "a valid manifest (2)")
    try:
        head = SignedTreeHead.from_json(parse_json(s.member(HEAD), HEAD))
    except InvalidInput as exc:
        raise _fail(f"{HEAD}: {exc.message}") from None
    s.head = head
    head.verify(key)
    if head.log_id != m["node"]["node_id"]:
        raise _fail(f"tree head is of log {head.log_id}, the node is {m['node']['node_id']}")
    if head.tree_size != m["tree_size"]:
        raise _fail(f"tree head has size {head.tree_size}, the manifest says {m['tree_size']}")
    return f"log {head.log_id}, size {head.tree_size}, root {head.root_hash.hex()}"


# (6): every statement, canonical and signed by the node
def _statements(s: State) -> str:
    key = _need(s.key, "the node key (2)")
    m = _need(s.manifest, "a valid manifest (2)")
    if not s.entries:
        raise Skip("needs the ledger entries (3)")

    def resolve(key_id: str) -> PublicKey:
        if key_id != key.key_id:
            raise _fail(f"signed by key {key_id}, not by the node key {key.key_id}")
        return key

    payloads: dict[int, dict[str, Any]] = {}
    for leaf, entry in sorted(s.entries.items()):
        try:
            signed = SignedStatement.from_bytes(entry)
            signed.verify(resolve)
        except VerificationError as exc:
            raise _fail(
                f"statement at leaf {leaf}: {exc.message}", exc.rule or BUNDLE_RULE
            ) from None
        payloads[leaf] = signed.statement.payload()
    if len(payloads) != m["statements"]:
        raise _fail(f"bundle holds {len(payloads)} statements, the manifest says {m['statements']}")
    s.payloads = payloads
    return f"{len(payloads)} statements signed by {key.key_id}"


def _hashes(path: Any, leaf: Any) -> list[bytes]:
    if not isinstance(path, list) or not all(isinstance(h, str) for h in path):
        raise _fail(f"proof of leaf {leaf} is not a list of hex strings")
    try:
        hashes = [bytes.fromhex(h) for h in path]
    except ValueError:
        hashes = []
    if len(hashes) != len(path) or [h.hex() for h in hashes] != path:
        raise _fail(f"proof of leaf {leaf} is not a list of lowercase hex hashes")
    return hashes


# (7): the inclusion of every statement in the log under the head
def _proofs(s: State) -> str:
    head = _need(s.head, "the tree head (5)")
    if not s.entries:
        raise Skip("needs the ledger entries (3)")
    proofs = parse_json(s.member(PROOFS), PROOFS)
    if not isinstance(proofs, dict) or set(proofs) != {"tree_size", "proofs"}:
        raise _fail(f"{PROOFS} needs exactly tree_size and proofs")
    if proofs["tree_size"] != head.tree_size:
        raise _fail(
            f"proofs are to size {proofs['tree_size']!r:.20}, the head's is {head.tree_size}"
        )
    items = proofs["proofs"]
    if not isinstance(items, list) or not all(
        isinstance(p, dict) and set(p) == {"leaf_index", "path"} for p in items
    ):
        raise _fail(f"{PROOFS} proofs must be a list of {{leaf_index, path}}")
    leaves = [p["leaf_index"] for p in items]
    if leaves != sorted(s.entries):
        raise _fail(f"proofs are of leaves {leaves[:8]}, the entries are {sorted(s.entries)[:8]}")
    for p in items:
        leaf = p["leaf_index"]
        hashes = _hashes(p["path"], leaf)
        verify_inclusion(leaf_hash(s.entries[leaf]), leaf, head.tree_size, hashes, head.root_hash)
    return f"{len(items)} inclusion proofs to root {head.root_hash.hex()} at size {head.tree_size}"


# (8): what the statements are about
def _concern(s: State) -> str:
    m = _need(s.manifest, "a valid manifest (2)")
    payloads = _need(s.payloads, "every statement parsed (6)")
    return check_concern(m["instrument_id"], payloads)


# (9): the readings extract
def _readings(s: State) -> str:
    m = _need(s.manifest, "a valid manifest (2)")
    w: Mapping[str, Any] = m["window"]
    start = None if w["start"] is None else _instant(w["start"])
    end = None if w["end"] is None else _instant(w["end"])
    s.extract = check_extract(s.member(READINGS), m["instrument_id"], start, end, m["readings"])
    return f"{s.extract.num_rows} readings of {m['instrument_id']} in the window"


# (10): the timeline
def _timeline(s: State) -> str:
    m = _need(s.manifest, "a valid manifest (2)")
    payloads = _need(s.payloads, "every statement parsed (6)")
    extract = _need(s.extract, "the readings extract (9)")
    timeline = parse_json(s.member(TIMELINE), TIMELINE)
    return check_timeline(timeline, m["instrument_id"], m["window"], payloads, extract)


#: the steps by check number
STEPS: dict[int, Callable[[State], str]] = {
    1: _container,
    2: _manifest,
    3: _members,
    4: _signature,
    5: _head,
    6: _statements,
    7: _proofs,
    8: _concern,
    9: _readings,
    10: _timeline,
}
