"""Identifiers in AAS paths and queries: base64url (RFC 4648 section 5), padded or not.

AAS Part 2 (IDTA-01002-3-0, "Encoding of identifiers") puts every identifier into a path
as ``UTF8-BASE64-URL``. Clients differ on the trailing ``=``: both forms are accepted. Anything
else (another alphabet, an impossible length, bytes that are not UTF-8) is a 400 that says
what was expected.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable

from metrocloud.domain.errors import InvalidInput
from metrocloud.services.aas import AssetLink

__all__ = ["BadIdentifier", "decode_asset_links", "decode_id", "encode_id"]

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_RULE = "IDTA-01002-3-0 (AAS Part 2), identifiers in paths are UTF8-BASE64-URL-encoded"


class BadIdentifier(InvalidInput):
    """An identifier or query value that is not base64url of UTF-8 (400)."""

    code = "bad-identifier"


def encode_id(identifier: str) -> str:
    """The unpadded base64url form of ``identifier`` (what this node writes into URLs)."""
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def _decode(value: str, what: str) -> str:
    body = value.rstrip("=")
    if not _BASE64URL.fullmatch(body) or len(body) % 4 == 1:
        raise BadIdentifier(
            f"{what} {value[:80]!r} is not base64url (RFC 4648 section 5: A-Z a-z 0-9 - _, "
            "padding optional)",
            rule=_RULE,
        )
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadIdentifier(
            f"{what} {value[:80]!r} decodes to bytes that are not UTF-8", rule=_RULE
        ) from None


def decode_id(value: str, what: str = "identifier") -> str:
    """The identifier that ``value`` (base64url, with or without padding) encodes."""
    text = _decode(value, what)
    if not text:
        raise BadIdentifier(f"{what} is empty", rule=_RULE)
    return text


def _link(item: object, what: str) -> AssetLink:
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("name"), str)
        or not isinstance(item.get("value"), str)
    ):
        raise BadIdentifier(
            f"{what} must be a SpecificAssetId object {{'name': ..., 'value': ...}} with two "
            f"strings, got {json.dumps(item)[:80]}",
            rule=_RULE,
        )
    return AssetLink(item["name"], item["value"])


def decode_asset_links(values: Iterable[str]) -> list[AssetLink]:
    """``assetIds`` query values: each base64url of a JSON SpecificAssetId, or of a list of them."""
    links: list[AssetLink] = []
    for value in values:
        text = _decode(value, "assetIds value")
        try:
            parsed = json.loads(text)
        except ValueError:
            raise BadIdentifier(
                f"assetIds value {value[:80]!r} is base64url, but not of JSON", rule=_RULE
            ) from None
        for item in parsed if isinstance(parsed, list) else [parsed]:
            links.append(_link(item, "assetIds value"))
    return links
