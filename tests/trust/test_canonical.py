"""RFC 8785 canonical JSON: golden vectors, equality with the reference, rejections."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections import OrderedDict
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.trust import canonical_json, canonical_json_hash
from metrocloud.trust._jcs import json_number_from_int_literal

# -- strategies ------------------------------------------------------------------------

SAFE = 2**53 - 1
# keys that exercise the UTF-16 vs code-point ordering trap of RFC 8785 §3.2.3: characters
# above U+FFFF sort *before* U+E000..U+FFFF in UTF-16 but after them in code points
_TRICKY_CHARS = st.sampled_from(
    ["a", "b", "", "\x00", "\x1f", '"', "\\", "\u00e9", "\u20ac", "\ue000", "\ufb33",
     "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"]
)  # fmt: skip
keys = st.one_of(
    st.text(max_size=6),
    st.lists(_TRICKY_CHARS, max_size=4).map("".join),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-SAFE, max_value=SAFE),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda f: float(round(f))),
    st.text(),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=30,
)
#: keys inside the Basic Multilingual Plane: there code-point order is UTF-16 order, so the
#: fast path applies (non-BMP keys take the reference path; tested separately below)
bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=6)
float_free = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-SAFE, SAFE), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(bmp_keys, children, max_size=5)
    ),
    max_leaves=30,
)


# -- golden values from RFC 8785 ----------------------------------------------------------


def test_rfc8785_section_3_2_2_example() -> None:
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(value) == expected
    # RFC 8785 §3.2.4 gives the UTF-8 bytes: the euro sign is e2 82 ac
    assert expected[expected.index(b'"string"') + 10 :][:3] == b"\xe2\x82\xac"


def test_rfc8785_section_3_2_3_sorting_example() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert canonical_json(value) == expected


APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("ieee754", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(ieee754: str, expected: str) -> None:
    number = struct.unpack(">d", bytes.fromhex(ieee754))[0]
    assert canonical_json(number) == expected.encode()
    assert canonical_json({"n": [number]}) == f'{{"n":[{expected}]}}'.encode()


@pytest.mark.parametrize("ieee754", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_appendix_b_nan_and_infinity_are_errors(ieee754: str) -> None:
    number = struct.unpack(">d", bytes.fromhex(ieee754))[0]
    with pytest.raises(InvalidInput, match=r"RFC 8785 §3\.2"):
        canonical_json({"n": number})


# -- equality with the reference implementation ---------------------------------------------


@settings(max_examples=400)
@given(json_values)
def test_equals_rfc8785_reference(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_float_equals_reference(number: float) -> None:
    assert canonical_json([number]) == rfc8785.dumps([number])


@given(json_values)
def test_idempotent_under_parse_and_recanonicalize(value: Any) -> None:
    once = canonical_json(value)
    # JSON numbers are doubles (RFC 7493 §2.2): big integral literals such as
    # 100000000000000000000 (from the float 1e20) must be read back as floats
    assert canonical_json(json.loads(once, parse_int=json_number_from_int_literal)) == once


def test_int_literal_hook_reads_unsafe_integers_as_doubles() -> None:
    assert json_number_from_int_literal("-9007199254740991") == -SAFE
    assert isinstance(json_number_from_int_literal("9007199254740991"), int)
    assert json_number_from_int_literal("100000000000000000000") == 1e20
    assert isinstance(json_number_from_int_literal("9007199254740992"), float)


@given(st.dictionaries(keys, scalars, min_size=2, max_size=8), st.randoms())
def test_key_insertion_order_is_irrelevant(value: dict[str, Any], rnd: random.Random) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(value)


@given(json_values)
def test_hash_is_sha256_of_canonical_bytes(value: Any) -> None:
    assert canonical_json_hash(value) == hashlib.sha256(canonical_json(value)).digest()


def test_fast_path_does_not_use_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float-free data and ordinary floats are serialized without the slow reference."""

    def forbidden(value: object) -> bytes:
        raise AssertionError("rfc8785 fallback used")

    monkeypatch.setattr(rfc8785, "dumps", forbidden)
    records = [
        {"serial": f"SN-{i}", "count": i, "ok": True, "reading": 20.0 + i / 8, "e": None}
        for i in range(50)
    ]
    out = canonical_json(records)
    assert out.startswith(b'[{"count":0,"e":null,"ok":true,"reading":20,"serial":"SN-0"}')
    assert b'"reading":20.125' in out


@given(float_free)
def test_float_free_values_take_the_fast_path(value: Any) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected.encode()


def test_non_bmp_keys_sorted_by_utf16_code_units() -> None:
    # code-point order would put U+FFFF before U+1F600; UTF-16 puts D83D before FFFF
    assert canonical_json({"\uffff": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\uffff":1}'.encode()
    assert canonical_json([{"x\ue000": 1, "x\U00010000": 2}]) == (
        '[{"x\U00010000":2,"x\ue000":1}]'.encode()
    )


def test_non_bmp_values_alone_keep_code_point_order() -> None:
    assert canonical_json({"b": "\U0001f600", "a": "\uffff"}) == (
        '{"a":"\uffff","b":"\U0001f600"}'.encode()
    )


def test_subclasses_of_json_types_serialize_as_their_values() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    value = OrderedDict([("z", Color.RED), ("a", (Level.HIGH, 1.0))])
    assert canonical_json(value) == b'{"a":[3,1],"z":"red"}'


def test_unicode_is_emitted_as_utf8_not_escaped() -> None:
    assert canonical_json("\u00e9\u2028\x7f") == '"\u00e9\u2028\x7f"'.encode()
    assert canonical_json("\x00\x08\t\n\x0c\r\x1f") == b'"\\u0000\\b\\t\\n\\f\\r\\u001f"'


# -- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "evidence"),
    [
        ({1: "a"}, r"object key 1 at \$ is of type int"),
        ({"a": {None: 1}}, r"object key None at \$\.a"),
        ({"a": [float("nan")]}, r"number at \$\.a\[0\] is nan"),
        ([float("-inf")], r"is -inf"),
        ({"n": 2**53}, r"9007199254740992"),
        ([-(2**53)], r"outside the I-JSON range"),
        ({"n": 10**5000}, r"integer of \d+ bits"),
        ({"d": Decimal("1.5")}, r"decimal\.Decimal"),
        ({"b": b"bytes"}, r"builtins\.bytes"),
        ({"s": {1, 2}}, r"builtins\.set"),
        ("\ud800", r"lone surrogate U\+D800"),
        ({"k\udfff": 1}, r"lone surrogate U\+DFFF"),
        ({"\U0001f600": "\udc00"}, r"RFC 8785 §3\.2\.2\.2"),
    ],
)
def test_rejects_values_outside_the_json_data_model(value: object, evidence: str) -> None:
    with pytest.raises(InvalidInput, match=evidence) as info:
        canonical_json(value)
    assert "RFC 8785 §3.2" in str(info.value)
    assert info.value.rule is not None


def test_safe_integer_bounds_are_inclusive() -> None:
    assert canonical_json([SAFE, -SAFE]) == b"[9007199254740991,-9007199254740991]"


def test_rejects_circular_structures() -> None:
    loop: list[Any] = []
    loop.append({"again": loop})
    with pytest.raises(InvalidInput, match=r"circular reference"):
        canonical_json(loop)


def test_shared_substructures_are_not_cycles() -> None:
    shared = {"x": 1}
    assert canonical_json([shared, shared]) == b'[{"x":1},{"x":1}]'


def test_rejects_excessive_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    with pytest.raises(InvalidInput, match=r"nested deeper than 256 levels"):
        canonical_json(deep)


@given(st.integers(min_value=SAFE + 1) | st.integers(max_value=-SAFE - 1))
def test_out_of_range_integers_rejected_like_reference(number: int) -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(number)
    with pytest.raises(InvalidInput):
        canonical_json({"n": number})
