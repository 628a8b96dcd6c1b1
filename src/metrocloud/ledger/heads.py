"""Signed tree heads, and the check a client runs between two of them. Pure, no I/O.

The signed bytes are ``b"metrocloud-tree-head-v1\\x00"`` followed by the RFC 8785 canonical
JSON of ``{"log_id", "tree_size", "root_hash" (lowercase hex), "timestamp" (ms)}``; the domain
prefix keeps a head signature from ever being valid for another kind of statement. (RFC 9162
§4.10 signs a TLS-encoded ``TreeHeadDataV2``; the platform signs JSON so that every signed
object it issues shares one canonical form — the tree itself is exactly RFC 9162.)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.ledger.merkle import HASH_SIZE, verify_consistency
from metrocloud.trust.canonical import canonical_json

if TYPE_CHECKING:
    from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "TREE_HEAD_DOMAIN",
    "SignedTreeHead",
    "check_consistency_between",
    "sign_tree_head",
]

#: prefix of the signed bytes of a tree head
TREE_HEAD_DOMAIN = b"metrocloud-tree-head-v1\x00"

_JSON_FIELDS = frozenset({"log_id", "tree_size", "root_hash", "timestamp", "key_id", "signature"})


@dataclass(frozen=True, kw_only=True)
class SignedTreeHead:
    """A log's signed statement "my first ``tree_size`` entries have Merkle root ``root_hash``"."""

    log_id: str
    tree_size: int
    root_hash: bytes
    timestamp: int  # ms since the Unix epoch
    key_id: str
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.log_id, str) or not self.log_id:
            raise InvalidInput(f"tree head log_id must be a non-empty string, got {self.log_id!r}")
        for name in ("tree_size", "timestamp"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise InvalidInput(f"tree head {name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise InvalidInput(
                f"tree head root_hash must be {HASH_SIZE} bytes, got {self.root_hash!r:.80} "
                "(RFC 9162 §2.1.1)"
            )
        if not isinstance(self.key_id, str) or not isinstance(self.signature, bytes):
            raise InvalidInput("tree head key_id must be a string and signature bytes")

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return TREE_HEAD_DOMAIN + canonical_json(
            {
                "log_id": self.log_id,
                "tree_size": self.tree_size,
                "root_hash": self.root_hash.hex(),
                "timestamp": self.timestamp,
            }
        )

    def verify(self, public_key: PublicKey) -> None:
        """Raise :class:`VerificationError` unless ``public_key`` signed this head."""
        if self.key_id != public_key.key_id:
            raise VerificationError(
                f"tree head of log {self.log_id!r} at size {self.tree_size} names signing key "
                f"{self.key_id!r}, but the key to check with is {public_key.key_id!r}"
            )
        try:
            public_key.verify(self.signature, self.signed_bytes())
        except VerificationError as exc:
            raise VerificationError(
                f"tree head of log {self.log_id!r} at size {self.tree_size}: {exc}", rule=exc.rule
            ) from exc

    def to_json(self) -> dict[str, object]:
        return {
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SignedTreeHead:
        """Parse :meth:`to_json` output; InvalidInput names the offending field."""
        if not isinstance(data, Mapping) or set(data) != _JSON_FIELDS:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InvalidInput(f"tree head JSON needs exactly {sorted(_JSON_FIELDS)}, got {got}")
        root_hex, sig_b64 = data["root_hash"], data["signature"]
        if not isinstance(root_hex, str) or not isinstance(sig_b64, str):
            raise InvalidInput("tree head root_hash (hex) and signature (base64) must be strings")
        try:
            root = bytes.fromhex(root_hex)
        except ValueError:
            raise InvalidInput(f"tree head root_hash is not hex: {root_hex!r:.80}") from None
        try:
            signature = base64.b64decode(sig_b64, validate=True)
        except binascii.Error:
            raise InvalidInput(f"tree head signature is not base64: {sig_b64!r:.80}") from None
        return cls(
            log_id=data["log_id"],  # type: ignore[arg-type]  # checked in __post_init__
            tree_size=data["tree_size"],  # type: ignore[arg-type]
            root_hash=root,
            timestamp=data["timestamp"],  # type: ignore[arg-type]
            key_id=data["key_id"],  # type: ignore[arg-type]
            signature=signature,
        )


def sign_tree_head(
    signer: PrivateKey, *, log_id: str, tree_size: int, root_hash: bytes, timestamp: int
) -> SignedTreeHead:
    """A head over ``(log_id, tree_size, root_hash, timestamp)`` signed by ``signer``."""
    unsigned = SignedTreeHead(
        log_id=log_id,
        tree_size=tree_size,
        root_hash=root_hash,
        timestamp=timestamp,
        key_id=signer.public_key.key_id,
        signature=b"",
    )
    return SignedTreeHead(
        log_id=log_id,
        tree_size=tree_size,
        root_hash=root_hash,
        timestamp=timestamp,
        key_id=unsigned.key_id,
        signature=signer.sign(unsigned.signed_bytes()),
    )


def check_consistency_between(
    old: SignedTreeHead, new: SignedTreeHead, proof: Sequence[bytes], public_key: PublicKey
) -> None:
    """What a client or auditor runs before trusting ``new`` after having seen ``old``.

    Checks both signatures, that both heads are of the same log and ``new`` is not smaller,
    and the consistency proof (RFC 9162 §2.1.4.2). A log that rewrote any of the first
    ``old.tree_size`` entries cannot pass, however consistently it recomputed and re-signed
    its own storage. Raises :class:`VerificationError`.
    """
    old.verify(public_key)
    new.verify(public_key)
    if old.log_id != new.log_id:
        raise VerificationError(
            f"tree heads are of different logs: {old.log_id!r} and {new.log_id!r}"
        )
    if new.tree_size < old.tree_size:
        raise VerificationError(
            f"log {new.log_id!r} shrank: the newer head has size {new.tree_size}, an earlier "
            f"one {old.tree_size} (RFC 9162 §2.1.4: logs are append-only)"
        )
    try:
        verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
    except VerificationError as exc:
        raise VerificationError(
            f"log {new.log_id!r} is not append-only between sizes {old.tree_size} and "
            f"{new.tree_size}: {exc}",
            rule=exc.rule,
        ) from exc
