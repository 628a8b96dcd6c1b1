"""Bearer tokens bound to a party, and the proof of possession that obtains one.

A token is ``mct_<token_id>_<secret>``: ``token_id`` is 16 random hex characters (the
lookup key, safe to log), ``secret`` is ``secrets.token_urlsafe(32)`` (43 base64url
characters, 256 bits). The node stores only SHA-256 of the secret.

To obtain a token a party signs ``TOKEN_REQUEST_DOMAIN + canonical_json({"party_id",
"timestamp"})`` with its registered key; the node accepts the request only while the
timestamp is within ``max_skew`` of its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from metrocloud.domain.errors import InvalidInput, Unauthenticated, VerificationError
from metrocloud.trust._b64 import b64decode_strict, b64encode
from metrocloud.trust._time import parse_utc_timestamp, utc_timestamp
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "TOKEN_REQUEST_DOMAIN",
    "IssuedToken",
    "check_secret",
    "issue_token",
    "parse_token",
    "sign_token_request",
    "token_request_message",
    "verify_token_request",
]

TOKEN_REQUEST_DOMAIN = b"metrocloud-token-request-v1\x00"
_TOKEN = re.compile(r"mct_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_TOKEN_SHAPE = "mct_<16 hex>_<43 base64url characters>"  # noqa: S105 - a format hint
_REQUEST_KEYS = frozenset({"party_id", "timestamp", "key_id", "signature"})
_RULE = "metrocloud token request v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedToken:
    """A freshly issued token: hand ``token`` to the party once, store ``secret_hash``."""

    token_id: str
    token: str = field(repr=False)
    secret_hash: bytes = field(repr=False)


def issue_token() -> IssuedToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedToken(
        token_id=token_id,
        token=f"mct_{token_id}_{secret}",
        secret_hash=hashlib.sha256(secret.encode("ascii")).digest(),
    )


def parse_token(token: str) -> tuple[str, str]:
    """Split a bearer token into ``(token_id, secret)``; :class:`Unauthenticated` if malformed."""
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        # never echo the presented value: it may be a real secret with a typo
        raise Unauthenticated(f"malformed bearer token: expected {_TOKEN_SHAPE}")
    return match.group(1), match.group(2)


def check_secret(secret: str, expected_hash: bytes) -> bool:
    """Constant-time comparison of SHA-256(``secret``) with the stored hash."""
    try:
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
    except (AttributeError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(digest, expected_hash)


def token_request_message(party_id: str, timestamp: str) -> bytes:
    """The bytes a party signs to request a token."""
    return TOKEN_REQUEST_DOMAIN + canonical_json({"party_id": party_id, "timestamp": timestamp})


def sign_token_request(
    party_id: str, key: PrivateKey, now: datetime | None = None
) -> dict[str, str]:
    """Build a token request ``{"party_id", "timestamp", "key_id", "signature"}``."""
    timestamp = utc_timestamp(now)
    signature = key.sign(token_request_message(party_id, timestamp))
    return {
        "party_id": party_id,
        "timestamp": timestamp,
        "key_id": key.key_id,
        "signature": b64encode(signature),
    }


def verify_token_request(
    request: Mapping[str, Any],
    key: PublicKey,
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
) -> None:
    """Check a token request against the party's registered ``key`` and the node clock.

    :class:`InvalidInput` for a malformed request; :class:`VerificationError` for a key
    mismatch, a bad signature, or a timestamp more than ``max_skew`` away from ``now``.
    The check does not prevent replay inside the window; callers that need single use
    must remember accepted signatures for ``2 * max_skew``.
    """
    if not isinstance(request, Mapping):
        raise InvalidInput(f"token request must be an object, found {type(request).__name__}")
    keys = set(request)
    if keys != _REQUEST_KEYS:
        raise InvalidInput(
            f"token request has keys {sorted(map(str, keys))}; expected exactly "
            f"{sorted(_REQUEST_KEYS)}",
            rule=_RULE,
        )
    for name in sorted(_REQUEST_KEYS):
        if not isinstance(request[name], str):
            raise InvalidInput(f"token request {name} must be a string", rule=_RULE)
    timestamp: str = request["timestamp"]
    issued = parse_utc_timestamp(timestamp, what="token request timestamp")
    if request["key_id"] != key.key_id:
        raise VerificationError(
            f"token request signed with key {request['key_id']}, party's key is {key.key_id}",
            rule=_RULE,
        )
    signature = b64decode_strict(request["signature"], what="token request signature")
    key.verify(signature, token_request_message(request["party_id"], timestamp))
    _check_fresh(timestamp, issued, now, max_skew)


def _check_fresh(
    timestamp: str, issued: datetime, now: datetime | None, max_skew: timedelta
) -> None:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("node time must be a timezone-aware datetime")
    offset = (issued - now).total_seconds()
    allowed = max_skew.total_seconds()
    if abs(offset) > allowed:
        direction = "ahead of" if offset > 0 else "behind"
        raise VerificationError(
            f"timestamp {timestamp} is {_seconds(abs(offset))} s away from node time "
            f"{utc_timestamp(now)} ({direction}), allowed {_seconds(allowed)} s",
            rule=_RULE,
        )


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")
