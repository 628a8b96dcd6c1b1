"""Request signatures: a party signs the JSON body it sends to the API."""

from __future__ import annotations

import base64
import re

import pytest

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust import (
    REQUEST_DOMAIN,
    KeyAlgorithm,
    PrivateKey,
    canonical_json,
    parse_request_signature,
    sign_request,
    verify_request,
)

BODY = {"instrument": "SN-1", "readings": [1.5, 2.0], "note": "Prüfung"}


@pytest.fixture(params=list(KeyAlgorithm), ids=[a.value for a in KeyAlgorithm])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


def test_header_format(key: PrivateKey) -> None:
    header = sign_request(BODY, key)
    match = re.fullmatch(r"keyid=([0-9a-f]{64});alg=([a-z0-9-]+);sig=([A-Za-z0-9+/=]+)", header)
    assert match is not None
    assert match.group(1) == key.key_id and match.group(2) == key.algorithm.value
    signature = base64.b64decode(match.group(3))
    key.public_key.verify(signature, REQUEST_DOMAIN + canonical_json(BODY))


def test_round_trip(key: PrivateKey) -> None:
    header = sign_request(BODY, key)
    signature = verify_request(BODY, header, key.public_key)
    assert signature.key_id == key.key_id and signature.alg is key.algorithm
    assert signature == parse_request_signature(header)


def test_body_key_order_does_not_matter(key: PrivateKey) -> None:
    header = sign_request(BODY, key)
    verify_request(dict(reversed(list(BODY.items()))), header, key.public_key)


def test_tampered_body_fails(key: PrivateKey) -> None:
    header = sign_request(BODY, key)
    with pytest.raises(VerificationError, match=key.key_id):
        verify_request({**BODY, "instrument": "SN-2"}, header, key.public_key)


def test_key_mismatch_names_both_keys(key: PrivateKey) -> None:
    other = PrivateKey.generate()
    header = sign_request(BODY, other)
    with pytest.raises(VerificationError) as info:
        verify_request(BODY, header, key.public_key)
    assert str(info.value) == (
        f"request signed with key {other.key_id}, party's key is {key.key_id}"
    )


def test_forged_signature_under_right_key_id_fails(key: PrivateKey) -> None:
    forger = PrivateKey.generate(key.algorithm)
    forged = sign_request(BODY, forger).replace(forger.key_id, key.key_id)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_request(BODY, forged, key.public_key)


def test_mislabeled_algorithm_fails() -> None:
    key = PrivateKey.generate(KeyAlgorithm.ED25519)
    header = sign_request(BODY, key).replace("alg=ed25519", "alg=ecdsa-p256-sha256")
    with pytest.raises(VerificationError, match="claims alg ecdsa-p256-sha256"):
        verify_request(BODY, header, key.public_key)


def test_parameters_may_come_in_any_order_with_spaces(key: PrivateKey) -> None:
    header = sign_request(BODY, key)
    parts = header.split(";")
    shuffled = " ; ".join([parts[2], parts[0], parts[1]])
    assert parse_request_signature(shuffled) == parse_request_signature(header)


KEY_ID = "a" * 64
SIG = base64.b64encode(b"\x01" * 64).decode()


@pytest.mark.parametrize(
    ("header", "evidence"),
    [
        ("", "is not name=value"),
        (f"keyid={KEY_ID};alg=ed25519", "missing sig"),
        (f"keyid={KEY_ID};alg=ed25519;sig={SIG};extra=1", "'extra' is not expected"),
        (f"keyid={KEY_ID};keyid={KEY_ID};alg=ed25519;sig={SIG}", "'keyid' is repeated"),
        (f"keyid={KEY_ID},alg=ed25519,sig={SIG}", "missing alg, sig"),
        (f"keyid={KEY_ID.upper()};alg=ed25519;sig={SIG}", "64 lowercase hex"),
        (f"keyid={KEY_ID};alg=rsa-sha256;sig={SIG}", "'rsa-sha256' is not supported"),
        (f"keyid={KEY_ID};alg=ed25519;sig={SIG.rstrip('=')}", "padded base64"),
        (f"keyid={KEY_ID};alg=ed25519;sig=", "non-empty"),
        (f"keyid={KEY_ID};alg=ed25519;sig={SIG.replace('A', '-')}", "padded base64"),
    ],
)
def test_malformed_headers_are_invalid_input(header: str, evidence: str) -> None:
    with pytest.raises(InvalidInput, match=evidence):
        parse_request_signature(header)
    with pytest.raises(InvalidInput):
        verify_request(BODY, header, PrivateKey.generate().public_key)


def test_body_outside_json_model_is_invalid_input(key: PrivateKey) -> None:
    with pytest.raises(InvalidInput, match=r"RFC 8785 §3\.2"):
        sign_request({"when": object()}, key)
