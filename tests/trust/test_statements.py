"""Signed statements (ledger entries): envelope, strict parsing, verification, domains."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput, MetrocloudError, NotFound, VerificationError
from metrocloud.trust import (
    REQUEST_DOMAIN,
    STATEMENT_DOMAIN,
    KeyAlgorithm,
    PrivateKey,
    PublicKey,
    Signature,
    SignedStatement,
    Statement,
    canonical_json,
    sign_statement,
    utc_timestamp,
)

ED = PrivateKey.generate(KeyAlgorithm.ED25519)
P256 = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
KEYS = {key.key_id: key.public_key for key in (ED, P256)}


def resolve(key_id: str) -> PublicKey:
    try:
        return KEYS[key_id]
    except KeyError:
        raise NotFound(f"unknown key {key_id}") from None


def make_statement(**changes: Any) -> Statement:
    fields: dict[str, Any] = {
        "kind": "certificate.issued",
        "signer": "notified-body-0102",
        "issued_at": "2026-11-24T10:00:00.123Z",
        "body": {"certificate": "DE-M-21-0001", "mpe": 0.5, "classes": ["A", "B"]},
        "extra": {"credential": "mct_token_id"},
    }
    fields.update(changes)
    return Statement(**fields)


# -- Statement -------------------------------------------------------------------------


def test_payload_has_core_fields_and_extra() -> None:
    assert make_statement().payload() == {
        "kind": "certificate.issued",
        "signer": "notified-body-0102",
        "issued_at": "2026-11-24T10:00:00.123Z",
        "body": {"certificate": "DE-M-21-0001", "mpe": 0.5, "classes": ["A", "B"]},
        "credential": "mct_token_id",
    }
    assert make_statement(extra={}).payload().keys() == {"kind", "signer", "issued_at", "body"}
    assert Statement(kind="k", signer="s", issued_at=utc_timestamp(), body={}).extra == {}


@pytest.mark.parametrize("core", ["kind", "signer", "issued_at", "body"])
def test_extra_cannot_override_core_fields(core: str) -> None:
    with pytest.raises(InvalidInput, match=f"may not override core payload fields {core}"):
        make_statement(extra={core: "forged"})


@pytest.mark.parametrize(
    "issued_at",
    [
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:00:00.123456Z",
        "2026-11-24T10:00:00.123+00:00",
        "2026-11-24 10:00:00.123Z",
        "2026-02-30T10:00:00.000Z",
        "",
    ],
)
def test_issued_at_must_be_utc_milliseconds(issued_at: str) -> None:
    with pytest.raises(InvalidInput, match="issued_at"):
        make_statement(issued_at=issued_at)


@pytest.mark.parametrize(("name", "value"), [("kind", ""), ("signer", 7), ("body", ["x"])])
def test_statement_field_types(name: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=name):
        make_statement(**{name: value})


def test_utc_timestamp_format() -> None:
    moment = datetime(2026, 11, 24, 11, 0, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    assert utc_timestamp(moment) == "2026-11-24T10:00:00.123Z"  # converted, truncated
    assert utc_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    now = utc_timestamp()
    assert len(now) == 24 and now.endswith("Z")
    with pytest.raises(InvalidInput, match="naive datetime"):
        utc_timestamp(datetime(2026, 11, 24, 10, 0))


# -- signing, serialization, verification --------------------------------------------------


@pytest.mark.parametrize("key", [ED, P256], ids=["ed25519", "p256"])
def test_round_trip_and_verify(key: PrivateKey) -> None:
    signed = sign_statement(make_statement(), key)
    data = signed.to_bytes()
    parsed = SignedStatement.from_bytes(data)
    assert parsed == signed
    assert parsed.to_bytes() == data
    parsed.verify(resolve)
    assert parsed.signed_by(key.key_id)
    assert not parsed.signed_by(ED.key_id if key is P256 else P256.key_id)


def test_envelope_layout_is_exactly_as_specified() -> None:
    signed = sign_statement(make_statement(), ED)
    document = json.loads(signed.to_bytes())
    assert document.keys() == {"payload", "signatures"}
    assert document["payload"] == make_statement().payload()
    [entry] = document["signatures"]
    assert entry.keys() == {"key_id", "alg", "sig"}
    assert entry["key_id"] == ED.key_id and entry["alg"] == "ed25519"
    assert len(entry["sig"]) == 88 and entry["sig"].endswith("==")  # 64 bytes, padded
    assert signed.to_bytes() == canonical_json(document)


def test_signature_is_over_domain_and_canonical_payload() -> None:
    statement = make_statement()
    [signature] = sign_statement(statement, ED).signatures
    message = STATEMENT_DOMAIN + canonical_json(statement.payload())
    ED.public_key.verify(signature.sig, message)
    with pytest.raises(VerificationError):  # without the domain prefix it is not valid
        ED.public_key.verify(signature.sig, canonical_json(statement.payload()))


def test_statement_signature_cannot_be_replayed_as_request_signature() -> None:
    statement = make_statement()
    [signature] = sign_statement(statement, ED).signatures
    with pytest.raises(VerificationError):
        ED.public_key.verify(signature.sig, REQUEST_DOMAIN + canonical_json(statement.payload()))


def test_multiple_signers_all_checked() -> None:
    signed = sign_statement(make_statement(), ED, P256)
    assert [s.key_id for s in signed.signatures] == [ED.key_id, P256.key_id]
    parsed = SignedStatement.from_bytes(signed.to_bytes())
    parsed.verify(resolve)
    # replace the second signature with a forged one: verification names that key
    forged = Signature(key_id=P256.key_id, alg=KeyAlgorithm.ECDSA_P256, sig=P256.sign(b"other"))
    bad = SignedStatement(statement=parsed.statement, signatures=(parsed.signatures[0], forged))
    with pytest.raises(VerificationError, match=P256.key_id):
        bad.verify(resolve)


def test_altered_payload_fails_verification() -> None:
    signed = sign_statement(make_statement(), ED)
    altered = SignedStatement(
        statement=make_statement(body={"certificate": "DE-M-21-0002"}),
        signatures=signed.signatures,
    )
    with pytest.raises(VerificationError, match=rf"'certificate.issued'.*{ED.key_id}"):
        altered.verify(resolve)


def test_unknown_key_raised_by_resolver() -> None:
    stranger = PrivateKey.generate()
    signed = sign_statement(make_statement(), stranger)
    with pytest.raises(NotFound, match=stranger.key_id):
        signed.verify(resolve)


def test_resolver_returning_wrong_key_is_caught() -> None:
    signed = sign_statement(make_statement(), ED)
    with pytest.raises(VerificationError, match="resolver returned key"):
        signed.verify(lambda key_id: P256.public_key)


def test_algorithm_label_must_match_key() -> None:
    statement = make_statement()
    sig = ED.sign(STATEMENT_DOMAIN + canonical_json(statement.payload()))
    mislabeled = SignedStatement(
        statement=statement,
        signatures=(Signature(key_id=ED.key_id, alg=KeyAlgorithm.ECDSA_P256, sig=sig),),
    )
    with pytest.raises(VerificationError, match="claims alg ecdsa-p256-sha256"):
        mislabeled.verify(resolve)


def test_signing_needs_a_key_and_distinct_keys() -> None:
    with pytest.raises(InvalidInput, match="at least one key"):
        sign_statement(make_statement())
    with pytest.raises(InvalidInput, match="more than once"):
        sign_statement(make_statement(), ED, ED)


def test_body_must_be_canonicalizable_to_sign() -> None:
    with pytest.raises(InvalidInput, match=r"RFC 8785 §3\.2"):
        sign_statement(make_statement(body={"value": float("nan")}), ED)


@pytest.mark.parametrize(
    ("fields", "evidence"),
    [
        ({"key_id": "ABC"}, "64 lowercase hex"),
        ({"alg": "rsa"}, "not supported"),
        ({"sig": b""}, "non-empty"),
    ],
)
def test_signature_fields_validated(fields: dict[str, Any], evidence: str) -> None:
    values: dict[str, Any] = {"key_id": ED.key_id, "alg": "ed25519", "sig": b"x"}
    values.update(fields)
    with pytest.raises(InvalidInput, match=evidence):
        Signature(**values)
    assert Signature(key_id=ED.key_id, alg="ed25519", sig=b"x").alg is KeyAlgorithm.ED25519  # type: ignore[arg-type]


# -- strict parsing -------------------------------------------------------------------------

VALID = sign_statement(make_statement(), ED).to_bytes()


def _mutated(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    document = json.loads(VALID)
    mutate(document)
    return canonical_json(document)


def test_from_bytes_rejects_whitespace_and_reordering() -> None:
    document = json.loads(VALID)
    pretty = json.dumps(document, indent=2, ensure_ascii=False).encode()
    reordered = json.dumps(
        {"signatures": document["signatures"], "payload": document["payload"]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    for data in (pretty, reordered, VALID + b"\n", b" " + VALID, VALID.replace(b'":', b'": ', 1)):
        with pytest.raises(VerificationError) as info:
            SignedStatement.from_bytes(data)
        assert str(info.value) == "statement is not in canonical form (RFC 8785)"


def test_from_bytes_rejects_non_canonical_numbers_and_escapes() -> None:
    for old, new in ((b'"mpe":0.5', b'"mpe":5e-1'), (b'"A"', b'"\\u0041"')):
        assert old in VALID
        with pytest.raises(VerificationError, match="not in canonical form"):
            SignedStatement.from_bytes(VALID.replace(old, new))


def test_from_bytes_rejects_non_canonical_base64() -> None:
    document = json.loads(VALID)
    sig = document["signatures"][0]["sig"]  # 64 bytes: in "...X==" X has 4 unused bits
    last = sig[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = alphabet[alphabet.index(last) ^ 0x01]  # flips an unused low bit
    document["signatures"][0]["sig"] = sig[:-3] + sloppy + "=="
    with pytest.raises(VerificationError, match=r"non-zero padding bits \(RFC 4648 §3\.5\)"):
        SignedStatement.from_bytes(canonical_json(document))


@pytest.mark.parametrize(
    ("mutate", "evidence"),
    [
        (lambda d: d.update(extra=1), "unexpected keys 'extra'"),
        (lambda d: d.pop("signatures"), "lacks signatures"),
        (lambda d: d.update(signatures=[]), "non-empty array, found an empty array"),
        (lambda d: d.update(signatures={}), "non-empty array, found an object"),
        (lambda d: d["payload"].pop("issued_at"), "payload lacks issued_at"),
        (lambda d: d["payload"].update(kind=1), "payload.kind must be a string"),
        (lambda d: d["payload"].update(body=[]), "payload.body must be an object"),
        (lambda d: d["payload"].update(issued_at="yesterday"), "issued_at"),
        (lambda d: d["signatures"][0].update(extra="x"), "unexpected keys 'extra'"),
        (lambda d: d["signatures"][0].pop("alg"), r"signatures\[0\] lacks alg"),
        (lambda d: d["signatures"][0].update(alg="rsa"), "'rsa' is not supported"),
        (lambda d: d["signatures"][0].update(key_id="x"), "64 lowercase hex"),
        (lambda d: d["signatures"][0].update(sig="not base64!"), "not standard padded base64"),
        (lambda d: d["signatures"][0].update(sig=""), "non-empty"),
        (lambda d: d["signatures"].append(dict(d["signatures"][0])), "more than once"),
    ],
)
def test_from_bytes_rejects_wrong_shapes(
    mutate: Callable[[dict[str, Any]], None], evidence: str
) -> None:
    with pytest.raises(VerificationError, match=evidence):
        SignedStatement.from_bytes(_mutated(mutate))


@pytest.mark.parametrize(
    ("data", "evidence"),
    [
        (b"", "not valid JSON"),
        (b"[]", "envelope must be a JSON object, found an array"),
        (b'{"payload":{},"payload":{}}', "duplicate object key 'payload'"),
        (b'{"a":NaN}', "NaN is not a JSON number"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_from_bytes_rejects_malformed_bytes(data: bytes, evidence: str) -> None:
    with pytest.raises(VerificationError, match=evidence):
        SignedStatement.from_bytes(data)


def test_large_integral_floats_survive_the_round_trip() -> None:
    signed = sign_statement(make_statement(body={"big": 1e20, "tiny": 1e-9}), P256)
    data = signed.to_bytes()
    assert b'"big":100000000000000000000' in data
    SignedStatement.from_bytes(data).verify(resolve)


ENVELOPES = {
    "ed25519": sign_statement(make_statement(), ED).to_bytes(),
    "p256": sign_statement(make_statement(), P256).to_bytes(),
    "both": sign_statement(make_statement(), ED, P256).to_bytes(),
}


@settings(max_examples=300)
@given(
    which=st.sampled_from(sorted(ENVELOPES)),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_is_detected(which: str, position: float, mask: int) -> None:
    original = ENVELOPES[which]
    data = bytearray(original)
    index = int(position * len(data))
    data[index] ^= mask
    with pytest.raises(MetrocloudError):
        SignedStatement.from_bytes(bytes(data)).verify(resolve)


@pytest.mark.parametrize("which", sorted(ENVELOPES))
def test_every_single_bit_flip_is_detected(which: str) -> None:
    original = ENVELOPES[which]
    for index in range(len(original)):
        data = bytearray(original)
        data[index] ^= 0x01
        with pytest.raises(MetrocloudError):
            SignedStatement.from_bytes(bytes(data)).verify(resolve)
