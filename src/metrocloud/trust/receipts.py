"""Receipts: a recipient's signed acknowledgement that it received a confidential document.

::

    {"payload": {"message_id": "xch-DE-...", "header_sha256": "<hex>",
                 "recipient": "pty-FR-...", "received_at": "...Z"},
     "signature": {"key_id": "<recipient's signing key id>", "alg": "...", "sig": "<b64>"}}

signed over ``RECEIPT_DOMAIN + canonical_json(payload)`` with the recipient's registered
signing key. ``header_sha256`` names exactly the header the recipient checked (sender,
recipients, sizes, the digest of the ciphertext), so a receipt proves receipt of *that*
document; anyone holding the recipient's public key verifies it, the sender and a court
alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metrocloud.domain.errors import InvalidInput
from metrocloud.trust._exchange_header import MESSAGE_ID, PARTY_ID
from metrocloud.trust._signed import parse_signature, sign_object, verify_object
from metrocloud.trust._time import parse_utc_timestamp, utc_timestamp
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = ["RECEIPT_DOMAIN", "Receipt", "sign_receipt"]

RECEIPT_DOMAIN = b"metrocloud-exchange-receipt-v1\x00"
_RULE = "metrocloud exchange v1 receipt (docs/exchange.md#receipts)"
_KEYS = frozenset({"message_id", "header_sha256", "recipient", "received_at"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Receipt:
    message_id: str
    header_sha256: str
    recipient: str
    received_at: str
    signature: Mapping[str, str]

    def payload(self) -> dict[str, str]:
        return {
            "message_id": self.message_id,
            "header_sha256": self.header_sha256,
            "recipient": self.recipient,
            "received_at": self.received_at,
        }

    def to_json(self) -> dict[str, Any]:
        return {"payload": self.payload(), "signature": dict(self.signature)}

    @classmethod
    def from_json(cls, value: object) -> Receipt:
        """Parse strictly; :class:`InvalidInput` names the first field that is wrong."""
        if not isinstance(value, Mapping) or set(value) != {"payload", "signature"}:
            raise InvalidInput(
                "a receipt is an object with exactly payload and signature", rule=_RULE
            )
        p = value["payload"]
        if not isinstance(p, Mapping) or set(p) != _KEYS:
            found = sorted(map(str, p)) if isinstance(p, Mapping) else type(p).__name__
            raise InvalidInput(
                f"receipt payload must have exactly {sorted(_KEYS)}, found {found}", rule=_RULE
            )
        for name, pattern in (
            ("message_id", MESSAGE_ID),
            ("recipient", PARTY_ID),
            ("header_sha256", _HEX64),
        ):
            if not isinstance(p[name], str) or pattern.fullmatch(p[name]) is None:
                raise InvalidInput(
                    f"receipt {name} {p[name]!r} does not match {pattern.pattern}", rule=_RULE
                )
        parse_utc_timestamp(p["received_at"], what="receipt received_at")
        parse_signature(value["signature"], what="receipt signature")
        return cls(
            message_id=p["message_id"],
            header_sha256=p["header_sha256"],
            recipient=p["recipient"],
            received_at=p["received_at"],
            signature=dict(value["signature"]),
        )

    def verify(self, recipient_key: PublicKey) -> None:
        """:class:`VerificationError` unless the recipient's registered key signed it."""
        verify_object(
            RECEIPT_DOMAIN,
            self.payload(),
            self.signature,
            recipient_key,
            what=f"receipt of {self.message_id} by {self.recipient}",
            rule=_RULE,
        )


def sign_receipt(
    envelope: Envelope, recipient_id: str, key: PrivateKey, received_at: str | None = None
) -> Receipt:
    """``recipient_id``'s receipt for ``envelope``, signed with its signing ``key``."""
    envelope.sealed_key(recipient_id)  # only a recipient acknowledges
    unsigned = Receipt(
        message_id=envelope.id,
        header_sha256=envelope.header_sha256,
        recipient=recipient_id,
        received_at=received_at or utc_timestamp(),
        signature={},
    )
    signature = sign_object(RECEIPT_DOMAIN, unsigned.payload(), key)
    return Receipt(
        message_id=unsigned.message_id,
        header_sha256=unsigned.header_sha256,
        recipient=unsigned.recipient,
        received_at=unsigned.received_at,
        signature=signature,
    )
