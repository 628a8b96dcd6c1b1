"""Parsing of key material for :mod:`metrocloud.trust.keys`; only Ed25519 and P-256 pass.

Every failure is an :class:`InvalidInput` (or, for a wrong passphrase, a
:class:`VerificationError`) whose message never contains key material.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from metrocloud.domain.errors import InvalidInput, VerificationError

__all__ = [
    "ACCEPTED",
    "CryptoPrivate",
    "CryptoPublic",
    "check_passphrase",
    "check_supported",
    "load_private_pem",
    "load_public_pem",
    "load_public_spki_b64",
]

CryptoPublic = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
CryptoPrivate = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
ACCEPTED = "ed25519 or ecdsa-p256-sha256 (ECDSA on P-256/secp256r1 with SHA-256)"
_RULE = "metrocloud accepted key algorithms"


def check_supported(key: object) -> None:
    """Raise :class:`InvalidInput` unless ``key`` is an Ed25519 or P-256 key."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return
        raise InvalidInput(
            f"unsupported elliptic curve {key.curve.name}; expected {ACCEPTED}", rule=_RULE
        )
    raise InvalidInput(
        f"unsupported key type {type(key).__name__}; expected {ACCEPTED}", rule=_RULE
    )


def load_public_pem(data: str | bytes) -> CryptoPublic:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        key = serialization.load_pem_public_key(bytes(raw).strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(
            "not a PEM SubjectPublicKeyInfo ('-----BEGIN PUBLIC KEY-----') that can be "
            f"parsed; expected an {ACCEPTED} public key",
            rule="RFC 7468 §13",
        ) from None
    return _public(key)


def load_public_spki_b64(text: str) -> CryptoPublic:
    try:
        der = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise InvalidInput(
            "public key is not valid base64 of a DER SubjectPublicKeyInfo (RFC 5280 §4.1)",
            rule="RFC 5280 §4.1",
        ) from None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(
            f"base64 decodes to {len(der)} bytes that are not a DER SubjectPublicKeyInfo "
            f"of an {ACCEPTED} key (RFC 5280 §4.1)",
            rule="RFC 5280 §4.1",
        ) from None
    return _public(key)


def load_private_pem(data: bytes, passphrase: bytes | None) -> CryptoPrivate:
    """Load a PEM private key; ``passphrase`` is required exactly when it is encrypted."""
    if passphrase is not None:
        check_passphrase(passphrase)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=passphrase)
    except TypeError:
        # cryptography signals a passphrase/encryption mismatch with TypeError
        if passphrase is None:
            raise InvalidInput("private key is encrypted but no passphrase was given") from None
        raise InvalidInput(
            "private key is not encrypted but a passphrase was given; refusing to load an "
            "unprotected key where a protected one is expected"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase is not None:
            raise VerificationError(
                "cannot decrypt private key: wrong passphrase or corrupted file"
            ) from None
        raise InvalidInput(
            f"not a PEM private key of an {ACCEPTED} key (RFC 5958, RFC 7468 §10)",
            rule="RFC 5958",
        ) from None
    check_supported(key)
    assert isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
    return key


def check_passphrase(passphrase: bytes) -> bytes:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise InvalidInput("passphrase must be non-empty bytes")
    return passphrase


def _public(key: object) -> CryptoPublic:
    check_supported(key)
    assert isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return key
