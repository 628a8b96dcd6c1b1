"""HPKE base mode (RFC 9180 §5.1.1) with DHKEM(X25519, HKDF-SHA256): the adapter to ``pyhpke``.

``pyhpke`` (MIT, tested against the CFRG test vectors) does the key encapsulation and the
key schedule; this module fixes the suites metrocloud uses, takes and returns raw bytes, and
turns every library exception into a :class:`~metrocloud.domain.errors.VerificationError`
(opening) or :class:`~metrocloud.domain.errors.InvalidInput` (a malformed key), so nothing of
the library leaks to callers.

Only single-shot use (RFC 9180 §6.1 ``Seal``/``Open``: one message, sequence number 0) is
offered: metrocloud seals one content key per recipient.
"""

from __future__ import annotations

from enum import IntEnum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey, KEMKeyPair, PyHPKEError

from metrocloud.domain.errors import InvalidInput, VerificationError

__all__ = ["Aead", "open_base", "seal_base"]

_RULE = "RFC 9180 §5.1.1, §6.1 (HPKE base mode, single-shot)"


class Aead(IntEnum):
    """The HPKE AEAD identifiers (RFC 9180 §7.3) metrocloud can use."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


_AEAD_IDS = {
    Aead.AES_128_GCM: AEADId.AES128_GCM,
    Aead.AES_256_GCM: AEADId.AES256_GCM,
    Aead.CHACHA20_POLY1305: AEADId.CHACHA20_POLY1305,
}
_SUITES: dict[Aead, CipherSuite] = {}


def _suite(aead: Aead) -> CipherSuite:
    suite = _SUITES.get(aead)
    if suite is None:
        suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, _AEAD_IDS[aead])
        _SUITES[aead] = suite
    return suite


def _x25519(raw: bytes, what: str) -> bytes:
    if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
        size = len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__
        raise InvalidInput(
            f"{what} must be 32 bytes (X25519, RFC 7748 §5), got {size}", rule="RFC 9180 §7.1.1"
        )
    return bytes(raw)


def seal_base(
    public_key: bytes,
    plaintext: bytes,
    *,
    info: bytes,
    aad: bytes,
    aead: Aead = Aead.AES_256_GCM,
    ephemeral: bytes | None = None,
) -> tuple[bytes, bytes]:
    """``(enc, ciphertext)``: ``plaintext`` sealed to the raw X25519 ``public_key``.

    ``ephemeral`` (a raw X25519 private key) replaces the fresh ephemeral key; it exists for
    the RFC 9180 test vectors only and must never be used otherwise.
    """
    suite = _suite(aead)
    pk = suite.kem.deserialize_public_key(_x25519(public_key, "recipient public key"))
    eks = None
    if ephemeral is not None:
        sk = X25519PrivateKey.from_private_bytes(_x25519(ephemeral, "ephemeral key"))
        eks = KEMKeyPair(
            KEMKey.from_pyca_cryptography_key(sk),
            KEMKey.from_pyca_cryptography_key(sk.public_key()),
        )
    try:
        enc, context = suite.create_sender_context(pk, info=info, eks=eks)
        return enc, context.seal(plaintext, aad=aad)
    except (PyHPKEError, ValueError) as exc:
        # X25519 with a low-order point yields the all-zero secret (RFC 9180 §7.1.4)
        raise InvalidInput(f"cannot seal to this public key: {exc}", rule=_RULE) from None


def open_base(
    private_key: bytes,
    enc: bytes,
    ciphertext: bytes,
    *,
    info: bytes,
    aad: bytes,
    aead: Aead = Aead.AES_256_GCM,
) -> bytes:
    """The plaintext sealed by :func:`seal_base`; :class:`VerificationError` if ``enc``,
    ``ciphertext``, ``info`` or ``aad`` differ from the sealed ones or the key is not the
    recipient's."""
    suite = _suite(aead)
    sk = suite.kem.deserialize_private_key(_x25519(private_key, "recipient private key"))
    if not isinstance(enc, bytes | bytearray) or len(enc) != 32:
        raise VerificationError(
            f"encapsulated key must be 32 bytes (Nenc of DHKEM(X25519)), got "
            f"{len(enc) if isinstance(enc, bytes | bytearray) else type(enc).__name__}",
            rule="RFC 9180 §7.1",
        )
    try:
        context = suite.create_recipient_context(bytes(enc), sk, info=info)
        return bytes(context.open(bytes(ciphertext), aad=aad))
    except (PyHPKEError, ValueError) as exc:
        raise VerificationError(
            f"HPKE open failed: the sealed key was altered, bound to other data, or sealed to "
            f"another recipient ({type(exc).__name__})",
            rule=_RULE,
        ) from None
