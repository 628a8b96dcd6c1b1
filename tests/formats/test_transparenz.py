"""The Transparenzsoftware XML container: unpacking values, refusing hostile or broken XML."""

from __future__ import annotations

import base64

import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats import transparenz
from metrocloud.formats.transparenz import ContainerValue, read_container


def test_values_with_and_without_attributes() -> None:
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<values context="x">
  <value transactionId="7" context="Transaction.Begin">
    <signedData format="OCMF" encoding="plain">OCMF|{}|{}</signedData>
    <publicKey encoding="hex">30 59
      30 13</publicKey>
  </value>
  <value><signedData>  data  </signedData></value>
</values>"""
    first, second = read_container(data, "f.xml")
    assert first == ContainerValue(
        index=0,
        signed_data="OCMF|{}|{}",
        data_format="OCMF",
        data_encoding="plain",
        public_key="30 59\n      30 13",
        key_encoding="hex",
        transaction_id="7",
        context="Transaction.Begin",
    )
    assert second == ContainerValue(index=1, signed_data="  data  ")


def test_base64_and_hex_signed_data_are_decoded() -> None:
    text = 'OCMF|{"PG":"T1"}|{"SD":"00"}'
    b64 = base64.b64encode(text.encode()).decode()
    data = (
        f'<values><value><signedData encoding="base64">{b64[:10]}\n{b64[10:]}</signedData></value>'
        f'<value><signedData encoding="hex">{text.encode().hex()}</signedData></value></values>'
    ).encode()
    values = read_container(data, "f.xml")
    assert [v.signed_data for v in values] == [text, text]
    assert all(v.problem is None for v in values)


@pytest.mark.parametrize(
    ("encoding", "content", "problem"),
    [
        ("base64", "TEST1", 'signedData encoding="base64" does not decode as base64'),
        ("hex", "xyz", 'signedData encoding="hex" does not decode as hex'),
        ("hex", "ff00", 'signedData encoding="hex" decodes to binary data, not text'),
        ("rot13", "abc", 'signedData encoding="rot13" is unknown'),
    ],
)
def test_undecodable_signed_data_is_a_problem_of_the_value(
    encoding: str, content: str, problem: str
) -> None:
    data = (
        f'<values><value><signedData encoding="{encoding}">{content}</signedData></value></values>'
    )
    (value,) = read_container(data.encode(), "f.xml")
    assert problem in (value.problem or "")


def test_encoded_data_instead_of_signed_data() -> None:
    data = (
        b'<values><value><encodedData format="OCMF" encoding="hex">3082</encodedData>'
        b"</value></values>"
    )
    (value,) = read_container(data, "f.xml")
    assert value.signed_data is None
    assert '<encodedData encoding="hex" format="OCMF"> holds a binary record' in (
        value.problem or ""
    )


def test_namespaces_and_other_roots_holding_values() -> None:
    data = (
        b'<c:current xmlns:c="urn:x"><c:value><c:signedData>d</c:signedData></c:value></c:current>'
    )
    (value,) = read_container(data, "f.xml")
    assert value.signed_data == "d"


def test_latin1_and_bom() -> None:
    data = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        '<values><value context="Ladesäule"><signedData>x</signedData></value></values>'
    )
    assert read_container(data.encode("latin-1"), "f.xml")[0].context == "Ladesäule"
    data = (
        '<?xml version="1.0" encoding="utf-8"?>'
        "<values><value><signedData>ü</signedData></value></values>"
    )
    assert read_container(b"\xef\xbb\xbf" + data.encode(), "f.xml")[0].signed_data == "ü"


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?>\n<!DOCTYPE values [<!ENTITY x "y">]>\n<values>&x;</values>',
        b'<?xml version="1.0"?>\n<!doctype values SYSTEM "http://example.invalid/x.dtd"><values/>',
        b"<values><!ENTITY lol 'lol'></values>",
        '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE v [<!ENTITY a "b">]><v/>'.encode(
            "utf-16"
        ),
        "<!DOCTYPE v><v/>".encode("utf-16-be"),
    ],
)
def test_dtd_and_entities_are_refused_before_parsing(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="refused: no DTD and no entities") as caught:
        read_container(data, "evil.xml")
    assert str(caught.value).startswith("evil.xml: <!")


def test_billion_laughs_is_refused() -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    data = f'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY l0 "lol">{lol}]><v>&l9;</v>'.encode()
    with pytest.raises(InvalidInput, match="refused"):
        read_container(data, "lol.xml")


def test_oversized_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transparenz, "MAX_BYTES", 100)
    with pytest.raises(InvalidInput, match=r"big\.xml: 101 bytes, larger than the 100 accepted"):
        read_container(b" " * 101, "big.xml")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b'<?xml version="1.0"', "line 1, column 1: unclosed token"),
        (b"<values>\n  <value>\n</values>", "line 3, column 3: mismatched tag"),
        (b"", "line 1, column 1: no element found"),
        (b"<values>\n<value a='1' a='2'/></values>", "line 2, column 14: duplicate attribute"),
    ],
)
def test_invalid_xml_names_file_line_and_column(data: bytes, where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_container(data, "dir/broken.xml")
    assert str(caught.value).startswith(f"dir/broken.xml: invalid XML at {where}")


@pytest.mark.parametrize(
    ("root", "evidence"),
    [
        (
            '<Billing xmlns="http://www.mennekes.de/Mennekes.EdlVerification.xsd"/>',
            "root element <Billing>, not OCMF: Mennekes EDL billing XML",
        ),
        ("<ChargingProcess/>", "root element <ChargingProcess>, not OCMF: Mennekes EDL"),
        ("<values/>", "root element <values>, no <value> element in it"),
    ],
)
def test_other_documents_are_not_containers(root: str, evidence: str) -> None:
    with pytest.raises(InvalidInput, match="not a Transparenzsoftware container") as caught:
        read_container(root.encode(), "f.xml")
    assert evidence in str(caught.value)


def test_parser_refuses_a_dtd_even_past_the_byte_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: the expat handlers refuse what the byte scan might miss."""
    monkeypatch.setattr(transparenz, "_refuse_declarations", lambda data, name: None)
    data = b'<?xml version="1.0"?>\n<!DOCTYPE v [<!ENTITY x "y">]>\n<v>&x;</v>'
    with pytest.raises(InvalidInput, match="<!DOCTYPE at line 2 refused"):
        read_container(data, "evil.xml")
    data = b'<?xml version="1.0"?><!DOCTYPE v SYSTEM "file:///etc/passwd"><v/>'
    with pytest.raises(InvalidInput, match="refused"):
        read_container(data, "evil.xml")
