"""Projectors of the confidential-exchange statements (services/exchange, docs/exchange.md).

- ``party.encryption_key``: a party publishes an X25519 key for HPKE. The body carries the
  binding the party signed with its registered signing key; the projector checks that
  signature (on every append and on every replay by ``metrocloud audit``) and writes the
  ``party_encryption_keys`` row.
- ``exchange.sent`` and ``exchange.receipt`` are ledger-only: the log proves when the node
  accepted a document (by the digest of its signed header, nothing else of it) and when a
  recipient acknowledged it (its signed receipt, checked here against its registered key).
  The routed documents themselves are operational records, not rebuilt from the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from metrocloud.domain.errors import MetrocloudError, RuleViolation
from metrocloud.store.schema import parties, party_encryption_keys
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.encryption import KeyBinding
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt

__all__ = ["encryption_key_registered", "exchange_receipt", "exchange_sent"]

_RULE = "docs/exchange.md (confidential exchange statements)"
_MESSAGE = re.compile(r"xch-[A-Z]{2}-[0-9A-HJKMNP-TV-Z]{26}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _signing_key(conn: Connection, party_id: str, leaf: int) -> PublicKey:
    row = conn.execute(
        select(parties.c.role, parties.c.public_key).where(parties.c.id == party_id)
    ).first()
    if row is None or row.public_key is None:
        raise RuleViolation(
            f"statement at leaf {leaf} signed by {party_id}, which is not an admitted party "
            "with a registered signing key",
            rule=_RULE,
        )
    if row.role == "node_admin":
        raise RuleViolation(
            f"statement at leaf {leaf}: the node admin takes no part in confidential exchange",
            rule=_RULE,
        )
    return PublicKey.from_spki_b64(row.public_key)


def encryption_key_registered(conn: Connection, p: Mapping[str, Any], leaf: int) -> None:
    key = _signing_key(conn, p["signer"], leaf)
    try:
        binding = KeyBinding.from_json(p["body"]["binding"])
        binding.verify(key)
    except MetrocloudError as exc:
        raise RuleViolation(
            f"encryption-key binding at leaf {leaf} does not hold: {exc}", rule=_RULE
        ) from None
    if binding.party_id != p["signer"]:
        raise RuleViolation(
            f"encryption-key binding at leaf {leaf} names {binding.party_id} but is stated by "
            f"{p['signer']}",
            rule=_RULE,
        )
    conn.execute(
        insert(party_encryption_keys).values(
            party_id=binding.party_id,
            key_id=binding.public_key.key_id,
            public_key=binding.public_key.to_b64(),
            created_at=binding.created_at,
            binding=canonical_json(binding.to_json()).decode("utf-8"),
            leaf_index=leaf,
        )
    )


def exchange_sent(conn: Connection, p: Mapping[str, Any], leaf: int) -> None:
    _signing_key(conn, p["signer"], leaf)
    body = p["body"]
    if (
        set(body) != {"message_id", "header_sha256"}
        or not _MESSAGE.fullmatch(str(body["message_id"]))
        or not _HEX64.fullmatch(str(body["header_sha256"]))
    ):
        raise RuleViolation(
            f"exchange.sent at leaf {leaf}: expected exactly a message id (xch-...) and a hex "
            f"SHA-256 header digest, got {sorted(body)}",
            rule=_RULE,
        )


def exchange_receipt(conn: Connection, p: Mapping[str, Any], leaf: int) -> None:
    key = _signing_key(conn, p["signer"], leaf)
    try:
        receipt = Receipt.from_json(p["body"]["receipt"])
        receipt.verify(key)
    except MetrocloudError as exc:
        raise RuleViolation(f"receipt at leaf {leaf} does not hold: {exc}", rule=_RULE) from None
    if receipt.recipient != p["signer"]:
        raise RuleViolation(
            f"receipt at leaf {leaf} is by {receipt.recipient} but stated by {p['signer']}",
            rule=_RULE,
        )
