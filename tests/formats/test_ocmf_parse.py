"""Parsing OCMF records: the signed bytes stay exactly as written, malformed input is refused."""

from __future__ import annotations

import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats.ocmf import (
    OcmfDocument,
    Reading,
    effective_readings,
    parse_ocmf,
    serialize_ocmf,
)

PAYLOAD = (
    '{"FV":"1.0","GI":"ABL SBC-301","GS":"808829900001","PG":"T12345","MS":"BQ27400330016",'
    '"IS":true,"IL":"VERIFIED","IF":["RFID_PLAIN","OCPP_RS_TLS"],"IT":"ISO14443",'
    '"ID":"1F2D3A4F5506C7","RD":[{"TM":"2018-07-24T13:22:04,000+0200 S","TX":"B",'
    '"RV":2935.60,"RI":"1-b:1.8.0","RU":"kWh","RT":"DC","EF":"","ST":"G"},'
    '{"TM":"2018-07-24T13:26:04,000+0200 S","TX":"E","RV":2965.1e0}]}'
)
SIGNATURE = '{"SA":"ECDSA-secp256r1-SHA256","SD":"3045022100AA"}'
TEXT = f"OCMF|{PAYLOAD}|{SIGNATURE}"


def test_fields_and_raw_payload() -> None:
    doc = parse_ocmf(TEXT)
    assert doc.payload == PAYLOAD.encode()
    assert doc.signature.raw == SIGNATURE.encode()
    assert doc.signature.algorithm == "ECDSA-secp256r1-SHA256"
    assert doc.signature.encoding is None and doc.signature.mime_type is None
    assert doc.signature.data == "3045022100AA"
    assert (doc.pagination, doc.meter_serial, doc.gateway_serial) == (
        "T12345",
        "BQ27400330016",
        "808829900001",
    )
    assert doc.identification_status is True
    assert doc.identification_flags == ("RFID_PLAIN", "OCPP_RS_TLS")
    assert len(doc.readings) == 2


def test_numbers_keep_their_written_form() -> None:
    """OCMF 1.2 Table 7, RV: the representation must not be transformed."""
    doc = parse_ocmf(TEXT)
    assert [r.value for r in doc.readings] == ["2935.60", "2965.1e0"]


def test_readings_inherit_omitted_fields_from_the_previous_one() -> None:
    doc = parse_ocmf(TEXT)
    assert doc.readings[1].obis is None
    first, second = effective_readings(doc)
    assert second == Reading(
        time="2018-07-24T13:26:04,000+0200 S",
        transaction="E",
        value="2965.1e0",
        obis="1-b:1.8.0",
        unit="kWh",
        current_type="DC",
        error_flags="",
        status="G",
    )
    assert second.to_dict() == {
        "time": "2018-07-24T13:26:04,000+0200 S",
        "transaction": "E",
        "value": "2965.1e0",
        "unit": "kWh",
        "obis": "1-b:1.8.0",
        "status": "G",
    }
    assert first.to_dict()["value"] == "2935.60"


def test_first_and_last_pipe_delimit_the_payload() -> None:
    body = '{"PG":"T1","ID":"a|b||c","RD":[]}'
    doc = parse_ocmf(f"OCMF|{body}|{SIGNATURE}")
    assert doc.payload == body.encode()
    assert doc.identification_data == "a|b||c"


def test_whitespace_around_the_whole_string_is_ignored_but_inside_is_signed() -> None:
    body = '{ "PG" : "T1",\n  "RD" : [ ] }'
    doc = parse_ocmf(f"\n\t  OCMF|{body}|{SIGNATURE}  \r\n")
    assert doc.payload == body.encode()
    assert serialize_ocmf(doc) == f"OCMF|{body}|{SIGNATURE}"


def test_bytes_input_with_bom_and_non_ascii() -> None:
    body = '{"PG":"T1","GI":"Zähler Ω"}'
    data = b"\xef\xbb\xbf" + f"OCMF|{body}|{SIGNATURE}".encode()
    doc = parse_ocmf(data)
    assert doc.payload == body.encode("utf-8")
    assert doc.gateway_id == "Zähler Ω"


def test_round_trip() -> None:
    doc = parse_ocmf(TEXT)
    assert serialize_ocmf(doc) == TEXT
    assert parse_ocmf(serialize_ocmf(doc)) == doc
    assert isinstance(doc, OcmfDocument)


def test_scalars_of_string_fields_keep_their_text() -> None:
    """Real meters write "FV": 1.0 and "CT": 0 (chargepoint_3.xml)."""
    doc = parse_ocmf('OCMF|{"FV": 1.0, "CT": 0, "PG": "T2"}|{"SD":"00"}')
    assert (doc.format_version, doc.charge_point_type) == ("1.0", "0")


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        ("", "expected OCMF|payload|signature"),
        ("OCMF", "expected OCMF|payload|signature"),
        ('OCMF|{"PG":"T1"}', "expected OCMF|payload|signature"),
        (f"OCMA|{PAYLOAD}|{SIGNATURE}", "header is 'OCMA', expected 'OCMF'"),
        (f"ocmf|{PAYLOAD}|{SIGNATURE}", "header is 'ocmf'"),
        (f"OCMF|{{|{SIGNATURE}", "payload section is not valid JSON"),
        (f"OCMF|[1,2]|{SIGNATURE}", "payload section must be a JSON object, found an array"),
        (f'OCMF|{{"PG":"T1","PG":"T2"}}|{SIGNATURE}', "duplicate key 'PG'"),
        (f'OCMF|{{"RV":NaN}}|{SIGNATURE}', "NaN is not JSON"),
        (f"OCMF|{PAYLOAD}|", "signature section is not valid JSON"),
        (f'OCMF|{PAYLOAD}|{{"SA":"ECDSA-secp256r1-SHA256"}}', "has no SD"),
        (f'OCMF|{PAYLOAD}|{{"SD":12}}', "SD must be a string, found a number"),
        (f'OCMF|{{"RD":{{}}}}|{SIGNATURE}', "RD must be an array of readings, found an object"),
        (f'OCMF|{{"RD":[1]}}|{SIGNATURE}', "reading 1 of RD must be an object, found a number"),
        (f'OCMF|{{"MS":["x"]}}|{SIGNATURE}', "MS must be a string, found an array"),
        (f'OCMF|{{"IS":"yes"}}|{SIGNATURE}', "IS must be a boolean, found a string"),
        (f'OCMF|{{"IF":"RFID_NONE"}}|{SIGNATURE}', "IF must be an array of strings"),
        ("OCMF|" + "[" * 100_000 + f"|{SIGNATURE}", "payload section is not valid JSON"),
    ],
)
def test_malformed_records_are_refused_with_evidence_and_rule(text: str, evidence: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ocmf(text)
    assert evidence in str(caught.value)
    assert caught.value.rule and caught.value.rule.startswith("OCMF 1.2")
    assert f"[{caught.value.rule}]" in str(caught.value)


def test_undecodable_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_ocmf(b"OCMF|{\xff}|{}")
    with pytest.raises(InvalidInput, match="not encodable as UTF-8"):
        parse_ocmf("OCMF|{\ud800}|{}")
