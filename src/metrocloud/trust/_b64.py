"""Strict base64 (RFC 4648 §4, standard alphabet, with padding) for signatures and keys."""

from __future__ import annotations

import base64
import binascii
import re

from metrocloud.domain.errors import InvalidInput

__all__ = ["b64decode_strict", "b64encode"]

_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, *, what: str) -> bytes:
    """Decode standard padded base64, rejecting anything a re-encode would not reproduce.

    Rejects whitespace, the URL-safe alphabet, missing padding and non-zero trailing bits,
    so that every byte string has exactly one accepted encoding.
    """
    if not isinstance(text, str) or _B64.fullmatch(text) is None:
        raise InvalidInput(
            f"{what} is not standard padded base64 (RFC 4648 §4): "
            f"expected characters A-Z a-z 0-9 + / with '=' padding, found {_preview(text)}",
            rule="RFC 4648 §4",
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - the regex admits only valid text
        raise InvalidInput(f"{what} is not valid base64", rule="RFC 4648 §4") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise InvalidInput(
            f"{what} is not canonical base64: non-zero padding bits (RFC 4648 §3.5)",
            rule="RFC 4648 §3.5",
        )
    return data


def _preview(value: object) -> str:
    if not isinstance(value, str):
        return f"a {type(value).__name__}"
    if len(value) > 24:
        return f"{value[:24]!r}... ({len(value)} chars)"
    return repr(value)
