"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes that get hashed and signed.

:func:`canonical_json` is exact RFC 8785 output. The ``rfc8785`` package (Trail of Bits) is
the reference implementation; it is pure Python, so values the C ``json`` encoder provably
serializes identically (see :mod:`metrocloud.trust._jcs`) take a fast path and only the rest
(tiny or huge floats, object keys beyond the Basic Multilingual Plane) go to ``rfc8785``.

Rejected with :class:`~metrocloud.domain.errors.InvalidInput` (RFC 8785 §3.2 and I-JSON,
RFC 7493): non-string object keys, NaN and Infinity, integers beyond ±(2**53-1), strings
with lone surrogates, circular or overly deep structures, and any type outside dict, list,
tuple, str, int, float, bool and None.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import rfc8785

from metrocloud.trust._jcs import (
    FALLBACK,
    INTEGRAL_FLOATS,
    has_non_bmp_key,
    integral_floats_to_int,
    invalid,
    scan,
)

__all__ = ["canonical_json", "canonical_json_hash"]

#: lead byte of a 4-byte UTF-8 sequence: a character above U+FFFF somewhere in the output
_NON_BMP_LEAD = re.compile(rb"[\xf0-\xf4]")
_dumps = json.JSONEncoder(
    skipkeys=False,
    ensure_ascii=False,
    check_circular=False,  # the scan rejects cycles with a better message
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
).encode


def canonical_json(value: object) -> bytes:
    """Serialize ``value`` as RFC 8785 canonical JSON (UTF-8 bytes)."""
    flags = scan(value)
    if flags & FALLBACK:
        return _reference(value)
    if flags & INTEGRAL_FLOATS:
        value = integral_floats_to_int(value)
    try:
        encoded = _dumps(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(
            f"string contains the lone surrogate U+{ord(exc.object[exc.start]):04X}; "
            "JCS strings must be valid Unicode encodable as UTF-8",
            "RFC 8785 §3.2.2.2",
        ) from None
    if (
        not encoded.isascii()
        and _NON_BMP_LEAD.search(encoded) is not None
        and has_non_bmp_key(value)
    ):
        # code-point order and UTF-16 order (RFC 8785 §3.2.3) may differ: use the reference
        return _reference(value)
    return encoded


def canonical_json_hash(value: object) -> bytes:
    """SHA-256 of :func:`canonical_json` (32 bytes)."""
    return hashlib.sha256(canonical_json(value)).digest()


def _reference(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        # the scan admitted the value, so this can only be a string rfc8785 cannot encode
        raise invalid(f"value cannot be canonicalized: {exc}", "RFC 8785 §3.2.2.2") from None
