"""The fast paths of split_wire and parse_payload against the reference checks.

:func:`split_wire` and :func:`parse_payload` accept through a fast path and hand everything
else to the reference (``_split_wire_checked``, ``_parse_payload_checked``). Here: the fast
path never accepts what the reference refuses and, when it accepts, returns exactly the
reference's result; the public functions answer every input (valid, malformed, mutated) as
the reference does, error message and field included; and the fast path does take the
batches devices send, so the speed it exists for is not lost unnoticed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats import batches
from metrocloud.formats.batches import (
    GENESIS_PREV,
    MAX_STATUS,
    WIRE_PREFIX,
    InvalidBatch,
    SignedBatch,
    parse_payload,
    split_wire,
)
from metrocloud.trust.canonical import canonical_json
from tests.formats.test_batches import ED, batch_fields, hex64, json_values

SAFE = 2**53 - 1
KEY = ED.key_id


def _answer(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, ...]:
    """What ``fn(arg)`` answers: its result, or the error's type, message and field."""
    try:
        return ("ok", fn(arg))
    except InvalidBatch as exc:
        return ("error", type(exc), str(exc), exc.field)


def _check_parse(payload: bytes) -> None:
    reference = _answer(batches._parse_payload_checked, payload)
    assert _answer(parse_payload, payload) == reference
    fast = batches._parse_fast(payload) if len(payload) <= batches.MAX_PAYLOAD_BYTES else None
    if fast is not None:  # the fast path only ever accepts what the reference accepts
        assert reference == ("ok", fast)


def _check_split(line: bytes) -> None:
    assert _answer(split_wire, line) == _answer(batches._split_wire_checked, line)


def _payload(fields: dict[str, Any]) -> bytes:
    """The RFC 8785 payload of ``fields``; sorted compact JSON where RFC 8785 has none
    (integers beyond I-JSON)."""
    document = {"v": 1, "key": KEY, **fields}
    try:
        return canonical_json(document)
    except InvalidInput:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


# -- what devices send takes the fast path ---------------------------------------------------

#: readings as meters report them: non-integral decimals of a few places
meter_values = st.integers(min_value=-(10**12), max_value=10**12).filter(lambda m: m % 1000 != 0)


@st.composite
def meter_batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=96))
    start = draw(st.integers(min_value=0, max_value=2 * 10**12))
    step = draw(st.sampled_from([1, 1000, 60_000, 900_000]))
    counter = draw(st.integers(min_value=1, max_value=10**9))
    return {
        "instrument": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True)),
        "counter": counter,
        "prev": GENESIS_PREV if counter == 1 else draw(hex64),
        "software": draw(hex64),
        "quantity": draw(st.sampled_from(["1-0:1.8.0", "1-0:2.8.0", "8-0:1.0.0", "m³ (°C)"])),
        "unit": draw(st.sampled_from(["kWh", "Wh", "m³", "°C", "var h"])),
        "t": [start + i * step for i in range(n)],
        "value": [m / 1000 for m in draw(st.lists(meter_values, min_size=n, max_size=n))],
        "status": draw(st.lists(st.integers(0, MAX_STATUS), min_size=n, max_size=n)),
    }


@settings(max_examples=200)
@given(fields=meter_batches())
def test_meter_batches_take_the_fast_path(fields: dict[str, Any]) -> None:
    payload = _payload(fields)
    fast = batches._parse_fast(payload)
    assert fast is not None
    assert fast == batches._parse_payload_checked(payload)
    assert fast.digest == hashlib.sha256(payload).hexdigest()


@settings(max_examples=200)
@given(payload=st.binary(min_size=1, max_size=600), signature=st.binary(min_size=1, max_size=72))
def test_canonical_wire_lines_take_the_fast_path(payload: bytes, signature: bytes) -> None:
    line = SignedBatch(payload, signature).wire()
    parts = line[len(WIRE_PREFIX) :].split(b".")
    assert batches._b64url_fast(parts[0]) == payload
    assert batches._b64url_fast(parts[1]) == signature
    for ending in (b"", b"\n", b"\r\n"):
        assert split_wire(line + ending) == (payload, signature)


# -- the same answers as the reference ------------------------------------------------------


@settings(max_examples=300)
@given(fields=batch_fields())
def test_valid_batches_parse_as_the_reference_does(fields: dict[str, Any]) -> None:
    _check_parse(_payload(fields))


@settings(max_examples=300)
@given(field=st.sampled_from(batches.FIELDS), value=json_values, sort=st.booleans())
def test_any_field_replaced_parses_as_the_reference_does(
    field: str, value: Any, sort: bool
) -> None:
    fields = orjson.loads(_payload({**_base(), "value": [1.5, 2.25, 3]}))
    fields[field] = value
    _check_parse(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS if sort else 0))


def _base() -> dict[str, Any]:
    return {
        "instrument": "ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6",
        "counter": 2,
        "prev": "ab" * 32,
        "software": "cd" * 32,
        "quantity": "1-0:1.8.0",
        "unit": "kWh",
        "t": [1_767_607_200_000, 1_767_608_100_000, 1_767_609_000_000],
        "value": [1234.5, 1234.75, 1235.125],
        "status": [0, 0, 1],
    }


#: bytes that change a payload's meaning or form: JSON syntax, digits, number syntax,
#: whitespace, escapes, control and non-ASCII bytes
_MUTATION_BYTES = b'0123456789-+.eE,[]{}":\\ \n\tafu\x00\x1f\x7f\xc3\xa9\xff'
#: number tokens at and beyond the rules' edges, and in forms RFC 8785 writes otherwise
_TOKENS = [
    b"0", b"-0", b"-0.0", b"0.0", b"1.0", b"2.50", b"01", b"1e2", b"1E2", b"1e+2", b"1e-7",
    b"0.0000001", b"0.000001", b"1e-6", b"1e16", b"10000000000000000", b"1e21",
    b"9007199254740991", b"9007199254740992", b"-9007199254740991", b"-9007199254740992",
    b"9007199254740991.5", b"2147483647", b"2147483648", b"18446744073709551616",
    b"999999999999999", b"1000000000000000", b"0.30000000000000004", b"5e-324", b"true",
    b"null", b'"1"', b"[]", b"{}", b" 1", b"1 ",
]  # fmt: skip
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    fields = draw(st.one_of(meter_batches(), batch_fields()))
    payload = bytearray(_payload(fields))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "token"]))
        if kind == "token":
            numbers = list(_NUMBER.finditer(payload))
            if numbers:
                m = draw(st.sampled_from(numbers))
                payload[m.start() : m.end()] = draw(st.sampled_from(_TOKENS))
            continue
        at = draw(st.integers(min_value=0, max_value=len(payload) - 1))
        if kind == "delete":
            del payload[at]
        else:
            byte = draw(st.sampled_from(_MUTATION_BYTES))
            if kind == "insert":
                payload.insert(at, byte)
            else:
                payload[at] = byte
    return bytes(payload)


@settings(max_examples=1000)
@given(payload=mutated_payloads())
@example(payload=_payload({**_base(), "value": [1.5, 2.25, 3.0]}))  # integral float
@example(payload=_payload({**_base(), "counter": 1}))  # counter 1 needs the genesis prev
@example(payload=_payload({**_base(), "counter": 10**15}))  # beyond the fast layout
@example(payload=_payload({**_base(), "counter": SAFE}))
@example(payload=_payload(_base()).replace(b"1235.125]", b"1235.0]"))  # integral floats
@example(payload=_payload(_base()).replace(b"[1234.5,", b"[1234.0,"))
@example(payload=_payload({**_base(), "value": [1, True, 3]}))
@example(payload=_payload({**_base(), "value": [1, None, 3]}))
@example(payload=_payload({**_base(), "value": [1, "2", 3]}))
@example(payload=_payload({**_base(), "t": [1, 2.5, 3]}))
@example(payload=_payload({**_base(), "t": [-1, 2, 3]}))
@example(payload=_payload({**_base(), "t": [1, True, 3]}))
@example(payload=_payload({**_base(), "status": [0, -1, 0]}))
@example(payload=_payload({**_base(), "status": [0, 0.5, 0]}))
@example(payload=_payload({**_base(), "status": [0, True, 0]}))
@example(payload=_payload({**_base(), "quantity": "x" * 65}))
@example(payload=_payload({**_base(), "unit": "x" * 64}))
@example(payload=_payload({**_base(), "unit": "x" * 65}))
@example(payload=_payload({**_base(), "unit": "³" * 64}))  # 128 bytes, 64 characters
@example(payload=_payload({**_base(), "unit": "³" * 65}))
@example(payload=_payload({**_base(), "unit": "\u0085"}))  # a C1 control: allowed
@example(payload=_payload({**_base(), "status": [0, MAX_STATUS, 0]}))
@example(payload=_payload({**_base(), "status": [0, MAX_STATUS + 1, 0]}))
@example(payload=_payload({**_base(), "t": [0, 1, SAFE]}))
@example(payload=_payload({**_base(), "t": [0, 1, SAFE + 1]}))
@example(payload=_payload({**_base(), "value": [-SAFE, 0, SAFE]}))
@example(payload=_payload({**_base(), "value": [-SAFE - 1, 0, 1]}))
@example(payload=_payload({**_base(), "value": [1e-7, 1e-6, 1e16]}))
@example(payload=_payload({**_base(), "value": [0.1, 0.2, 0.30000000000000004]}))
@example(payload=_payload({**_base(), "value": [-0.0, 1, 2]}))
@example(payload=_payload(_base()).replace(b"kWh", b"\\u006bWh"))
@example(payload=_payload(_base()).replace(b'"v":1', b'"v":1,"v":1'))
@example(payload=_payload(_base()).replace(b"[0,0,1]", b"[0,0,18446744073709551616]"))
@example(payload=_payload(_base()).replace(b"[0,0,1]", b"[0,0,-0]"))
def test_mutated_payloads_parse_as_the_reference_does(payload: bytes) -> None:
    _check_parse(payload)


@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_parse_as_the_reference_does(data: bytes) -> None:
    _check_parse(data)


_WIRE_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. \r\n\t\x00\xff"


@settings(max_examples=1000)
@given(
    payload=st.binary(min_size=0, max_size=120),
    signature=st.binary(min_size=0, max_size=90),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(min_value=0),
            st.sampled_from(_WIRE_BYTES),
        ),
        max_size=3,
    ),
    ending=st.sampled_from([b"", b"\n", b"\r\n", b"\n\n", b"\r", b" "]),
)
@example(payload=b"\x00", signature=b"\x00", edits=[("replace", 6, ord("B"))], ending=b"")
@example(payload=b"\x00\x00", signature=b"\x00", edits=[("replace", 7, ord("B"))], ending=b"")
@example(payload=b"", signature=b"\x00", edits=[], ending=b"")
@example(payload=b"\x00", signature=b"", edits=[], ending=b"")
@example(payload=b"\x00", signature=b"\x00" * 73, edits=[], ending=b"")
def test_wire_lines_split_as_the_reference_does(
    payload: bytes, signature: bytes, edits: list[tuple[str, int, int]], ending: bytes
) -> None:
    line = bytearray(SignedBatch(payload, signature).wire())
    for kind, position, byte in edits:
        at = position % (len(line) + (kind == "insert"))
        if kind == "insert":
            line.insert(at, byte)
        elif kind == "delete":
            del line[at]
        else:
            line[at] = byte
    _check_split(bytes(line) + ending)
    _check_split(bytearray(line) + ending)  # not bytes: the reference path, same answer


@settings(max_examples=500)
@given(text=st.binary(max_size=12).map(lambda b: bytes(_WIRE_BYTES[x % 72] for x in b)))
def test_base64url_fast_decodes_only_what_the_reference_accepts(text: bytes) -> None:
    fast = batches._b64url_fast(text)
    reference = _answer(lambda t: batches._b64url_decode(t, "payload"), text)
    if fast is None:
        assert reference[0] == "error"
    else:
        assert reference == ("ok", fast)


@pytest.mark.parametrize(
    "line",
    [
        b"MCB1.AAAA.AAAA",
        b"MCB1.AA==.AAAA",
        b"MCB1.AA+/.AAAA",
        b"MCB1.AA/A.AAAA",
        b"MCB1.AAAAA.AAAA",
        b"MCB1.AB.AAAA",
        b"MCB1.AAB.AAAA",
        b"MCB1.AAAA.AAAA.",
        b"MCB1..AAAA",
        b"MCB1.AAAA." + b"A" * 100,
        b"MCB1.AAAA.AAAA\r\n",
        b"MCB1.AAAA.AAAA\n\n",
        b"MCB1.AAAA.AAAA\r",
        b"MCB1." + b"A" * (2 << 20) + b".AAAA",
    ],
)
def test_wire_edge_cases_split_as_the_reference_does(line: bytes) -> None:
    _check_split(line)
