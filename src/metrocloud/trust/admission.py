"""Node admissions: a grid trust anchor certifies one member-state node's key. Pure, no I/O.

An admission binds a node's public key to its node id, member state and base URL, for a
period, under the anchor's signature (ARCHITECTURE.md decision 6). Its JSON form::

    {"admission": {"version": 1, "node_id": "node-DE-<16 hex>", "country": "DE",
                   "base_url": "https://...", "public_key": "<base64 SPKI>",
                   "key_id": "<64 hex>", "anchor_id": "<64 hex>",
                   "issued_at": "...Z", "expires_at": "...Z"},
     "signature": {"key_id": "<anchor key id>", "alg": "ed25519", "sig": "<base64>"}}

The signature is over ``ADMISSION_DOMAIN + canonical_json(admission)``; the domain prefix
keeps it from being valid as any other kind of metrocloud signature.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust._b64 import b64decode_strict, b64encode
from metrocloud.trust._time import parse_utc_timestamp
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey, PublicKey

__all__ = [
    "ADMISSION_DOMAIN",
    "NodeAdmission",
    "SignedAdmission",
    "node_id_for",
    "sign_admission",
]

ADMISSION_DOMAIN = b"metrocloud-grid-admission-v1\x00"
_RULE = "metrocloud grid admission v1 (docs/grid.md#admission)"
_FIELDS = frozenset(
    {
        "version",
        "node_id",
        "country",
        "base_url",
        "public_key",
        "key_id",
        "anchor_id",
        "issued_at",
        "expires_at",
    }
)
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_BASE_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def node_id_for(country: str, key_id: str) -> str:
    """The node id a node with this key and member state has (``services.node.Node``)."""
    return f"node-{country}-{key_id[:16]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeAdmission:
    """What the anchor certifies about one node."""

    node_id: str
    country: str
    base_url: str
    public_key: str  # standard base64 of the DER SubjectPublicKeyInfo
    key_id: str
    anchor_id: str
    issued_at: str
    expires_at: str

    def __post_init__(self) -> None:
        if not isinstance(self.country, str) or not _COUNTRY.match(self.country):
            raise InvalidInput(
                f"admission country must be two capital letters, got {self.country!r}",
                rule="ISO 3166-1 alpha-2",
            )
        if not isinstance(self.base_url, str) or not _BASE_URL.match(self.base_url):
            raise InvalidInput(
                f"admission base_url must be an http(s) URL without query, got "
                f"{str(self.base_url)[:80]!r}",
                rule="RFC 3986 §3",
            )
        for name in ("key_id", "anchor_id"):
            if not isinstance(getattr(self, name), str) or not _HEX64.match(getattr(self, name)):
                raise InvalidInput(
                    f"admission {name} must be 64 lowercase hex characters, got "
                    f"{str(getattr(self, name))[:80]!r}",
                    rule=_RULE,
                )
        key = PublicKey.from_spki_b64(self.public_key)
        if key.key_id != self.key_id:
            raise InvalidInput(
                f"admission key_id {self.key_id} is not the id of its public key ({key.key_id})",
                rule=_RULE,
            )
        expected = node_id_for(self.country, self.key_id)
        if self.node_id != expected:
            raise InvalidInput(
                f"admission node_id must be {expected} (country and key id), got "
                f"{str(self.node_id)[:80]!r}",
                rule=_RULE,
            )
        issued = parse_utc_timestamp(self.issued_at, what="admission issued_at")
        expires = parse_utc_timestamp(self.expires_at, what="admission expires_at")
        if expires <= issued:
            raise InvalidInput(
                f"admission expires_at {self.expires_at} is not after issued_at {self.issued_at}",
                rule=_RULE,
            )
        base = self.base_url.rstrip("/")
        if base != self.base_url:
            object.__setattr__(self, "base_url", base)

    @property
    def key(self) -> PublicKey:
        return PublicKey.from_spki_b64(self.public_key)

    def fields(self) -> dict[str, Any]:
        return {
            "version": 1,
            "node_id": self.node_id,
            "country": self.country,
            "base_url": self.base_url,
            "public_key": self.public_key,
            "key_id": self.key_id,
            "anchor_id": self.anchor_id,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }

    def signed_bytes(self) -> bytes:
        return ADMISSION_DOMAIN + canonical_json(self.fields())

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> NodeAdmission:
        if not isinstance(data, Mapping) or set(data) != _FIELDS:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InvalidInput(
                f"admission needs exactly the fields {sorted(_FIELDS)}, got {got}", rule=_RULE
            )
        if data["version"] != 1:
            raise InvalidInput(f"admission version must be 1, got {data['version']!r}", rule=_RULE)
        values = {k: data[k] for k in _FIELDS - {"version"}}
        for name, value in values.items():
            if not isinstance(value, str):
                raise InvalidInput(f"admission {name} must be a string, got {value!r:.80}")
        return cls(**values)


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedAdmission:
    """An admission and the anchor's signature over it."""

    admission: NodeAdmission
    key_id: str
    alg: KeyAlgorithm
    sig: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "admission": self.admission.fields(),
            "signature": {"key_id": self.key_id, "alg": self.alg.value, "sig": b64encode(self.sig)},
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedAdmission:
        """Parse :meth:`to_json` output strictly; the signature is *not* checked here."""
        if not isinstance(data, Mapping) or set(data) != {"admission", "signature"}:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InvalidInput(
                f"a signed admission is {{'admission', 'signature'}}, got {got}", rule=_RULE
            )
        sig = data["signature"]
        if not isinstance(sig, Mapping) or set(sig) != {"key_id", "alg", "sig"}:
            raise InvalidInput("admission signature needs exactly key_id, alg and sig", rule=_RULE)
        alg = sig["alg"]
        if alg not in {a.value for a in KeyAlgorithm}:
            raise InvalidInput(
                f"admission signature alg {alg!r} is not one of "
                f"{sorted(a.value for a in KeyAlgorithm)}",
                rule=_RULE,
            )
        if not isinstance(sig["key_id"], str):
            raise InvalidInput("admission signature key_id must be a string", rule=_RULE)
        return cls(
            admission=NodeAdmission.from_fields(data["admission"]),
            key_id=sig["key_id"],
            alg=KeyAlgorithm(alg),
            sig=b64decode_strict(sig["sig"], what="admission signature sig"),
        )

    def verify(self, anchor: PublicKey, *, at: datetime | None = None) -> NodeAdmission:
        """What a node checks before it talks to another node:

        1. the admission names this anchor, and the anchor key made the signature;
        2. the signature is valid over the domain-separated canonical admission;
        3. with ``at``: the admission is valid at that instant (issued_at <= at < expires_at).

        (The node id's derivation from country and key was checked on parsing.)
        Returns the admission; raises :class:`VerificationError`.
        """
        a = self.admission
        # (1): the right anchor
        if a.anchor_id != anchor.key_id or self.key_id != anchor.key_id:
            raise VerificationError(
                f"admission of {a.node_id} is under anchor {a.anchor_id[:16]}... signed by "
                f"{self.key_id[:16]}..., but this grid's anchor is {anchor.key_id[:16]}...",
                rule=_RULE,
            )
        if self.alg is not anchor.algorithm:
            raise VerificationError(
                f"admission signature alg {self.alg.value} does not match the anchor key "
                f"({anchor.algorithm.value})",
                rule=_RULE,
            )
        # (2): the signature
        try:
            anchor.verify(self.sig, a.signed_bytes())
        except VerificationError as exc:
            raise VerificationError(
                f"admission of {a.node_id}: {exc}", rule=exc.rule or _RULE
            ) from None
        # (3): the validity period
        if at is not None:
            issued = parse_utc_timestamp(a.issued_at)
            expires = parse_utc_timestamp(a.expires_at)
            if not issued <= at < expires:
                raise VerificationError(
                    f"admission of {a.node_id} is valid from {a.issued_at} until "
                    f"{a.expires_at}, not at {at.isoformat()}",
                    rule=_RULE,
                )
        return a


def sign_admission(admission: NodeAdmission, anchor: PrivateKey) -> SignedAdmission:
    """The anchor's signature over ``admission`` (which must name this anchor)."""
    if admission.anchor_id != anchor.key_id:
        raise InvalidInput(
            f"admission names anchor {admission.anchor_id[:16]}..., the signing key is "
            f"{anchor.key_id[:16]}...",
            rule=_RULE,
        )
    return SignedAdmission(
        admission=admission,
        key_id=anchor.key_id,
        alg=anchor.algorithm,
        sig=anchor.sign(admission.signed_bytes()),
    )
