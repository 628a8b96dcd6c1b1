"""Bearer tokens and the signed token request (proof of possession of the party key)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from metrocloud.domain.errors import InvalidInput, Unauthenticated, VerificationError
from metrocloud.trust import (
    TOKEN_REQUEST_DOMAIN,
    KeyAlgorithm,
    PrivateKey,
    canonical_json,
    check_secret,
    issue_token,
    parse_token,
    sign_token_request,
    token_request_message,
    verify_token_request,
)

NOW = datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=UTC)

# -- tokens ----------------------------------------------------------------------------------


def test_issued_token_shape() -> None:
    issued = issue_token()
    assert re.fullmatch(r"mct_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", issued.token)
    token_id, secret = parse_token(issued.token)
    assert token_id == issued.token_id
    assert issued.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert check_secret(secret, issued.secret_hash)


def test_tokens_are_unique() -> None:
    issued = [issue_token() for _ in range(50)]
    assert len({t.token_id for t in issued}) == 50
    assert len({t.secret_hash for t in issued}) == 50


def test_repr_hides_secret() -> None:
    issued = issue_token()
    _, secret = parse_token(issued.token)
    for text in (repr(issued), str(issued)):
        assert secret not in text and issued.token not in text
        assert issued.token_id in text


def test_secret_may_contain_underscores() -> None:
    secret = "_" * 10 + "a-b_" * 8 + "z"
    assert len(secret) == 43
    assert parse_token(f"mct_0123456789abcdef_{secret}") == ("0123456789abcdef", secret)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mct_",
        "mct_0123456789abcdef",
        "mct_0123456789abcdef_" + "a" * 42,
        "mct_0123456789abcdef_" + "a" * 44,
        "mct_0123456789ABCDEF_" + "a" * 43,
        "mct_0123456789abcde_" + "a" * 44,
        "xyz_0123456789abcdef_" + "a" * 43,
        "mct_0123456789abcdef_" + "a" * 42 + "=",
        "mct_0123456789abcdef_" + "a" * 42 + "+",
        " mct_0123456789abcdef_" + "a" * 43,
        "mct_0123456789abcdef_" + "a" * 43 + "\n",
        "Bearer mct_0123456789abcdef_" + "a" * 43,
    ],
)
def test_malformed_tokens_are_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        parse_token(token)
    assert not isinstance(info.value, InvalidInput)
    assert str(info.value).startswith("malformed bearer token")
    if len(token) > 8:
        assert token.strip() not in str(info.value)  # never echo a presented secret


def test_non_string_token_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        parse_token(None)  # type: ignore[arg-type]


def test_check_secret_rejects_wrong_secret() -> None:
    issued = issue_token()
    _, secret = parse_token(issued.token)
    other = issue_token()
    assert not check_secret(secret, other.secret_hash)
    assert not check_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), issued.secret_hash)
    assert not check_secret("", issued.secret_hash)
    assert not check_secret("\ud800", issued.secret_hash)
    assert not check_secret(secret, b"")


# -- token requests ---------------------------------------------------------------------------


@pytest.fixture(params=list(KeyAlgorithm), ids=[a.value for a in KeyAlgorithm])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


def test_token_request_message() -> None:
    message = token_request_message("party-1", "2026-11-24T10:00:00.123Z")
    assert message == TOKEN_REQUEST_DOMAIN + (
        b'{"party_id":"party-1","timestamp":"2026-11-24T10:00:00.123Z"}'
    )


def test_sign_and_verify_token_request(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    assert request.keys() == {"party_id", "timestamp", "key_id", "signature"}
    assert request["timestamp"] == "2026-11-24T10:00:00.123Z"
    assert request["key_id"] == key.key_id
    verify_token_request(request, key.public_key, now=NOW)
    verify_token_request(request, key.public_key, now=NOW + timedelta(minutes=5))
    verify_token_request(request, key.public_key, now=NOW - timedelta(minutes=5))


def test_default_clock_is_now(key: PrivateKey) -> None:
    verify_token_request(sign_token_request("party-1", key), key.public_key)


def test_stale_request_rejected_with_evidence(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    with pytest.raises(VerificationError) as info:
        verify_token_request(request, key.public_key, now=NOW + timedelta(seconds=412))
    assert str(info.value) == (
        "timestamp 2026-11-24T10:00:00.123Z is 412 s away from node time "
        "2026-11-24T10:06:52.123Z (behind), allowed 300 s"
    )


def test_future_request_rejected(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW + timedelta(seconds=300.5))
    with pytest.raises(VerificationError, match=r"is 300\.5 s away .*\(ahead of\), allowed 300 s"):
        verify_token_request(request, key.public_key, now=NOW)


def test_custom_skew(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    later = NOW + timedelta(seconds=31)
    with pytest.raises(VerificationError, match="allowed 30 s"):
        verify_token_request(request, key.public_key, now=later, max_skew=timedelta(seconds=30))
    verify_token_request(request, key.public_key, now=later, max_skew=timedelta(seconds=31))


def test_request_for_another_party_fails(key: PrivateKey) -> None:
    request: dict[str, Any] = sign_token_request("party-1", key, NOW)
    request["party_id"] = "party-2"
    with pytest.raises(VerificationError, match=f"does not verify under key {key.key_id}"):
        verify_token_request(request, key.public_key, now=NOW)


def test_shifted_timestamp_fails_signature(key: PrivateKey) -> None:
    request: dict[str, Any] = sign_token_request("party-1", key, NOW - timedelta(hours=1))
    request["timestamp"] = "2026-11-24T10:00:00.123Z"  # made fresh again by an attacker
    with pytest.raises(VerificationError, match="does not verify"):
        verify_token_request(request, key.public_key, now=NOW)


def test_other_key_fails(key: PrivateKey) -> None:
    other = PrivateKey.generate()
    request = sign_token_request("party-1", other, NOW)
    with pytest.raises(VerificationError) as info:
        verify_token_request(request, key.public_key, now=NOW)
    assert str(info.value) == (
        f"token request signed with key {other.key_id}, party's key is {key.key_id}"
    )


def test_token_request_signature_is_domain_separated(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    body = {"party_id": "party-1", "timestamp": request["timestamp"]}
    with pytest.raises(VerificationError):
        key.public_key.verify(base64.b64decode(request["signature"]), canonical_json(body))


@pytest.mark.parametrize(
    ("change", "evidence"),
    [
        ({"extra": "x"}, "expected exactly"),
        ({"signature": None}, "signature must be a string"),
        ({"timestamp": "2026-11-24T10:00:00Z"}, "RFC 3339"),
        ({"signature": "!!"}, "padded base64"),
    ],
)
def test_malformed_requests_are_invalid_input(
    key: PrivateKey, change: dict[str, Any], evidence: str
) -> None:
    request: dict[str, Any] = {**sign_token_request("party-1", key, NOW), **change}
    with pytest.raises(InvalidInput, match=evidence):
        verify_token_request(request, key.public_key, now=NOW)


def test_missing_field_is_invalid_input(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    del request["key_id"]
    with pytest.raises(InvalidInput, match="expected exactly"):
        verify_token_request(request, key.public_key, now=NOW)


def test_naive_clock_rejected(key: PrivateKey) -> None:
    request = sign_token_request("party-1", key, NOW)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        verify_token_request(request, key.public_key, now=datetime(2026, 11, 24, 10, 0))
