"""metrocloud signed batch v1: round trip, canonical form, strict parsing, tamper detection."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats.batches import (
    FIELDS,
    FORMAT,
    GENESIS_PREV,
    MAX_READINGS,
    MAX_STATUS,
    WIRE_PREFIX,
    BatchPayload,
    InvalidBatch,
    SignedBatch,
    encode_batch,
    open_batch,
    parse_payload,
    payload_digest,
    split_wire,
    verify_batch,
)
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey, PublicKey

SAFE = 2**53 - 1
KEYS = {algorithm: PrivateKey.generate(algorithm) for algorithm in KeyAlgorithm}
ED = KEYS[KeyAlgorithm.ED25519]
INSTRUMENT = "ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6"
SOFTWARE = hashlib.sha256(b"legally relevant").hexdigest()


def _batch(key: PrivateKey = ED, **overrides: Any) -> SignedBatch:
    fields: dict[str, Any] = {
        "instrument": INSTRUMENT,
        "counter": 1,
        "prev": GENESIS_PREV,
        "software": SOFTWARE,
        "quantity": "1-0:1.8.0",
        "unit": "kWh",
        "t": [1_767_607_200_000, 1_767_608_100_000, 1_767_609_000_000],
        "value": [1234.5, 1234.75, 1235.125],
        "status": [0, 0, 1],
    }
    fields.update(overrides)
    return encode_batch(key, **fields)


def _fields(batch: SignedBatch) -> dict[str, Any]:
    return dict(orjson.loads(batch.payload))


def _payload(**changes: Any) -> bytes:
    """A payload with some fields changed (sorted, compact, unsigned: for parse tests)."""
    fields = _fields(_batch())
    fields.update(changes)
    return orjson.dumps(
        {k: v for k, v in fields.items() if v is not _DROP}, option=orjson.OPT_SORT_KEYS
    )


_DROP = object()


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _key_for(public_key: PublicKey) -> Any:
    return lambda key_id: public_key


# -- strategies ---------------------------------------------------------------------------

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
text = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters='"\\'),
    min_size=1,
    max_size=12,
)
numbers = st.one_of(
    st.integers(min_value=-SAFE, max_value=SAFE),
    st.floats(min_value=-SAFE, max_value=SAFE),
)


@st.composite
def batch_fields(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=24))
    t = sorted(draw(st.sets(st.integers(min_value=0, max_value=SAFE), min_size=n, max_size=n)))
    counter = draw(st.one_of(st.just(1), st.integers(min_value=1, max_value=SAFE)))
    return {
        "instrument": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True)),
        "counter": counter,
        "prev": GENESIS_PREV if counter == 1 else draw(hex64),
        "software": draw(hex64),
        "quantity": draw(text),
        "unit": draw(text),
        "t": t,
        "value": draw(st.lists(numbers, min_size=n, max_size=n)),
        "status": draw(st.lists(st.integers(0, MAX_STATUS), min_size=n, max_size=n)),
    }


algorithms = st.sampled_from(list(KeyAlgorithm))


# -- round trip ---------------------------------------------------------------------------


@settings(max_examples=150)
@given(fields=batch_fields(), algorithm=algorithms)
def test_encode_wire_split_parse_round_trip(fields: dict[str, Any], algorithm: str) -> None:
    key = KEYS[KeyAlgorithm(algorithm)]
    batch = encode_batch(key, **fields)
    payload, signature = split_wire(batch.wire())
    assert (payload, signature) == (batch.payload, batch.signature)
    parsed = parse_payload(payload)
    assert parsed.v == 1 and parsed.key == key.key_id
    for name, value in fields.items():
        assert getattr(parsed, name) == value, name
    assert parsed.digest == batch.digest == hashlib.sha256(payload).hexdigest()
    verify_batch(payload, signature, key.public_key)
    assert open_batch(batch.wire() + b"\n", _key_for(key.public_key)) == parsed


@settings(max_examples=100)
@given(fields=batch_fields())
def test_payload_is_the_projects_canonical_json(fields: dict[str, Any]) -> None:
    batch = encode_batch(ED, **fields)
    expected = canonical_json({"v": 1, "key": ED.key_id, **fields})
    assert batch.payload == expected
    assert list(orjson.loads(batch.payload)) == list(FIELDS)  # sorted, as RFC 8785 orders


# the example of docs/device.md: Ed25519 is deterministic, so the whole line is fixed
GOLDEN_PAYLOAD = (
    b'{"counter":1,"instrument":"ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6","key":"a050837d85070582'
    b'ccf7394b0988847cc312cb88259b894899f6f239cf1791a5","prev":"0000000000000000000000000000'
    b'000000000000000000000000000000000000","quantity":"1-0:1.8.0","software":"5c927ac1182e8'
    b'14cd371bc0143eb37181bccbb3b2de30422b4f715e68ee1f65e","status":[0,0,1],"t":[17675712000'
    b'00,1767572100000,1767573000000],"unit":"kWh","v":1,"value":[0,0.049,0.103]}'
)
GOLDEN_SIGNATURE = (
    "bQX3lqDO-P-bXKgy8zj0-4w9la7LlZqRkYbZmQo_UmPsHCX_uqoce7In68qY7we1sQ1xqKfMIaQ9_Z8L4EUdCg"
)


def test_golden_vector() -> None:
    key = PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    batch = encode_batch(
        key,
        instrument="ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6",
        counter=1,
        prev=GENESIS_PREV,
        software="5c927ac1182e814cd371bc0143eb37181bccbb3b2de30422b4f715e68ee1f65e",
        quantity="1-0:1.8.0",
        unit="kWh",
        t=[1_767_571_200_000, 1_767_572_100_000, 1_767_573_000_000],
        value=[0.0, 0.049, 0.103],
        status=[0, 0, 1],
    )
    assert batch.payload == GOLDEN_PAYLOAD
    assert batch.wire() == b"MCB1." + _b64url(GOLDEN_PAYLOAD) + b"." + GOLDEN_SIGNATURE.encode()
    assert batch.digest == "8ef48149433eb3408dacca90e9643008653e52dd92c4ac450855d3cb9726728b"


def test_wire_line_is_one_line_of_ascii() -> None:
    line = _batch().wire()
    assert line.startswith(WIRE_PREFIX) and line.isascii()
    assert b"\n" not in line and b"=" not in line and line.count(b".") == 2


def test_signature_sizes_per_algorithm() -> None:
    assert len(_batch(KEYS[KeyAlgorithm.ED25519]).signature) == 64
    assert 8 <= len(_batch(KEYS[KeyAlgorithm.ECDSA_P256]).signature) <= 72


def test_one_reading_and_the_maximum() -> None:
    one = _batch(t=[5], value=[1.5], status=[0])
    assert len(parse_payload(one.payload)) == 1
    n = MAX_READINGS
    full = _batch(t=list(range(n)), value=[0.001 * i for i in range(n)], status=[0] * n)
    assert len(parse_payload(split_wire(full.wire())[0])) == n


def test_digest_chains_batches() -> None:
    first = _batch()
    second = _batch(counter=2, prev=first.digest)
    assert parse_payload(second.payload).prev == payload_digest(first.payload)


def test_integral_and_negative_zero_floats_become_canonical_integers() -> None:
    batch = _batch(t=[1, 2, 3], value=[2.0, -0.0, 1e-7], status=[0, 0, 0])
    assert b'"value":[2,0,1e-7]' in batch.payload
    assert parse_payload(batch.payload).value == [2, 0, 1e-7]


def test_non_ascii_unit_round_trips() -> None:
    batch = _batch(unit="m³", quantity="7-0:3.0.0")
    parsed = parse_payload(split_wire(batch.wire())[0])
    assert (parsed.unit, parsed.quantity) == ("m³", "7-0:3.0.0")


# -- tampering ----------------------------------------------------------------------------


def _accepts(line: bytes, public_key: PublicKey) -> bool:
    try:
        open_batch(line, _key_for(public_key))
    except (InvalidBatch, VerificationError):
        return False
    return True


@settings(max_examples=300)
@given(data=st.data(), algorithm=algorithms)
def test_any_single_changed_byte_is_rejected(data: st.DataObject, algorithm: str) -> None:
    key = KEYS[KeyAlgorithm(algorithm)]
    line = bytearray(_batch(key).wire())
    # ECDSA signatures vary in length: draw independently of the line, then map onto it
    index = data.draw(st.integers(0, 2**16)) % len(line)
    line[index] ^= data.draw(st.integers(1, 255))
    assert not _accepts(bytes(line), key.public_key)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_every_position_and_bit_flip_of_a_one_reading_line_is_rejected(algorithm: str) -> None:
    key = KEYS[KeyAlgorithm(algorithm)]
    line = _batch(key, t=[1], value=[0.5], status=[0]).wire()
    assert _accepts(line, key.public_key)
    for index in range(len(line)):
        for bit in (0x01, 0x20, 0x80):
            flipped = bytearray(line)
            flipped[index] ^= bit
            assert not _accepts(bytes(flipped), key.public_key), (index, bit)


def test_signature_of_another_key_or_payload_fails() -> None:
    batch = _batch()
    other = PrivateKey.generate()
    with pytest.raises(VerificationError) as caught:
        verify_batch(batch.payload, batch.signature, other.public_key)
    assert FORMAT in (caught.value.rule or "")
    second = _batch(counter=2, prev=batch.digest)
    with pytest.raises(VerificationError):
        verify_batch(second.payload, batch.signature, ED.public_key)


def test_open_batch_refuses_a_key_other_than_the_named_one() -> None:
    batch = _batch()
    other = PrivateKey.generate().public_key
    with pytest.raises(VerificationError, match="names key"):
        open_batch(batch.wire(), _key_for(other))


def test_open_batch_passes_on_lookup_errors() -> None:
    def unknown(key_id: str) -> PublicKey:
        raise LookupError(key_id)

    with pytest.raises(LookupError):
        open_batch(_batch().wire(), unknown)


# -- strictness: arbitrary input raises InvalidBatch and nothing else ---------------------


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_split_wire(data: bytes) -> None:
    for line in (data, WIRE_PREFIX + data):
        try:
            payload, signature = split_wire(line)
        except InvalidBatch:
            continue
        assert line.rstrip(b"\r\n") == WIRE_PREFIX + _b64url(payload) + b"." + _b64url(signature)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_parse_payload(data: bytes) -> None:
    with pytest.raises(InvalidBatch):
        parse_payload(data)


json_text = st.text(st.characters(codec="utf-8"), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner),
    max_leaves=12,
)


@settings(max_examples=300)
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_field_replaced_by_any_json_raises_only_invalid_batch(field: str, value: Any) -> None:
    fields = _fields(_batch())
    fields[field] = value
    payload = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    try:
        parsed = parse_payload(payload)
    except InvalidBatch as exc:
        assert exc.code == "invalid-batch" and exc.rule == FORMAT
    else:
        assert getattr(parsed, field) == value


@settings(max_examples=200)
@given(line=st.binary(max_size=200).map(lambda d: b"MCB1." + _b64url(d) + b"." + _b64url(d)))
def test_well_encoded_garbage_raises_only_invalid_batch(line: bytes) -> None:
    with pytest.raises(InvalidBatch):
        parse_payload(split_wire(line)[0])


def test_invalid_batch_is_invalid_input_with_its_own_code() -> None:
    assert issubclass(InvalidBatch, InvalidInput)
    with pytest.raises(InvalidBatch) as caught:
        parse_payload(b"[]")
    assert caught.value.code == "invalid-batch" and caught.value.rule == FORMAT


# -- specific rejections ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"MCB2.AAAA.AAAA", "must start with 'MCB1.'"),
        (b"mcb1.AAAA.AAAA", "must start with 'MCB1.'"),
        (b"MCB1.AAAA", "expected 2 parts"),
        (b"MCB1.AAAA.AAAA.AAAA", "expected 2 parts"),
        (b"MCB1..AAAA", "payload is empty"),
        (b"MCB1.AAAA.", "signature is empty"),
        (b"MCB1.AA==.AAAA", "not unpadded base64url"),
        (b"MCB1.AA+/.AAAA", "not unpadded base64url"),
        (b"MCB1.AA A.AAAA", "not unpadded base64url"),
        (b"MCB1.AAAAA.AAAA", "impossible base64url length"),
        (b"MCB1.AB.AAAA", "non-zero trailing bits"),
        (b"MCB1.AAB.AAAA", "non-zero trailing bits"),
        ("MCB1.AAAA.AAAA", "must be bytes"),
        (b"MCB1.AAAA." + b"A" * 100, "at most 72"),
    ],
)
def test_wire_errors(line: Any, message: str) -> None:
    with pytest.raises(InvalidBatch, match=message):
        split_wire(line)


def test_crlf_and_lf_are_accepted_but_nothing_else_around_the_line() -> None:
    line = _batch().wire()
    assert split_wire(line + b"\r\n") == split_wire(line + b"\n") == split_wire(line)
    for bad in (b" " + line, line + b" ", line + b"\n\n", line + b"\t"):
        with pytest.raises(InvalidBatch):
            split_wire(bad)


def test_payload_too_large_is_refused_before_decoding() -> None:
    with pytest.raises(InvalidBatch, match="at most"):
        split_wire(b"MCB1." + b"A" * (2 << 20) + b".AAAA")
    with pytest.raises(InvalidBatch, match="at most"):
        parse_payload(b" " * ((1 << 20) + 1))


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (b"not json", None, "not JSON"),
        (b"\xff\xfe", None, "not JSON"),
        (b"[1,2]", None, "must be a JSON object, found an array"),
        (b'"text"', None, "found a string"),
        (_payload(v=_DROP), "v", "lacks the field"),
        (_payload(t=_DROP, status=_DROP), "status", "lacks the field(s) status, t"),
        (_payload(extra=1), "extra", "unknown field"),
        (_payload(events=[]), "events", "unknown field"),
        (_payload(v=2), "v", "'v' must be the integer 1"),
        (_payload(v=True), "v", "found true"),
        (_payload(instrument=""), "instrument", "instrument id"),
        (_payload(instrument="ins DE"), "instrument", "instrument id"),
        (_payload(instrument=7), "instrument", "instrument id"),
        (_payload(key="A" * 64), "key", "64 lowercase hex"),
        (_payload(key="a" * 63), "key", "64 lowercase hex"),
        (_payload(prev="0" * 65), "prev", "64 lowercase hex"),
        (_payload(software=None), "software", "found null"),
        (_payload(counter=0), "counter", "from 1 to"),
        (_payload(counter=-3), "counter", "from 1 to"),
        (_payload(counter=1.5), "counter", "from 1 to"),
        (_payload(counter="1"), "counter", "from 1 to"),
        (_payload(counter=2**53), "counter", "from 1 to"),
        (_payload(prev="1" * 64), "prev", "64 zeros for counter 1"),
        (_payload(quantity=""), "quantity", "text of 1-64"),
        (_payload(unit="k\nWh"), "unit", "control"),
        (_payload(unit='k"Wh'), "unit", "text of 1-64"),
        (_payload(unit="x" * 65), "unit", "text of 1-64"),
        (_payload(t={"a": 1}), "t", "must be an array, found an object"),
        (_payload(value="1"), "value", "must be an array"),
        (_payload(t=[], value=[], status=[]), "t", "holds 0 readings"),
        (_payload(value=[1, 2]), "value", "holds 2 entries but 't' holds 3"),
        (_payload(status=[0, 0, 0, 0]), "status", "holds 4 entries"),
        (_payload(t=[1, 2, 2]), "t", "strictly increasing, found 2 after 2 at index 2"),
        (_payload(t=[3, 2, 4]), "t", "strictly increasing"),
        (_payload(t=[-1, 2, 3]), "t", "from 0 to"),
        (_payload(t=[1, 2, 2**53]), "t", "from 0 to"),
        (_payload(t=[1, 2.5, 3]), "t", "must hold integers"),
        (_payload(t=[1, True, 3]), "t", "must hold integers"),
        (_payload(value=[1, "2", 3]), "value", "must hold numbers, found '2' at index 1"),
        (_payload(value=[1, None, 3]), "value", "must hold numbers"),
        (_payload(value=[1, False, 3]), "value", "must hold numbers"),
        (_payload(value=[1, [2], 3]), "value", "must hold numbers"),
        (_payload(status=[0, -1, 0]), "status", "from 0 to 2147483647"),
        (_payload(status=[0, 2**31, 0]), "status", "from 0 to 2147483647"),
        (_payload(status=[0, 0.0, 0]), "status", "must hold integers"),
    ],
)
def test_payload_errors_name_the_field(payload: bytes, field: str | None, message: str) -> None:
    with pytest.raises(InvalidBatch, match=re.escape(message)) as caught:
        parse_payload(payload)
    assert caught.value.field == field
    if field is not None:
        assert repr(field) in caught.value.message or field in caught.value.message


def test_too_many_readings() -> None:
    n = MAX_READINGS + 1
    payload = _payload(t=list(range(n)), value=[0] * n, status=[0] * n)
    with pytest.raises(InvalidBatch, match=f"holds {n} readings"):
        parse_payload(payload)
    with pytest.raises(InvalidBatch, match="holds"):
        _batch(t=list(range(n)), value=[0] * n, status=[0] * n)


@pytest.mark.parametrize("big", [2**53, -(2**53), 2.0**53, 1e300, -1e20])
def test_values_beyond_i_json_range_are_refused(big: float) -> None:
    with pytest.raises(InvalidBatch, match="I-JSON") as caught:
        parse_payload(_payload(value=[1, big, 3]))
    assert caught.value.field == "value"
    with pytest.raises(InvalidBatch, match="I-JSON"):
        _batch(value=[1, big, 3])


@pytest.mark.parametrize(
    "transform",
    [
        lambda p: p.replace(b",", b", ", 1),  # whitespace
        lambda p: b" " + p,
        lambda p: p + b"\n",
        lambda p: p.replace(b'"unit":"kWh"', b'"unit":"\\u006bWh"'),  # needless escape
        lambda p: p.replace(b"[1234.5,", b"[1234.50,"),  # number format
        lambda p: p.replace(b"[0,0,1]", b"[0,0,1.0]"),  # integral float where an int goes
        lambda p: p.replace(b"1235.125]", b"1.235125e3]"),  # exponent form
        lambda p: p.replace(b'{"counter":1,', b'{"counter":1,"counter":1,'),  # duplicate
    ],
)
def test_non_canonical_payloads_are_refused(transform: Any) -> None:
    payload = _batch().payload
    changed = transform(payload)
    assert changed != payload  # every transform applies to the fixed batch
    with pytest.raises(InvalidBatch):
        parse_payload(changed)


def test_field_order_must_be_canonical() -> None:
    fields = _fields(_batch())
    reordered = orjson.dumps(dict(reversed(list(fields.items()))))
    with pytest.raises(InvalidBatch, match="RFC 8785"):
        parse_payload(reordered)


def test_integral_float_in_value_column_is_not_canonical() -> None:
    payload = _batch(value=[1.5, 2.5, 3.5]).payload.replace(b"3.5]", b"3.0]")
    with pytest.raises(InvalidBatch, match="RFC 8785"):
        parse_payload(payload)


# -- encoding refuses what parsing would refuse --------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"counter": 0}, "counter"),
        ({"counter": 1, "prev": "ab" * 32}, "prev"),
        ({"software": "x"}, "software"),
        ({"instrument": "ins/DE"}, "instrument"),
        ({"value": [1.0, float("nan"), 2.0]}, "value"),
        ({"value": [1.0, float("inf"), 2.0]}, "value"),
        ({"t": [3, 2, 1]}, "t"),
        ({"status": [0, 0]}, "status"),
    ],
)
def test_encode_refuses_invalid_fields(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidBatch) as caught:
        _batch(**overrides)
    assert caught.value.field == field


def test_encode_accepts_tuples_and_ranges() -> None:
    batch = _batch(t=range(3), value=(1, 2, 3), status=(0, 0, 0))
    assert isinstance(parse_payload(batch.payload), BatchPayload)


def test_signed_batch_parse_and_wire_are_consistent() -> None:
    batch = _batch(KEYS[KeyAlgorithm.ECDSA_P256])
    assert batch.parse() == parse_payload(split_wire(batch.wire())[0])
