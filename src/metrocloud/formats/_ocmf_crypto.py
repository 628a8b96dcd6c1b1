"""Signature algorithms, public keys and ECDSA signatures of OCMF (OCMF 1.2, Tables 8, 22, 23).

Curves that OpenSSL knows are verified with ``cryptography``; secp192k1, which OpenSSL lacks,
with the pure-Python ``ecdsa`` package on the SEC 2 parameters below. Keys are DER
SubjectPublicKeyInfo (RFC 5480) or, as some meters print them, a bare curve point; signatures
are a DER ``ECDSA-Sig-Value`` (SM ``application/x-der``, the default) or, tolerated, the bare
``r || s`` pair. Every malformed input raises :class:`InvalidInput` with evidence; a signature
that simply does not match returns ``False``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ecdsa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from ecdsa.ellipticcurve import CurveFp, PointJacobi

from metrocloud.domain.errors import InvalidInput

__all__ = [
    "CURVES",
    "DEFAULT_ALGORITHM",
    "SECP192K1_ECDSA",
    "Algorithm",
    "Curve",
    "PublicKey",
    "decode_binary_text",
    "decode_signature",
    "load_key",
    "parse_algorithm",
    "parse_public_key",
    "verify_signature",
]

RULE_SA = "OCMF 1.2 Table 22 (signature algorithms)"
RULE_KEY = "OCMF 1.2 Table 23 (public key types); RFC 5480 SubjectPublicKeyInfo"
RULE_SD = "OCMF 1.2 Table 8 (SE, SM, SD)"
#: SA when the signature section names none (OCMF 1.2 Table 8: "the default value is effective")
DEFAULT_ALGORITHM = "ECDSA-secp256r1-SHA256"

_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"

# secp192k1, SEC 2 v2.0 §2.2.1 (Koblitz curve y^2 = x^3 + 3 over F_p)
_P192K1 = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFEE37
_N192K1 = 0xFFFFFFFFFFFFFFFFFFFFFFFE26F2FC170F69466A74DEFD8D
_GX192K1 = 0xDB4FF10EC057E9AE26B07D0280B7F4341DA5D1B1EAE06C7D
_GY192K1 = 0x9B2F2F6D9C5628A7844163D015BE86344082AA88D95E2F9D
_CURVE_FP_192K1 = CurveFp(_P192K1, 0, 3, 1)
#: secp192k1 for the ``ecdsa`` package, which does not ship it (OID 1.3.132.0.31)
SECP192K1_ECDSA = ecdsa.curves.Curve(
    "SECP192k1",
    _CURVE_FP_192K1,
    PointJacobi(_CURVE_FP_192K1, _GX192K1, _GY192K1, 1, _N192K1, generator=True),
    (1, 3, 132, 0, 31),
)


@dataclass(frozen=True)
class Curve:
    """An elliptic curve of OCMF 1.2 Table 23 and how to verify on it."""

    name: str
    oid: str
    #: bytes of one coordinate (and of r and s)
    size: int
    aliases: tuple[str, ...]
    #: the ``cryptography`` curve class, or None when only ``ecdsa`` has the curve
    crypto: type[ec.EllipticCurve] | None
    ecdsa_curve: Any = None


CURVES: tuple[Curve, ...] = (
    Curve("secp192k1", "1.3.132.0.31", 24, (), None, SECP192K1_ECDSA),
    Curve("secp192r1", "1.2.840.10045.3.1.1", 24, ("prime192v1", "P-192"), ec.SECP192R1),
    Curve("secp256k1", "1.3.132.0.10", 32, (), ec.SECP256K1),
    Curve("secp256r1", "1.2.840.10045.3.1.7", 32, ("prime256v1", "P-256"), ec.SECP256R1),
    Curve("brainpoolP256r1", "1.3.36.3.3.2.8.1.1.7", 32, ("brainpool256r1",), ec.BrainpoolP256R1),
    Curve("secp384r1", "1.3.132.0.34", 48, ("prime384v1", "P-384"), ec.SECP384R1),
    Curve("brainpoolP384r1", "1.3.36.3.3.2.8.1.1.11", 48, ("brainpool384r1",), ec.BrainpoolP384R1),
)
_BY_NAME = {n.lower(): c for c in CURVES for n in (c.name, *c.aliases)}
_BY_OID = {c.oid: c for c in CURVES}
#: curves OCMF does not list, named only to make a mismatch readable
_OTHER_OIDS = {"1.3.132.0.33": "secp224r1", "1.3.132.0.35": "secp521r1"}

_HASHES: dict[str, tuple[Callable[[], hashes.HashAlgorithm], Callable[..., Any]]] = {
    "SHA256": (hashes.SHA256, hashlib.sha256),
    "SHA384": (hashes.SHA384, hashlib.sha384),
    "SHA512": (hashes.SHA512, hashlib.sha512),
}
_SA = re.compile(r"ECDSA-(?P<curve>[A-Za-z0-9-]+?)-(?P<hash>SHA-?(?:256|384|512))")


@dataclass(frozen=True)
class Algorithm:
    """A signature algorithm (SA): ECDSA on ``curve`` over the hash ``hash_name``."""

    identifier: str
    curve: Curve
    hash_name: str


@dataclass(frozen=True)
class PublicKey:
    """A decoded public key: its algorithm, its curve (if known) and the encoded point."""

    kind: str
    #: the OCMF curve, None for RSA keys and curves OCMF does not list
    curve: Curve | None
    #: curve name or OID, for messages
    label: str
    point: bytes


def parse_algorithm(sa: str | None) -> Algorithm:
    """The algorithm an SA value names; absent SA means ECDSA-secp256r1-SHA256 (Table 8)."""
    text = DEFAULT_ALGORITHM if sa is None else sa.strip()
    match = _SA.fullmatch(text)
    curve = _BY_NAME.get(match["curve"].lower()) if match else None
    if match is None or curve is None:
        listed = ", ".join(f"ECDSA-{c.name}-SHA256" for c in CURVES)
        raise _err(
            f"unsupported signature algorithm SA {text!r}; expected one of {listed}", RULE_SA
        )
    hash_name = match["hash"].replace("-", "").upper()
    return Algorithm(f"ECDSA-{curve.name}-{hash_name}", curve, hash_name)


_HEX = re.compile(r"[0-9A-Fa-f]*")
_B64 = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


def decode_binary_text(text: str, encoding: str | None, what: str, rule: str = RULE_KEY) -> bytes:
    """Bytes written as hex or base64 (``encoding`` None or "plain": whichever fits).

    Whitespace anywhere is ignored: keys are printed in groups and across lines.
    """
    compact = "".join(text.split())
    enc = (encoding or "plain").strip().lower()
    if not compact:
        raise _err(f"{what} is empty", rule)
    if enc in ("hex", "plain") and _HEX.fullmatch(compact) and len(compact) % 2 == 0:
        return bytes.fromhex(compact)
    if enc in ("base64", "plain") and _B64.fullmatch(compact):
        try:
            padded = compact + "=" * (-len(compact) % 4)
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            pass
    expected = "hex or base64" if enc == "plain" else enc
    found = f"{compact[:16]!r}{'...' if len(compact) > 16 else ''}"
    raise _err(f"{what} is not {expected}: found {found} ({len(compact)} characters)", rule)


# --- a strict subset of DER (X.690), enough for SubjectPublicKeyInfo and ECDSA-Sig-Value ---


def _der_read(data: bytes, pos: int, what: str, rule: str) -> tuple[int, bytes, int]:
    """Read one TLV at ``pos``: (tag, value, position after it)."""
    if pos + 2 > len(data):
        raise _err(f"{what}: DER ends early at byte {pos}", rule)
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _err(f"{what}: DER length is malformed at byte {pos}", rule)
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise _err(f"{what}: DER element claims {length} bytes, {len(data) - pos} remain", rule)
    return tag, data[pos:end], end


def _der_expect(data: bytes, pos: int, tag: int, what: str, rule: str) -> tuple[bytes, int]:
    found, value, end = _der_read(data, pos, what, rule)
    if found != tag:
        raise _err(f"{what}: expected DER tag 0x{tag:02x}, found 0x{found:02x}", rule)
    return value, end


def _oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise _err("malformed OBJECT IDENTIFIER in public key", RULE_KEY)
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _spki(data: bytes) -> tuple[str, str | None, bytes]:
    """(algorithm OID, curve OID or None, key bits) of a DER SubjectPublicKeyInfo."""
    what = "public key (SubjectPublicKeyInfo)"
    body, end = _der_expect(data, 0, 0x30, what, RULE_KEY)
    if end != len(data):
        raise _err(f"{what}: {len(data) - end} bytes after the DER", RULE_KEY)
    alg, pos = _der_expect(body, 0, 0x30, what, RULE_KEY)
    bits, pos = _der_expect(body, pos, 0x03, what, RULE_KEY)
    if pos != len(body) or not bits or bits[0] != 0:
        raise _err(f"{what}: malformed subjectPublicKey BIT STRING", RULE_KEY)
    oid, apos = _der_expect(alg, 0, 0x06, what, RULE_KEY)
    curve: str | None = None
    if apos < len(alg):
        tag, params, _ = _der_read(alg, apos, what, RULE_KEY)
        curve = _oid(params) if tag == 0x06 else None
    return _oid(oid), curve, bits[1:]


def parse_public_key(data: bytes, hint: Curve) -> PublicKey:
    """Decode a DER SubjectPublicKeyInfo, or a bare point on ``hint`` (the curve SA names)."""
    if data[:1] == b"\x30":
        try:
            return _from_spki(data)
        except InvalidInput:
            if len(data) not in _point_lengths(hint):
                raise
    if len(data) in _point_lengths(hint):
        point = b"\x04" + data if len(data) == 2 * hint.size else data
        return PublicKey("ec", hint, hint.name, point)
    raise _err(
        f"public key is neither a DER SubjectPublicKeyInfo nor a point on {hint.name} "
        f"({sorted(_point_lengths(hint))} bytes): found {len(data)} bytes",
        RULE_KEY,
    )


def _point_lengths(curve: Curve) -> set[int]:
    return {2 * curve.size, 2 * curve.size + 1, curve.size + 1}


def _from_spki(data: bytes) -> PublicKey:
    alg, curve_oid, bits = _spki(data)
    if alg == _RSA_ENCRYPTION:
        return PublicKey("rsa", None, "RSA", bits)
    if alg != _EC_PUBLIC_KEY:
        return PublicKey("other", None, f"algorithm {alg}", bits)
    if curve_oid is None:
        raise _err("public key gives explicit curve parameters; expected a named curve", RULE_KEY)
    curve = _BY_OID.get(curve_oid)
    label = curve.name if curve else _OTHER_OIDS.get(curve_oid, f"curve {curve_oid}")
    return PublicKey("ec", curve, label, bits)


def decode_signature(sd: str, se: str | None, curve: Curve) -> tuple[int, int]:
    """(r, s) of SD: hex (SE absent or "hex") or base64; DER, or tolerated bare r || s."""
    encoding = (se or "hex").strip().lower()
    if encoding not in ("hex", "base64"):
        raise _err(f"SE is {se!r}; expected 'hex' or 'base64'", RULE_SD)
    raw = decode_binary_text(sd, encoding, f"signature SD ({encoding})", RULE_SD)
    if raw[:1] == b"\x30":
        try:
            return _der_signature(raw)
        except InvalidInput:
            if len(raw) != 2 * curve.size:
                raise
    if len(raw) == 2 * curve.size:
        return int.from_bytes(raw[: curve.size], "big"), int.from_bytes(raw[curve.size :], "big")
    raise _err(
        f"signature SD is neither a DER ECDSA-Sig-Value nor r || s of {2 * curve.size} bytes: "
        f"found {len(raw)} bytes starting 0x{raw[:1].hex()}",
        RULE_SD,
    )


def _der_signature(raw: bytes) -> tuple[int, int]:
    what = "signature SD (DER ECDSA-Sig-Value)"
    body, end = _der_expect(raw, 0, 0x30, what, RULE_SD)
    r, pos = _der_expect(body, 0, 0x02, what, RULE_SD)
    s, pos = _der_expect(body, pos, 0x02, what, RULE_SD)
    if end != len(raw) or pos != len(body):
        raise _err(f"{what}: trailing bytes", RULE_SD)
    for part in (r, s):
        if not part or part[0] & 0x80:
            raise _err(f"{what}: r and s must be positive INTEGERs", RULE_SD)
    return int.from_bytes(r, "big"), int.from_bytes(s, "big")


def verify_signature(
    key: PublicKey, algorithm: Algorithm, rs: tuple[int, int], message: bytes
) -> bool:
    """True when (r, s) is a valid ECDSA signature by ``key`` over ``message``.

    The key must lie on ``algorithm.curve`` (the caller checks the names); an invalid point
    raises :class:`InvalidInput`.
    """
    _, hashlib_hash = _HASHES[algorithm.hash_name]
    loaded = load_key(key, algorithm.curve)
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        crypto_hash = _HASHES[algorithm.hash_name][0]
        try:
            loaded.verify(encode_dss_signature(*rs), message, ec.ECDSA(crypto_hash()))
        except InvalidSignature:
            return False
        return True
    try:
        return bool(loaded.verify(b"", message, hashfunc=hashlib_hash, sigdecode=lambda _s, _o: rs))
    except ecdsa.BadSignatureError:
        return False


def load_key(key: PublicKey, curve: Curve) -> Any:
    """The verifying key of ``key`` on ``curve`` (cryptography, or ecdsa for secp192k1).

    Raises :class:`InvalidInput` when the point does not lie on the curve.
    """
    if curve.crypto is not None:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve.crypto(), key.point)
        except ValueError as exc:
            raise _bad_point(curve) from exc
    try:
        return ecdsa.VerifyingKey.from_string(key.point, curve=curve.ecdsa_curve)
    except (ecdsa.errors.MalformedPointError, ValueError, AssertionError) as exc:
        raise _bad_point(curve) from exc


def _bad_point(curve: Curve) -> InvalidInput:
    return _err(f"public key is not a valid point on {curve.name}", RULE_KEY)


def _err(message: str, rule: str) -> InvalidInput:
    """An :class:`InvalidInput` whose message ends with the rule it enforces."""
    return InvalidInput(f"{message} [{rule}]", rule=rule)
