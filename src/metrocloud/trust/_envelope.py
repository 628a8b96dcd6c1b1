"""Strict structural parsing of signed-statement envelopes (before the canonical check)."""

from __future__ import annotations

import json
import re
from typing import Any

from metrocloud.domain.errors import VerificationError
from metrocloud.trust._jcs import json_number_from_int_literal

__all__ = ["CORE_KEYS", "KEY_ID", "SIGNATURE_KEYS", "parse_envelope"]

#: the payload fields every statement has; everything else in the payload is ``extra``
CORE_KEYS = ("kind", "signer", "issued_at", "body")
SIGNATURE_KEYS = ("key_id", "alg", "sig")
#: a key id: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo
KEY_ID = re.compile(r"[0-9a-f]{64}")
_ENVELOPE_KEYS = ("payload", "signatures")
_RULE = "metrocloud signed statement v1"


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return ``(payload, signatures)`` of an envelope, or raise :class:`VerificationError`.

    Checks shape and types only; the caller checks canonical form and signatures.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail(f"expected the envelope as bytes, found {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"statement is not valid UTF-8 (byte {exc.start}); RFC 8785 §3.2.4") from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_int=json_number_from_int_literal,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, duplicates, int limits
        raise _fail(f"statement is not valid JSON: {exc}") from None
    envelope = _object(document, "envelope", _ENVELOPE_KEYS, _ENVELOPE_KEYS)
    payload = _object(envelope["payload"], "payload", CORE_KEYS, None)
    for name in ("kind", "signer", "issued_at"):
        if not isinstance(payload[name], str):
            raise _fail(f"payload.{name} must be a string, found {_type(payload[name])}")
    if not isinstance(payload["body"], dict):
        raise _fail(f"payload.body must be an object, found {_type(payload['body'])}")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise _fail(
            f"signatures must be a non-empty array, found "
            f"{'an empty array' if signatures == [] else _type(signatures)}"
        )
    for index, entry in enumerate(signatures):
        where = f"signatures[{index}]"
        _object(entry, where, SIGNATURE_KEYS, SIGNATURE_KEYS)
        for name in SIGNATURE_KEYS:
            if not isinstance(entry[name], str):
                raise _fail(f"{where}.{name} must be a string, found {_type(entry[name])}")
    return payload, signatures


def _object(
    value: object, where: str, required: tuple[str, ...], allowed: tuple[str, ...] | None
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be a JSON object, found {_type(value)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise _fail(f"{where} lacks {', '.join(missing)}; expected keys {', '.join(required)}")
    if allowed is not None:
        unexpected = sorted(set(value) - set(allowed))
        if unexpected:
            raise _fail(
                f"{where} has unexpected keys {', '.join(map(repr, unexpected))}; "
                f"expected exactly {', '.join(allowed)}"
            )
    return value


class _DuplicateKey(ValueError):
    pass


class _Constant(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate object key {key!r} (RFC 8785 §3.1, RFC 7493 §2.3)")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise _Constant(f"{name} is not a JSON number (RFC 8785 §3.2.2.3)")


def _type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _fail(message: str) -> VerificationError:
    return VerificationError(message, rule=_RULE)
