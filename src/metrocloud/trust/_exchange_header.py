"""The header of a confidential document: strict structure checks and the bound parameters.

A header (docs/exchange.md#format) is the JSON object the sender signs::

    {"format": "metrocloud-exchange-v1", "id": "xch-DE-...", "sender": "pty-DE-...",
     "created_at": "...Z", "content_type": "application/pdf", "suite": SUITE,
     "chunk_size": 1048576,
     "recipients": [{"party": "pty-FR-...", "key_id": "<hex>", "enc": "<b64 32 bytes>",
                     "sealed_key": "<b64 48 bytes>"}],
     "size": 10485760, "ciphertext_size": 10485920, "chunks": 10,
     "tags_sha256": "<hex>", "key_commitment": "<hex>"}

Its *parameters* (everything known before encryption: the header without the sizes, the
digests and each recipient's ``enc`` and ``sealed_key``) are hashed into every chunk's
associated data and into the key schedule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from metrocloud.domain.errors import InvalidInput
from metrocloud.trust._b64 import b64decode_strict
from metrocloud.trust._chunks import Layout
from metrocloud.trust._time import parse_utc_timestamp
from metrocloud.trust.canonical import canonical_json

__all__ = [
    "FORMAT",
    "MAX_RECIPIENTS",
    "MESSAGE_ID",
    "PARTY_ID",
    "SUITE",
    "check_header",
    "params_of",
    "params_sha256",
]

FORMAT = "metrocloud-exchange-v1"
SUITE = "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
MAX_RECIPIENTS = 100
MESSAGE_ID = re.compile(r"xch-([A-Z]{2})-[0-9A-HJKMNP-TV-Z]{26}")
PARTY_ID = re.compile(r"pty-([A-Z]{2})-[0-9A-HJKMNP-TV-Z]{26}")
_MEDIA = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = frozenset(
    {
        "format",
        "id",
        "sender",
        "created_at",
        "content_type",
        "suite",
        "chunk_size",
        "recipients",
        "size",
        "ciphertext_size",
        "chunks",
        "tags_sha256",
        "key_commitment",
    }
)
_RECIPIENT_KEYS = frozenset({"party", "key_id", "enc", "sealed_key"})
_PARAM_KEYS = ("format", "id", "sender", "created_at", "content_type", "suite", "chunk_size")
_RULE = "metrocloud exchange v1 header (docs/exchange.md#format)"


def _fail(message: str) -> InvalidInput:
    return InvalidInput(f"envelope header: {message}", rule=_RULE)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"{name} must be an integer >= 0, got {value!r}")
    return value


def check_header(header: object) -> Layout:
    """Check every field of ``header``; return its chunk layout. :class:`InvalidInput`
    (with the field and the expectation) for the first field that does not hold."""
    if not isinstance(header, Mapping):
        raise _fail(f"must be a JSON object, got {type(header).__name__}")
    if set(header) != _KEYS:
        missing, extra = sorted(_KEYS - set(header)), sorted(set(map(str, header)) - _KEYS)
        raise _fail(f"fields differ from the format: missing {missing}, unexpected {extra}")
    if header["format"] != FORMAT:
        raise _fail(f"format must be {FORMAT!r}, got {header['format']!r}")
    if header["suite"] != SUITE:
        raise _fail(f"suite must be {SUITE!r}, got {header['suite']!r}")
    for name, pattern in (("id", MESSAGE_ID), ("sender", PARTY_ID), ("content_type", _MEDIA)):
        value = header[name]
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise _fail(f"{name} {value!r} does not match {pattern.pattern}")
    parse_utc_timestamp(header["created_at"], what="envelope header created_at")
    layout = Layout(
        size=_int(header["size"], "size"), chunk_size=_int(header["chunk_size"], "chunk_size")
    )
    for name, expected in (("chunks", layout.chunks), ("ciphertext_size", layout.ciphertext_size)):
        if _int(header[name], name) != expected:
            raise _fail(
                f"{name} must be {expected} for size {layout.size} in chunks of "
                f"{layout.chunk_size}, got {header[name]}"
            )
    for name in ("tags_sha256", "key_commitment"):
        if not isinstance(header[name], str) or _HEX64.fullmatch(header[name]) is None:
            raise _fail(f"{name} must be 64 lowercase hex characters, got {header[name]!r}")
    _check_recipients(header["recipients"])
    return layout


def _check_recipients(recipients: object) -> None:
    if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
        count = len(recipients) if isinstance(recipients, list) else type(recipients).__name__
        raise _fail(f"recipients must be a list of 1 to {MAX_RECIPIENTS} entries, got {count}")
    seen: set[str] = set()
    for i, r in enumerate(recipients):
        where = f"recipients[{i}]"
        if not isinstance(r, Mapping) or set(r) != _RECIPIENT_KEYS:
            raise _fail(f"{where} must have exactly {sorted(_RECIPIENT_KEYS)}")
        if not isinstance(r["party"], str) or PARTY_ID.fullmatch(r["party"]) is None:
            raise _fail(f"{where}.party {r['party']!r} is not a party id")
        if r["party"] in seen:
            raise _fail(f"{where}.party {r['party']} is listed twice")
        seen.add(r["party"])
        if not isinstance(r["key_id"], str) or _HEX64.fullmatch(r["key_id"]) is None:
            raise _fail(f"{where}.key_id must be 64 lowercase hex characters")
        for name, size in (("enc", 32), ("sealed_key", 48)):
            raw = b64decode_strict(r[name], what=f"envelope header {where}.{name}")
            if len(raw) != size:
                raise _fail(f"{where}.{name} must be {size} bytes, got {len(raw)}")


def params_of(header: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters bound into the chunks: fixed before encryption starts."""
    params = {name: header[name] for name in _PARAM_KEYS}
    params["recipients"] = [
        {"party": r["party"], "key_id": r["key_id"]} for r in header["recipients"]
    ]
    return params


def params_sha256(params: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(b"metrocloud-exchange-params-v1\x00" + canonical_json(params)).digest()
