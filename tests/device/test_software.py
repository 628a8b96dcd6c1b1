"""Legally relevant software identification and separation (WELMEC 7.2 P2/U2, S1)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.device import SoftwareImage, identify, reference_software, software_checksum
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.types import ChecksumAlgorithm


def test_checksum_follows_the_documented_framing() -> None:
    modules = {"b.py": b"second", "a.py": b"first", "\u00e9.py": b""}
    digest = hashlib.sha256()
    for name in sorted(n.encode() for n in modules):  # UTF-8 byte order
        content = modules[name.decode()]
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(len(content).to_bytes(8, "big") + content)
    assert software_checksum(modules) == digest.hexdigest()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(str.isprintable), st.binary(), min_size=1
    )
)
def test_checksum_ignores_mapping_order(modules: dict[str, bytes]) -> None:
    reversed_modules = dict(reversed(list(modules.items())))
    assert software_checksum(modules) == software_checksum(reversed_modules)


def test_framing_keeps_name_and_content_boundaries_apart() -> None:
    assert software_checksum({"ab": b"c"}) != software_checksum({"a": b"bc"})
    assert software_checksum({"a": b"", "b": b""}) != software_checksum({"a": b"b"})


def test_any_module_change_changes_the_identification() -> None:
    base = {"m.py": b"x = 1", "n.py": b"y = 2"}
    checksum = software_checksum(base)
    assert software_checksum({**base, "m.py": b"x = 2"}) != checksum
    assert software_checksum({**base, "o.py": b""}) != checksum
    assert software_checksum({"m.py": b"x = 1"}) != checksum
    assert software_checksum({"M.py": b"x = 1", "n.py": b"y = 2"}) != checksum


def test_identify_gives_a_domain_identification() -> None:
    ident = identify("meter", "2.0", {"m.py": b"code"})
    assert ident.algorithm is ChecksumAlgorithm.SHA256 and len(ident.checksum) == 64
    assert (ident.name, ident.version) == ("meter", "2.0")


def test_other_modules_are_outside_the_identification() -> None:
    one = SoftwareImage(name="m", version="1", legally_relevant={"a": b"1"}, other={"ui": b"x"})
    two = SoftwareImage(name="m", version="1", legally_relevant={"a": b"1"}, other={"ui": b"y"})
    assert one.identification == two.identification


def test_parts_must_be_disjoint() -> None:
    with pytest.raises(InvalidInput, match="disjoint") as caught:
        SoftwareImage(name="m", version="1", legally_relevant={"a": b""}, other={"a": b""})
    assert "S1" in (caught.value.rule or "")


@pytest.mark.parametrize(
    "modules", [{}, {"": b"x"}, {"a\nb": b"x"}, {"a": "text"}, {1: b"x"}, [("a", b"x")]]
)
def test_invalid_modules_are_refused(modules: object) -> None:
    with pytest.raises(InvalidInput):
        software_checksum(modules)  # type: ignore[arg-type]


def test_image_json_round_trip_recomputes_the_identification() -> None:
    image = SoftwareImage(
        name="m", version="1", legally_relevant={"a": b"\x00\xff"}, other={"ui": b"x"}
    )
    again = SoftwareImage.from_json(image.to_json())
    assert again == image and again.identification == image.identification
    tampered = image.to_json().replace(b'"a":"AP8="', b'"a":"AP4="')
    assert SoftwareImage.from_json(tampered).checksum != image.checksum


def test_reference_software_is_the_devices_own_code() -> None:
    software = reference_software("1.0.0")
    assert "metrocloud/formats/batches.py" in software.legally_relevant
    assert "metrocloud/device/eventlog.py" in software.legally_relevant
    assert "metrocloud/device/__init__.py" in software.other
    assert reference_software("1.0.0").identification == software.identification
