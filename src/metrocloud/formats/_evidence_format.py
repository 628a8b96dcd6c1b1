"""Names, domains and the manifest signature of the evidence bundle format v1.

The manifest signature (member ``manifest.sig``) is the one member no hash covers, so it must
have exactly one byte form for its signature value: RFC 8785 canonical JSON, padded standard
base64 that re-encodes to itself (RFC 4648 §3.5), and for ECDSA P-256 the DER encoding with
the low ``s`` (``s <= n/2``; the signer normalizes, the verifier refuses the other one, which
anyone could compute from a valid signature). Ed25519 verification already refuses a
non-canonical ``S`` (RFC 8032 §5.1.7).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from metrocloud.domain.errors import VerificationError
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey, PublicKey

__all__ = [
    "ENTRY",
    "FORMAT",
    "HEAD",
    "MANIFEST",
    "MANIFEST_DOMAIN",
    "PROOFS",
    "READINGS",
    "REQUIRED",
    "SIGNATURE",
    "TIMELINE",
    "entry_name",
    "node_id_for",
    "sign_manifest",
    "verify_manifest_signature",
]

FORMAT: Final = "metrocloud-evidence-v1"
MANIFEST_DOMAIN: Final = b"metrocloud-evidence-manifest-v1\x00"
MANIFEST: Final = "manifest.json"
SIGNATURE: Final = "manifest.sig"
HEAD: Final = "ledger/head.json"
PROOFS: Final = "ledger/proofs.json"
READINGS: Final = "readings.parquet"
TIMELINE: Final = "timeline.json"
#: the members every bundle has besides the manifest, its signature and the ledger entries
REQUIRED: Final = frozenset({HEAD, PROOFS, READINGS, TIMELINE})
ENTRY: Final = re.compile(r"ledger/entries/(\d{15})\.json")

#: order of the P-256 group (FIPS 186-5 / SEC 2)
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SIG_RULE = "metrocloud evidence bundle v1 manifest signature (docs/forensics.md)"


def entry_name(leaf_index: int) -> str:
    """The member holding the ledger entry at ``leaf_index`` (15 digits: 2**48 leaves)."""
    return f"ledger/entries/{leaf_index:015d}.json"


def node_id_for(country: str, key_id: str) -> str:
    """A node's id and log id: ``node-<country>-<first 16 hex of its key id>``."""
    return f"node-{country}-{key_id[:16]}"


def _low_s(signature: bytes) -> bytes:
    r, s = decode_dss_signature(signature)
    return encode_dss_signature(r, min(s, _P256_N - s))


def sign_manifest(key: PrivateKey, manifest: bytes) -> bytes:
    """The ``manifest.sig`` member: canonical ``{"alg", "key_id", "sig"}``."""
    sig = key.sign(MANIFEST_DOMAIN + manifest)
    if key.algorithm is KeyAlgorithm.ECDSA_P256:
        sig = _low_s(sig)
    return canonical_json(
        {
            "key_id": key.key_id,
            "alg": key.algorithm.value,
            "sig": base64.b64encode(sig).decode("ascii"),
        }
    )


def _fail(message: str, rule: str = _SIG_RULE) -> VerificationError:
    return VerificationError(message, rule=rule)


def verify_manifest_signature(key: PublicKey, signed: object, manifest: bytes) -> None:
    """Check the parsed ``manifest.sig`` object against ``key``; VerificationError if not."""
    if not isinstance(signed, dict) or set(signed) != {"key_id", "alg", "sig"}:
        raise _fail("manifest.sig needs exactly alg, key_id and sig")
    if signed["key_id"] != key.key_id or signed["alg"] != key.algorithm.value:
        raise _fail(
            f"manifest is signed by key {signed['key_id']!r:.80} ({signed['alg']!r:.40}), the "
            f"node key is {key.key_id} ({key.algorithm.value})"
        )
    text = signed["sig"]
    try:
        sig = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        sig = None
    if sig is None or base64.b64encode(sig).decode("ascii") != text:
        raise _fail("manifest.sig sig is not canonical padded base64", "RFC 4648 §3.5")
    if key.algorithm is KeyAlgorithm.ECDSA_P256:
        try:
            r, s = decode_dss_signature(sig)
        except ValueError:
            raise _fail(
                "manifest signature is not a DER ECDSA signature", "RFC 3279 §2.2.3"
            ) from None
        if encode_dss_signature(r, s) != sig or s > _P256_N // 2:
            raise _fail("manifest signature is not the canonical low-s DER form of its value")
    key.verify(sig, MANIFEST_DOMAIN + manifest)
