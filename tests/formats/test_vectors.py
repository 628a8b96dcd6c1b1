"""Acceptance: every file of the Transparenzsoftware test set gets a clear answer.

The expected verdicts come from reading the files and the Transparenzsoftware's own tests
(SAFE-eV/transparenzsoftware, src/test/resources/xml), not from running this code:

- OCMF files whose signatures hold and whose records keep the rules: valid.
- ``*_fail`` files and forged records (``test_ocmf_ebee_02.xml`` changes RV 7753 to 7763 in
  the begin record): invalid.
- ``second_key_fail_ocmf.xml``: the end record comes with a secp256r1 key, SA names
  secp256k1 (the Transparenzsoftware shows no data); the begin then has no end: invalid.
- ``20211007-device-with-evt-ocmf-sss-ses.xml`` (a device event): signatures hold, but every
  reading has meter status E and error flags "Et": invalid.
- ``OCMF-receipt-*``: templates without data (error) or Isabellenhuette receipts with raw keys
  whose readings carry status E and error flag E (invalid; the import/export one is also
  edited after signing).
- ``test_ocmf_transaction_two_values.xml`` (secp192k1): both signatures hold, but both
  records have page T12345 and readings with TX=X (energy no longer usable): invalid.
- SML/EDL40, ISA-EDL-40P, signedMeterValue XML, Mennekes/"metra" billing, the RSA-sealed
  record: not OCMF, an error verdict or a file-level error; ``signature_16955306_ALL.xml``
  carries no public key: error.
"""

from __future__ import annotations

import pytest

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats.ocmf import parse_ocmf, verify_file, verify_ocmf
from metrocloud.formats.transparenz import read_container

from ._support import FIXTURES

V, X, E = "valid", "invalid", "error"  # X: invalid
FILE_ERROR = "file error"
EXPECTED: dict[str, list[str] | str] = {
    "20211007-device-with-evt-ocmf-sss-ses.xml": [X, X],
    "ACU_falsch.metra.xml": FILE_ERROR,
    "ACU_korrekt.metra.xml": FILE_ERROR,
    "NewEHZSML.xml": [E, E],
    "NewEHZXML.xml": [E, E],
    "OCMF-receipt-template.xml": [E],
    "OCMF-receipt-template_with_publickey.xml": [E],
    "OCMF-receipt-with_import_and_export.xml": [X],
    "OCMF-receipt-with_publickey_and_data.xml": [X],
    "OCMF_Test_Data_00.xml": [V, V],
    "Ocmf_Example_OBIS_98.8.0_2.8.0.xml": [V],
    "VW_OCMF_load.xml": [V],
    "XML_gultiger_und_ungultiger_Date_nwertsaetze_im_ISA-EDL-40P_1.0.xml": [E] * 5,
    "brainpoolP256r1.xml": [V, V],
    "chargepoint_3.xml": [V],
    "demeke99001002-2020-04-21-08_53_12-5892888.metra.xml": FILE_ERROR,
    "edl-40-01.xml": [E],
    "edl-40-02.xml": [E],
    "edl-40-03.xml": [E],
    "isa-edl-40p-begin-fail.xml": [E],
    "isa-edl-40p-data-fail.xml": [E],
    "isa-edl-40p-ok.xml": [E],
    "isa-edl-40p-sign-fail.xml": [E],
    "isa-edl-40p-update-fail.xml": [E],
    "isa-edl-40p-veri-fail.xml": [E],
    "keba_test.xml": [V] * 100,
    "keba_test_txn.xml": [V] * 100,
    "measurements.xml": [V] * 21,
    "nistP384_0Wh.xml": [V, V],
    "ocmf_sec.xml": [V, V],
    "ocmf_tariff_1.xml": [V],
    "second_key_fail_ocmf.xml": [X, X],
    "signature_16955306_ALL.xml": [E, E],
    "test_input_invalid_xml.xml": FILE_ERROR,
    "test_input_xml_two_values.xml": [E, E],
    "test_mennekes_charging_processes.xml": FILE_ERROR,
    "test_mennekes_full.xml": FILE_ERROR,
    "test_ocmf_ebee_01.xml": [V, V],
    "test_ocmf_ebee_02.xml": [X, X],
    "test_ocmf_keba_kcp30.xml": [V],
    "test_ocmf_keba_kcp30_fail.xml": [X],
    "test_ocmf_rsa_01.xml": [E],
    "test_ocmf_transaction_two_values.xml": [X, X],
    "wirelane.xml": [E, E],
}
KEYS = {"file", "index", "verdict", "reason", "algorithm", "meter_serial", "readings"}
READING_KEYS = {"time", "transaction", "value", "unit", "obis", "status"}


def test_the_fixtures_are_complete_and_licensed() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.xml")) == sorted(EXPECTED)
    assert "Apache License, Version 2.0" in (FIXTURES / "LICENSE").read_text()
    readme = (FIXTURES / "README.md").read_text()
    assert "SAFE-eV/transparenzsoftware" in readme
    assert "d556f1ace68043682862b9403b7fff25f1df93a6" in readme


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_gets_an_answer(name: str) -> None:
    path = FIXTURES / name
    expected = EXPECTED[name]
    if expected == FILE_ERROR:
        with pytest.raises(InvalidInput) as caught:
            verify_file(path)
        assert str(caught.value).startswith(f"{path}: ")
        return
    records = verify_file(path)
    assert [r.verdict for r in records] == expected
    for n, r in enumerate(records):
        as_dict = r.to_dict()
        assert set(as_dict) == KEYS
        assert (as_dict["file"], as_dict["index"]) == (str(path), n)
        assert (r.reason is None) == (r.verdict == V)
        assert all(set(x) == READING_KEYS for x in as_dict["readings"])  # type: ignore[attr-defined]


def reasons(name: str) -> list[str]:
    return [r.reason or "" for r in verify_file(FIXTURES / name)]


def test_valid_records_carry_algorithm_meter_and_readings() -> None:
    (r,) = verify_file(FIXTURES / "test_ocmf_keba_kcp30.xml")
    assert (r.algorithm, r.meter_serial) == ("ECDSA-secp256r1-SHA256", None)
    assert [x.to_dict() for x in r.readings] == [
        {
            "time": "2019-08-13T10:03:15,000+0000 I",
            "transaction": "B",
            "value": "0.2596",
            "unit": "kWh",
            "obis": "1-b:1.8.0",
            "status": "G",
        },
        {
            "time": "2019-08-13T10:03:36,000+0000 R",
            "transaction": "E",
            "value": "0.2597",
            "unit": "kWh",
            "obis": "1-b:1.8.0",
            "status": "G",
        },
    ]
    algorithms = {
        "brainpoolP256r1.xml": "ECDSA-brainpoolP256r1-SHA256",
        "nistP384_0Wh.xml": "ECDSA-secp384r1-SHA256",
        "OCMF_Test_Data_00.xml": "ECDSA-secp256k1-SHA256",
        "ocmf_sec.xml": "ECDSA-secp256k1-SHA256",
        "chargepoint_3.xml": "ECDSA-secp256r1-SHA256",
    }
    for name, algorithm in algorithms.items():
        assert {r.algorithm for r in verify_file(FIXTURES / name)} == {algorithm}


def test_changed_data_fails_the_signature() -> None:
    (reason,) = reasons("test_ocmf_keba_kcp30_fail.xml")
    assert reason.startswith("signature does not verify: ECDSA-secp256r1-SHA256")
    first, second = reasons("test_ocmf_ebee_02.xml")
    assert first.startswith("signature does not verify")
    assert "transaction begins with TX=E" in second


def test_second_key_of_another_curve() -> None:
    first, second = reasons("second_key_fail_ocmf.xml")
    assert "public key is an EC key on secp256r1, but SA ECDSA-secp256k1-SHA256" in second
    assert "transaction is not ended" in first


def test_secp192k1_signatures_hold_but_the_records_break_rules() -> None:
    values = read_container(
        (FIXTURES / "test_ocmf_transaction_two_values.xml").read_bytes(), "two_values"
    )
    for value in values:
        verdict = verify_ocmf(parse_ocmf(value.signed_data or ""), value.public_key)
        assert verdict.signature_valid, verdict.reason
        assert verdict.algorithm == "ECDSA-secp192k1-SHA256"
    first, second = reasons("test_ocmf_transaction_two_values.xml")
    assert "PG T12345 is also the page of value 1" in first
    assert "TX=X" in first and "TX=X" in second


def test_device_event_and_receipts_with_error_states() -> None:
    for reason in reasons("20211007-device-with-evt-ocmf-sss-ses.xml"):
        assert "meter status ST=E (OTHER_ERROR)" in reason
        assert "error flags EF='Et': energy and time no longer usable" in reason
        assert "signature" not in reason
    (reason,) = reasons("OCMF-receipt-with_publickey_and_data.xml")
    assert "signature" not in reason  # raw 64-byte key and r || s signature verify
    assert "readings 1, 2, 3: error flags EF='E'" in reason
    (reason,) = reasons("OCMF-receipt-with_import_and_export.xml")
    assert reason.startswith("signature does not verify")
    for name in ("OCMF-receipt-template.xml", "OCMF-receipt-template_with_publickey.xml"):
        assert reasons(name) == [
            "no signed data: <signedData> is empty "
            "[OCMF 1.2 §JSON based OCMF Format (OCMF|payload|signature)]"
        ]


def test_values_without_public_key() -> None:
    for reason in reasons("signature_16955306_ALL.xml"):
        assert reason.startswith("no public key")


def test_other_formats_are_named() -> None:
    assert all(r.startswith("not OCMF: SML data") for r in reasons("NewEHZSML.xml"))
    assert all(r.startswith("not OCMF: signedMeterValue XML") for r in reasons("wirelane.xml"))
    assert all(r.startswith("not OCMF: ISA_EDL_40_P format") for r in reasons("isa-edl-40p-ok.xml"))
    assert all(
        r.startswith("not OCMF: SML_EDL40_P format")
        for r in reasons("test_input_xml_two_values.xml")
    )
    (reason,) = reasons("test_ocmf_rsa_01.xml")
    assert "<encodedData" in reason and "RSA" in reason
    with pytest.raises(InvalidInput, match="root element <Billing>, not OCMF: Mennekes"):
        verify_file(FIXTURES / "ACU_korrekt.metra.xml")


def test_invalid_xml_names_file_and_line() -> None:
    path = FIXTURES / "test_input_invalid_xml.xml"
    with pytest.raises(InvalidInput) as caught:
        verify_file(path)
    assert str(caught.value).startswith(f"{path}: invalid XML at line 1, column 1: unclosed token")
