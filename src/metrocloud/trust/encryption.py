"""Party encryption keys: X25519 (RFC 7748) for HPKE, bound to the party's signing key.

A party's signing key (Ed25519 or P-256, :mod:`metrocloud.trust.keys`) cannot encrypt, so a
party that takes part in confidential exchange also holds an X25519 key pair. It publishes
the public half in a **key binding** signed with its registered signing key::

    {"payload": {"party_id": "pty-DE-...", "alg": "X25519", "public_key": "<base64, 32 bytes>",
                 "key_id": "<hex SHA-256 of the DER SubjectPublicKeyInfo>",
                 "created_at": "2026-11-24T10:00:00.123Z"},
     "signature": {"key_id": "<signing key id>", "alg": "ed25519", "sig": "<base64>"}}

signed over ``ENCRYPTION_KEY_DOMAIN + canonical_json(payload)``. Anyone who knows the party's
registered signing key (the party directory, the transparency log) checks that the X25519
key is the party's, so a node that serves the binding cannot substitute its own key.

The private half never leaves its owner: :func:`load_or_create_encryption_key` keeps it in
the owner's key directory (PKCS#8, encrypted with the key store's passphrase), beside the
signing key of a :class:`~metrocloud.trust.keys.KeyStore` there.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.trust import _files
from metrocloud.trust._b64 import b64decode_strict
from metrocloud.trust._keyparse import check_passphrase
from metrocloud.trust._signed import sign_object, verify_object
from metrocloud.trust._time import parse_utc_timestamp, utc_timestamp
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "ENCRYPTION_KEY_DOMAIN",
    "EncryptionKey",
    "EncryptionPublicKey",
    "KeyBinding",
    "bind_encryption_key",
    "encryption_key_path",
    "load_or_create_encryption_key",
]

ENCRYPTION_KEY_DOMAIN = b"metrocloud-encryption-key-v1\x00"
_RULE = "metrocloud encryption-key binding v1 (docs/exchange.md#keys)"
_PARTY = re.compile(r"pty-[A-Z]{2}-[0-9A-HJKMNP-TV-Z]{26}")
_PAYLOAD_KEYS = frozenset({"party_id", "alg", "public_key", "key_id", "created_at"})


class EncryptionPublicKey:
    """An X25519 public key; equal and hashed by :attr:`key_id`."""

    __slots__ = ("_key_id", "_raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            size = len(raw) if isinstance(raw, bytes) else type(raw).__name__
            raise InvalidInput(f"an X25519 public key is 32 bytes (RFC 7748 §5), got {size}")
        spki = X25519PublicKey.from_public_bytes(raw).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._raw = raw
        self._key_id = hashlib.sha256(spki).hexdigest()

    @property
    def raw(self) -> bytes:
        """The 32 bytes of the u-coordinate (RFC 7748 §5), as HPKE serializes it."""
        return self._raw

    @property
    def key_id(self) -> str:
        """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (as for signing keys)."""
        return self._key_id

    def to_b64(self) -> str:
        return base64.b64encode(self._raw).decode("ascii")

    @classmethod
    def from_b64(cls, text: str) -> EncryptionPublicKey:
        return cls(b64decode_strict(text, what="X25519 public key"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncryptionPublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"EncryptionPublicKey(key_id={self._key_id})"


class EncryptionKey:
    """An X25519 private key. Its repr shows the key id only, never key material."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: X25519PrivateKey) -> None:
        if not isinstance(key, X25519PrivateKey):
            raise InvalidInput(f"expected an X25519 private key, found {type(key).__name__}")
        self._key = key
        self._public = EncryptionPublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> EncryptionKey:
        return cls(X25519PrivateKey.generate())

    @property
    def public_key(self) -> EncryptionPublicKey:
        return self._public

    @property
    def key_id(self) -> str:
        return self._public.key_id

    def raw(self) -> bytes:
        """The 32 private bytes, for the HPKE adapter only."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def to_pem(self, passphrase: bytes) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` (``BestAvailableEncryption``)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(check_passphrase(passphrase)),
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes) -> EncryptionKey:
        try:
            key = serialization.load_pem_private_key(data, password=check_passphrase(passphrase))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"not a PKCS#8 PEM X25519 key readable with this passphrase: {exc}"
            ) from None
        if not isinstance(key, X25519PrivateKey):
            raise InvalidInput(f"the PEM holds a {type(key).__name__}, expected an X25519 key")
        return cls(key)

    def __repr__(self) -> str:
        return f"EncryptionKey(key_id={self.key_id})"

    def __reduce__(self) -> Any:
        raise TypeError("EncryptionKey cannot be pickled; use to_pem(passphrase)")


def encryption_key_path(directory: Path, party_id: str) -> Path:
    """Where the X25519 key of ``party_id`` lives in a key directory: beside the signing key
    ``<party_id>.key.pem`` of a :class:`~metrocloud.trust.keys.KeyStore` in the same place."""
    return Path(directory) / f"{_files.validate_name(party_id)}.x25519.key.pem"


def load_or_create_encryption_key(
    directory: Path, passphrase: bytes, party_id: str, *, create: bool = True
) -> EncryptionKey:
    """The X25519 key of ``party_id`` in ``directory`` (:func:`encryption_key_path`),
    generated and written atomically (mode 0600, PKCS#8 encrypted with ``passphrase``) on
    first use when ``create``. Two processes creating it at once end with the same key."""
    path = encryption_key_path(directory, party_id)
    if not path.exists():
        if not create:
            raise NotFound(f"no encryption key for {party_id} in {directory}")
        _files.ensure_private_directory(Path(directory))
        key = EncryptionKey.generate()
        if _files.write_new_file(path, key.to_pem(passphrase)):
            return key
    return EncryptionKey.from_pem(path.read_bytes(), passphrase)


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyBinding:
    """A party's X25519 public key, signed with its registered signing key."""

    party_id: str
    public_key: EncryptionPublicKey
    created_at: str
    signature: Mapping[str, str]

    def payload(self) -> dict[str, str]:
        return {
            "party_id": self.party_id,
            "alg": "X25519",
            "public_key": self.public_key.to_b64(),
            "key_id": self.public_key.key_id,
            "created_at": self.created_at,
        }

    def to_json(self) -> dict[str, Any]:
        return {"payload": self.payload(), "signature": dict(self.signature)}

    @classmethod
    def from_json(cls, value: object) -> KeyBinding:
        """Parse strictly (shape, types, the key id matching the key); not the signature."""
        if not isinstance(value, Mapping) or set(value) != {"payload", "signature"}:
            raise InvalidInput(
                "an encryption-key binding is an object with exactly payload and signature",
                rule=_RULE,
            )
        p = value["payload"]
        if not isinstance(p, Mapping) or set(p) != _PAYLOAD_KEYS:
            found = sorted(map(str, p)) if isinstance(p, Mapping) else type(p).__name__
            raise InvalidInput(
                f"binding payload must have exactly {sorted(_PAYLOAD_KEYS)}, found {found}",
                rule=_RULE,
            )
        if not all(isinstance(p[k], str) for k in _PAYLOAD_KEYS):
            raise InvalidInput("every binding payload field is a string", rule=_RULE)
        if _PARTY.fullmatch(p["party_id"]) is None:
            raise InvalidInput(f"binding party_id {p['party_id']!r} is not a party id", rule=_RULE)
        if p["alg"] != "X25519":
            raise InvalidInput(f"binding alg must be X25519, got {p['alg']!r}", rule=_RULE)
        parse_utc_timestamp(p["created_at"], what="binding created_at")
        key = EncryptionPublicKey.from_b64(p["public_key"])
        if key.key_id != p["key_id"]:
            raise InvalidInput(
                f"binding key_id {p['key_id']} is not the id of its public key ({key.key_id})",
                rule=_RULE,
            )
        if not isinstance(value["signature"], Mapping):
            raise InvalidInput("binding signature must be an object", rule=_RULE)
        return cls(
            party_id=p["party_id"],
            public_key=key,
            created_at=p["created_at"],
            signature=dict(value["signature"]),
        )

    def verify(self, signing_key: PublicKey) -> None:
        """:class:`VerificationError` unless the party's ``signing_key`` signed the binding."""
        verify_object(
            ENCRYPTION_KEY_DOMAIN,
            self.payload(),
            self.signature,
            signing_key,
            what=f"encryption-key binding of {self.party_id}",
            rule=_RULE,
        )


def bind_encryption_key(
    party_id: str, key: EncryptionPublicKey, signing_key: PrivateKey, created_at: str | None = None
) -> KeyBinding:
    """Sign a binding of ``key`` to ``party_id`` with the party's ``signing_key``."""
    if _PARTY.fullmatch(party_id) is None:
        raise InvalidInput(f"{party_id!r} is not a party id (pty-<country>-<ULID>)")
    stamp = created_at or utc_timestamp()
    unsigned = KeyBinding(party_id=party_id, public_key=key, created_at=stamp, signature={})
    signature = sign_object(ENCRYPTION_KEY_DOMAIN, unsigned.payload(), signing_key)
    return KeyBinding(party_id=party_id, public_key=key, created_at=stamp, signature=signature)
