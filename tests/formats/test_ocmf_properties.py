"""Properties: the signed bytes survive parsing, signatures bind them on every curve, and no
input raises anything but metrocloud's own errors."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import MetrocloudError
from metrocloud.formats.ocmf import parse_ocmf, serialize_ocmf, verify_ocmf, verify_values
from metrocloud.formats.transparenz import ContainerValue, read_container

from ._support import CURVE_NAMES, Signer, payload, reading, record

#: string fields of the payload (Tables 1-6) and extension fields (U..Z), any text in them
_FIELDS = st.sampled_from(["GI", "GS", "GV", "MV", "MM", "MF", "ID", "CI", "TT", "XA", "UB"])
_TEXT = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["|", "a|b", "||", " | ", "OCMF|", '"|"', "\\|"]
)
_SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n ", " : "), (",\t", ":\r\n")])


@st.composite
def payloads(draw: st.DrawFn) -> str:
    """A payload section: JSON written in any of several layouts, pipes inside strings."""
    body: dict[str, Any] = dict(draw(st.dictionaries(_FIELDS, _TEXT, max_size=6)))
    body["PG"] = f"T{draw(st.integers(0, 10**9))}"
    body["MS"] = f"METER-{draw(st.integers(0, 99))}"
    start = draw(st.integers(0, 10**6)) / 100
    body["RD"] = [reading("B", start), reading("E", start + 1.5, "11:00:00")]
    indent = draw(st.sampled_from([None, 0, 2]))
    text = json.dumps(
        body,
        separators=draw(_SEPARATORS),
        indent=indent,
        ensure_ascii=draw(st.booleans()),
    )
    return text


@given(body=payloads(), sd=st.binary(min_size=1, max_size=80))
def test_round_trip_keeps_the_payload_bytes(body: str, sd: bytes) -> None:
    section = json.dumps({"SA": "ECDSA-secp256r1-SHA256", "SD": sd.hex()})
    text = f"OCMF|{body}|{section}"
    doc = parse_ocmf(text)
    assert doc.payload == body.encode("utf-8")
    assert doc.signature.raw == section.encode()
    assert serialize_ocmf(doc) == text
    assert parse_ocmf(serialize_ocmf(doc)) == doc
    assert parse_ocmf(f"\n  {text}\t\n".encode()) == doc


_SIGNERS = {name: Signer.generate(name) for name in CURVE_NAMES}


@pytest.mark.parametrize("name", CURVE_NAMES)
@settings(max_examples=12)
@given(body=payloads(), data=st.data(), fresh=st.booleans())
def test_signatures_bind_payload_signature_and_key(
    name: str, body: str, data: st.DataObject, fresh: bool
) -> None:
    signer = Signer.generate(name) if fresh else _SIGNERS[name]
    doc = parse_ocmf(record(signer, body))
    der = signer.public_der()
    assert verify_ocmf(doc, der).status == "valid"

    # positions are drawn from fixed ranges: lengths vary with the random key and nonce
    position = st.integers(0, 2**16)
    bit = 1 << data.draw(st.integers(0, 7), label="bit")
    forged = bytearray(doc.payload)
    forged[data.draw(position, label="payload byte") % len(forged)] ^= bit
    verdict = verify_ocmf(replace(doc, payload=bytes(forged)), der)
    assert verdict.status == "invalid" and not verdict.signature_valid

    sig = bytearray(bytes.fromhex(doc.signature.data))
    sig[data.draw(position, label="signature byte") % len(sig)] ^= bit
    changed = replace(doc, signature=replace(doc.signature, data=sig.hex()))
    assert verify_ocmf(changed, der).status == "invalid"

    key = bytearray(der)
    key[data.draw(position, label="key byte") % len(key)] ^= bit
    assert verify_ocmf(doc, bytes(key)).status in ("invalid", "error")


@settings(max_examples=25)
@given(data=st.data(), name=st.sampled_from(CURVE_NAMES), b64=st.booleans())
def test_whitespace_in_keys_and_signatures_is_ignored(
    data: st.DataObject, name: str, b64: bool
) -> None:
    signer = _SIGNERS[name]
    text = record(signer, payload(), se="base64" if b64 else None)
    head, section = text.rsplit("|", 1)
    fields = json.loads(section)
    spaces = st.text(st.sampled_from(" \t\r\n"), min_size=1, max_size=3)

    def sprinkle(value: str) -> str:
        cuts = sorted(
            c % (len(value) + 1) for c in data.draw(st.lists(st.integers(0, 999), max_size=6))
        )
        out, last = [], 0
        for cut in cuts:
            out += [value[last:cut], data.draw(spaces)]
            last = cut
        return "".join([*out, value[last:]])

    fields["SD"] = sprinkle(fields["SD"])
    key = sprinkle(signer.public_der().hex().upper())
    doc = parse_ocmf(f"{head}|{json.dumps(fields)}")
    assert verify_ocmf(doc, key).status == "valid"
    value = ContainerValue(0, f"{head}|{json.dumps(fields)}", public_key=key, key_encoding="hex")
    assert [r.verdict for r in verify_values([value], "f.xml")] == ["valid"]


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT | _FIELDS, inner, max_size=3),
    max_leaves=8,
)
_KEYS = (
    st.none()
    | _TEXT
    | st.binary(max_size=100)
    | st.sampled_from([_SIGNERS["secp256r1"].public_der().hex(), "3059", "04" + "00" * 64])
)


@st.composite
def hostile_records(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["text", "bytes", "ocmf", "ocmf-json"]))
    if kind == "text":
        return draw(st.text())
    if kind == "bytes":
        return draw(st.binary())
    if kind == "ocmf":
        return f"OCMF|{draw(st.text())}|{draw(st.text())}"
    body = json.dumps(draw(_JSONISH)) if draw(st.booleans()) else payload()
    section = (
        json.dumps(draw(_JSONISH))
        if draw(st.booleans())
        else json.dumps(
            {k: draw(_TEXT) for k in draw(st.lists(st.sampled_from(["SA", "SD", "SE", "SM"])))}
        )
    )
    return f"OCMF|{body}|{section}"


@settings(max_examples=300)
@given(text=hostile_records(), key=_KEYS)
def test_any_input_raises_only_metrocloud_errors(
    text: str | bytes, key: str | bytes | None
) -> None:
    try:
        doc = parse_ocmf(text)
    except MetrocloudError:
        return
    verdict = verify_ocmf(doc, key)
    assert verdict.status in ("valid", "invalid", "error")
    assert (verdict.reason is None) == (verdict.status == "valid")


@settings(max_examples=150)
@given(
    data=st.binary(max_size=300)
    | st.builds(
        lambda d, k, f: (
            f'<values><value><signedData format="{f}">{d}</signedData>'
            f"<publicKey>{k}</publicKey></value></values>"
        ).encode(),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=60),
        st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=60),
        st.sampled_from(["OCMF", "", "SML"]),
    )
)
def test_any_container_raises_only_metrocloud_errors(data: bytes) -> None:
    try:
        values = read_container(data, "fuzz.xml")
    except MetrocloudError:
        return
    for record_ in verify_values(values, "fuzz.xml"):
        assert record_.verdict in ("valid", "invalid", "error")
