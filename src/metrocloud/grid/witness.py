"""Witnessing: co-signed tree heads, the heads a node saw of each peer, and split views.

Each node keeps every signed tree head it saw of every other node (``grid_heads``): fetched
itself or gossiped by a peer (``observed_by``). The *verified* heads of one origin form a
chain: no two of one size with different roots, each consistent (RFC 9162 §2.1.4) with the
next larger one. A new head joins the chain once it is checked against its neighbours in
size; a head that cannot join is a **split view**: the origin showed two histories, and the
two heads it signed (plus the failed proof) are the evidence.

A witness co-signs the heads it verified: ``COSIGNATURE_DOMAIN`` + the canonical JSON of
``{"witness", "log_id", "tree_size", "root_hash", "timestamp", "signed_at"}`` with its node
key. The origin stores the cosignatures it receives and serves them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.ledger.merkle import verify_consistency
from metrocloud.store.schema import grid_cosignatures, grid_heads
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey, PublicKey

__all__ = [
    "COSIGNATURE_DOMAIN",
    "Cosignature",
    "ObservedHead",
    "add_observation",
    "check_link",
    "cosign",
    "cosignatures",
    "mark_verified",
    "neighbours",
    "observations",
    "prune_heads",
    "same_size_conflict",
    "store_cosignature",
]

COSIGNATURE_DOMAIN = b"metrocloud-grid-cosignature-v1\x00"
_RULE = "metrocloud grid witnessing v1 (docs/grid.md#witnessing)"


@dataclass(frozen=True, kw_only=True, slots=True)
class Cosignature:
    """A witness's signature over another node's tree head."""

    witness: str
    log_id: str
    tree_size: int
    root_hash: str  # lowercase hex
    timestamp: int
    signed_at: str
    key_id: str
    alg: KeyAlgorithm
    sig: bytes

    def signed_bytes(self) -> bytes:
        return COSIGNATURE_DOMAIN + canonical_json(
            {
                "witness": self.witness,
                "log_id": self.log_id,
                "tree_size": self.tree_size,
                "root_hash": self.root_hash,
                "timestamp": self.timestamp,
                "signed_at": self.signed_at,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "witness": self.witness,
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "alg": self.alg.value,
            "sig": base64.b64encode(self.sig).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cosignature:
        try:
            return cls(
                witness=str(data["witness"]),
                log_id=str(data["log_id"]),
                tree_size=int(data["tree_size"]),
                root_hash=str(data["root_hash"]),
                timestamp=int(data["timestamp"]),
                signed_at=str(data["signed_at"]),
                key_id=str(data["key_id"]),
                alg=KeyAlgorithm(data["alg"]),
                sig=base64.b64decode(str(data["sig"]), validate=True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed cosignature: {exc}", rule=_RULE) from None

    def verify(self, key: PublicKey) -> None:
        if self.key_id != key.key_id:
            raise VerificationError(
                f"cosignature of {self.witness} names key {self.key_id[:16]}..., its admitted "
                f"key is {key.key_id[:16]}...",
                rule=_RULE,
            )
        try:
            key.verify(self.sig, self.signed_bytes())
        except VerificationError as exc:
            raise VerificationError(
                f"cosignature of {self.witness} over {self.log_id} at size {self.tree_size}: {exc}",
                rule=_RULE,
            ) from None

    def covers(self, head: SignedTreeHead) -> bool:
        return (
            self.log_id == head.log_id
            and self.tree_size == head.tree_size
            and self.root_hash == head.root_hash.hex()
            and self.timestamp == head.timestamp
        )


def cosign(head: SignedTreeHead, key: PrivateKey, *, witness: str, signed_at: str) -> Cosignature:
    unsigned = Cosignature(
        witness=witness,
        log_id=head.log_id,
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        timestamp=head.timestamp,
        signed_at=signed_at,
        key_id=key.key_id,
        alg=key.algorithm,
        sig=b"-",
    )
    return replace(unsigned, sig=key.sign(unsigned.signed_bytes()))


# -- the heads seen of each origin ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ObservedHead:
    head: SignedTreeHead
    observer: str
    verified: bool
    observed_at: str


def observations(conn: Connection, origin: str) -> list[ObservedHead]:
    rows = conn.execute(
        select(grid_heads)
        .where(grid_heads.c.origin_id == origin)
        .order_by(grid_heads.c.tree_size, grid_heads.c.observed_at)
    ).all()
    return [
        ObservedHead(
            head=SignedTreeHead.from_json(json.loads(r.head)),
            observer=r.observed_by,
            verified=bool(r.verified),
            observed_at=r.observed_at,
        )
        for r in rows
    ]


def add_observation(
    conn: Connection,
    origin: str,
    head: SignedTreeHead,
    *,
    observer: str,
    verified: bool,
    at: str,
) -> None:
    """Record that ``observer`` saw ``head`` (again: refresh, and mark verified if so)."""
    key = (
        grid_heads.c.origin_id == origin,
        grid_heads.c.tree_size == head.tree_size,
        grid_heads.c.root_hash == head.root_hash.hex(),
        grid_heads.c.observed_by == observer,
    )
    values: dict[str, Any] = {"observed_at": at}
    if verified:
        values["verified"] = True
    if conn.execute(update(grid_heads).where(*key).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(
                insert(grid_heads).values(
                    origin_id=origin,
                    tree_size=head.tree_size,
                    root_hash=head.root_hash.hex(),
                    observed_by=observer,
                    head=json.dumps(head.to_json(), sort_keys=True),
                    verified=verified,
                    observed_at=at,
                )
            )
    except IntegrityError:
        conn.execute(update(grid_heads).where(*key).values(**values))


def mark_verified(conn: Connection, origin: str, head: SignedTreeHead) -> None:
    conn.execute(
        update(grid_heads)
        .where(
            grid_heads.c.origin_id == origin,
            grid_heads.c.tree_size == head.tree_size,
            grid_heads.c.root_hash == head.root_hash.hex(),
        )
        .values(verified=True)
    )


def same_size_conflict(
    known: Sequence[SignedTreeHead], head: SignedTreeHead
) -> SignedTreeHead | None:
    """A known head of the same size with another root: the origin signed two histories."""
    for k in known:
        if k.tree_size == head.tree_size and k.root_hash != head.root_hash:
            return k
    return None


def neighbours(
    verified: Sequence[SignedTreeHead], size: int
) -> tuple[SignedTreeHead | None, SignedTreeHead | None]:
    """The largest verified head below ``size`` and the smallest above it."""
    below = [h for h in verified if h.tree_size < size]
    above = [h for h in verified if h.tree_size > size]
    return (
        max(below, key=lambda h: h.tree_size) if below else None,
        min(above, key=lambda h: h.tree_size) if above else None,
    )


def check_link(older: SignedTreeHead, newer: SignedTreeHead, proof: Sequence[bytes]) -> str | None:
    """None if ``proof`` shows ``newer`` extends ``older`` (RFC 9162 §2.1.4.2); else why not.

    The signatures are checked by the caller (both heads are the origin's)."""
    if older.tree_size == 0:
        return None  # every log extends the empty one
    try:
        verify_consistency(
            older.tree_size, newer.tree_size, older.root_hash, newer.root_hash, proof
        )
    except VerificationError as exc:
        return (
            f"the head at size {newer.tree_size} (root {newer.root_hash.hex()[:16]}...) does "
            f"not extend the head at size {older.tree_size} (root "
            f"{older.root_hash.hex()[:16]}...): {exc}"
        )
    return None


def prune_heads(conn: Connection, *, unverified_before: str) -> int:
    """Keep, per origin, the largest verified head (consistency is transitive: a later head
    is checked against it) and the unverified heads newer than ``unverified_before``."""
    largest = {
        r.origin_id: r.size
        for r in conn.execute(
            select(grid_heads.c.origin_id, func.max(grid_heads.c.tree_size).label("size"))
            .where(grid_heads.c.verified.is_(True))
            .group_by(grid_heads.c.origin_id)
        )
    }
    dropped = 0
    for origin, size in largest.items():
        dropped += (
            conn.execute(
                delete(grid_heads).where(
                    grid_heads.c.origin_id == origin,
                    grid_heads.c.verified.is_(True),
                    grid_heads.c.tree_size < size,
                )
            ).rowcount
            or 0
        )
    dropped += (
        conn.execute(
            delete(grid_heads).where(
                grid_heads.c.verified.is_(False), grid_heads.c.observed_at < unverified_before
            )
        ).rowcount
        or 0
    )
    return dropped


# -- cosignatures ---------------------------------------------------------------------------


def store_cosignature(conn: Connection, origin: str, cos: Cosignature) -> bool:
    """Keep ``cos`` (over ``origin``'s head); False if it was kept already."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(grid_cosignatures).values(
                    origin_id=origin,
                    tree_size=cos.tree_size,
                    root_hash=cos.root_hash,
                    witness_id=cos.witness,
                    cosignature=json.dumps(cos.to_json(), sort_keys=True),
                    signed_at=cos.signed_at,
                )
            )
    except IntegrityError:
        return False
    return True


def cosignatures(
    conn: Connection, origin: str, *, tree_size: int | None = None, limit: int = 100
) -> list[Cosignature]:
    """Cosignatures over ``origin``'s heads, newest size first."""
    q = select(grid_cosignatures.c.cosignature).where(grid_cosignatures.c.origin_id == origin)
    if tree_size is not None:
        q = q.where(grid_cosignatures.c.tree_size == tree_size)
    q = q.order_by(grid_cosignatures.c.tree_size.desc(), grid_cosignatures.c.witness_id).limit(
        limit
    )
    return [Cosignature.from_json(json.loads(r.cosignature)) for r in conn.execute(q)]
