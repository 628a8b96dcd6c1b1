"""The rules of OCMF records beyond the signature, alone and across the records of a file."""

from __future__ import annotations

import pytest

from metrocloud.formats.ocmf import VerdictRecord, parse_ocmf, verify_ocmf, verify_values
from metrocloud.formats.transparenz import ContainerValue

from ._support import Signer, payload, reading, record


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate("secp256r1")


def judge(signer: Signer, *bodies: str) -> list[VerdictRecord]:
    """Verdicts on a file holding one signed record per body, in this order."""
    key = signer.public_der().hex()
    values = [ContainerValue(i, record(signer, b), public_key=key) for i, b in enumerate(bodies)]
    return verify_values(values, "test.xml")


def verdicts(records: list[VerdictRecord]) -> list[str]:
    return [r.verdict for r in records]


def one(signer: Signer, body: str) -> tuple[str, str]:
    verdict = verify_ocmf(parse_ocmf(record(signer, body)), signer.public_der())
    assert verdict.signature_valid
    return verdict.status, verdict.reason or ""


# --- one record ----------------------------------------------------------------------------


def test_a_complete_transaction_in_one_record_is_valid(signer: Signer) -> None:
    assert one(signer, payload()) == ("valid", "")


@pytest.mark.parametrize("pg", ["T01", "X5", "T", "t1", "T1 ", ""])
def test_pagination_format(signer: Signer, pg: str) -> None:
    status, reason = one(signer, payload(pg=pg))
    assert status == "invalid"
    assert f"PG is {pg!r}; expected T or F followed by a number" in reason
    assert "[OCMF 1.2 Table 2 (PG)]" in reason


def test_fiscal_page_without_transaction_reference_is_valid(signer: Signer) -> None:
    body = payload(pg="F7", readings=[reading(None, 3.0)])
    assert one(signer, body) == ("valid", "")


def test_fiscal_page_with_transaction_codes_is_invalid(signer: Signer) -> None:
    status, reason = one(signer, payload(pg="F7"))
    assert status == "invalid" and "PG F7 is a fiscal page but readings have TX" in reason


def test_transaction_page_without_transaction_codes_is_invalid(signer: Signer) -> None:
    status, reason = one(signer, payload(pg="T7", readings=[reading(None, 3.0)]))
    assert status == "invalid" and "PG T7 is a transaction page but no reading has TX" in reason


def test_a_serial_is_needed(signer: Signer) -> None:
    status, reason = one(signer, payload(MS=None, GS=""))
    assert status == "invalid" and "neither MS (meter serial) nor GS" in reason
    assert one(signer, payload(MS=None)) == ("valid", "")  # KEBA: GS only


@pytest.mark.parametrize(
    ("change", "evidence"),
    [
        ({"ST": "E"}, "readings 1, 2: meter status ST=E (OTHER_ERROR); expected G (OK)"),
        ({"ST": "M"}, "meter status ST=M (MANIPULATED)"),
        ({"EF": "E"}, "error flags EF='E': energy no longer usable for billing"),
        ({"EF": "t"}, "error flags EF='t': time no longer usable for billing"),
        ({"EF": "Eq"}, "energy no longer usable for billing; unknown flag(s) 'q'"),
        ({"TM": "2024-05-01 10:00:00"}, "TM '2024-05-01 10:00:00' is not"),
        ({"TM": "2024-13-01T10:00:00,000+0200 S"}, "is not 'YYYY-MM-DDThh:mm:ss,fff+hhmm S'"),
        ({"TM": "2024-05-01T10:00:00,000+0200 Q"}, "time status U, I, S or R"),
        ({"RV": "lots"}, "reading 1: RV 'lots' is not a number"),
        ({"TX": "Q"}, "reading 1: TX 'Q' is unknown"),
    ],
)
def test_reading_rules(signer: Signer, change: dict[str, str], evidence: str) -> None:
    first = reading("B", 1.0) | change
    body = payload(readings=[first, {"TX": "E", "RV": 2.0, "TM": "2024-05-01T11:00:00,000+0200 S"}])
    status, reason = one(signer, body)
    assert status == "invalid"
    assert evidence in reason


def test_exception_code_x_makes_the_values_unusable(signer: Signer) -> None:
    body = payload(readings=[reading("B", 1.0), reading("X", 2.0, "10:30:00"), reading("E", 3.0)])
    status, reason = one(signer, body)
    assert status == "invalid" and "reading 2: TX=X, an error during charging" in reason


def test_user_assignment_error_state(signer: Signer) -> None:
    status, reason = one(signer, payload(IL="MISMATCH"))
    assert status == "invalid" and "IL is MISMATCH" in reason and "Table 11" in reason


def test_first_reading_must_give_time_and_status(signer: Signer) -> None:
    status, reason = one(signer, payload(readings=[{"TX": "B", "RV": 1, "RU": "kWh"}]))
    assert status == "invalid" and "reading 1 lacks TM and ST" in reason


def test_no_readings(signer: Signer) -> None:
    status, reason = one(signer, payload(readings=[]))
    assert status == "invalid" and "RD holds no reading" in reason


# --- the records of a file ----------------------------------------------------------------


def begin(pg: str, rv: float = 1.0, **fields: object) -> str:
    return payload(pg=pg, readings=[reading("B", rv)], **fields)


def end(pg: str, rv: float = 2.0, tm: str = "11:00:00", code: str = "E", **fields: object) -> str:
    return payload(pg=pg, readings=[reading(code, rv, tm)], **fields)


def test_begin_and_end_in_two_records_is_valid(signer: Signer) -> None:
    assert verdicts(judge(signer, begin("T5"), end("T6"))) == ["valid", "valid"]


def test_records_are_ordered_by_pagination_not_by_file_order(signer: Signer) -> None:
    """signature_16955306_ALL.xml lists the end before the begin."""
    assert verdicts(judge(signer, end("T6"), begin("T5"))) == ["valid", "valid"]


@pytest.mark.parametrize("code", ["L", "R", "A", "P"])
def test_precise_end_codes(signer: Signer, code: str) -> None:
    assert verdicts(judge(signer, begin("T5"), end("T6", code=code))) == ["valid", "valid"]


def test_updates_between_begin_and_end(signer: Signer) -> None:
    middle = payload(
        pg="T6", readings=[reading("C", 1.5, "10:30:00"), reading("T", 1.7, "10:45:00")]
    )
    assert verdicts(judge(signer, begin("T5"), middle, end("T7"))) == ["valid"] * 3


def test_missing_page_is_invalid(signer: Signer) -> None:
    records = judge(signer, begin("T5"), end("T7"))
    assert verdicts(records) == ["valid", "invalid"]
    assert "PG T7 follows T5 (value 0): 1 record(s) missing; expected T6" in (
        records[1].reason or ""
    )


def test_repeated_page_is_invalid_for_both(signer: Signer) -> None:
    records = judge(signer, begin("T5"), end("T5"))
    assert verdicts(records) == ["invalid", "invalid"]
    assert "PG T5 is also the page of value 1" in (records[0].reason or "")
    assert "PG T5 is also the page of value 0" in (records[1].reason or "")


def test_transaction_without_end_is_invalid(signer: Signer) -> None:
    records = judge(signer, begin("T5"))
    assert verdicts(records) == ["invalid"]
    assert "transaction is not ended" in (records[0].reason or "")


def test_transaction_without_begin_is_invalid(signer: Signer) -> None:
    records = judge(signer, end("T6"))
    assert "transaction begins with TX=E (value 0, reading 1); expected B" in (
        records[0].reason or ""
    )


def test_begin_after_begin_within_a_register(signer: Signer) -> None:
    body = payload(readings=[reading("B", 1.0), reading("B", 1.1, "10:10:00"), reading("E", 2.0)])
    records = judge(signer, body)
    assert "TX=B after TX=B" not in (records[0].reason or "")  # a repeated B is tolerated
    body = payload(
        readings=[
            reading("B", 1.0),
            reading("C", 1.1, "10:10:00"),
            reading("B", 1.2, "10:20:00"),
            reading("E", 2.0, "11:00:00"),
        ]
    )
    records = judge(signer, body)
    assert "value 0, reading 3 (RI 1-b:1.8.0): TX=B after TX=C" in (records[0].reason or "")


def test_each_register_has_its_own_begin_and_end(signer: Signer) -> None:
    """Ocmf_Example_OBIS_98.8.0_2.8.0.xml: B, E on 98.8.0, then B, E on 2.8.0."""
    body = payload(
        readings=[
            reading("B", 0.0, RI="1-0:98.8.0.FF"),
            reading("E", 1.0, "11:00:00", RI="1-0:98.8.0.FF"),
            reading("B", 1.0, RI="1-0:2.8.0.FF"),
            reading("E", 2.0, "11:00:00", RI="1-0:2.8.0.FF"),
        ]
    )
    assert verdicts(judge(signer, body)) == ["valid"]


def test_reading_after_the_end(signer: Signer) -> None:
    body = payload(
        readings=[
            reading("B", 1.0),
            reading("E", 2.0, "11:00:00"),
            reading("C", 3.0, "11:10:00"),
            reading("E", 4.0, "11:20:00"),
        ]
    )
    records = judge(signer, body)
    assert "TX=C after TX=E" in (records[0].reason or "")


def test_several_transactions_in_one_file(signer: Signer) -> None:
    """keba_test.xml: every record a whole transaction, pages counting on."""
    bodies = [payload(pg=f"T{n}") for n in range(40, 44)]
    assert verdicts(judge(signer, *bodies)) == ["valid"] * 4


def test_meter_reading_must_not_decrease(signer: Signer) -> None:
    records = judge(signer, begin("T5", rv=9.0), end("T6", rv=8.5))
    assert verdicts(records) == ["valid", "invalid"]
    assert "RV 8.5 is below 9.0; expected the register not to decrease" in (records[1].reason or "")


def test_time_must_not_go_back(signer: Signer) -> None:
    records = judge(signer, begin("T5"), end("T6", tm="09:00:00"))
    assert "TM 2024-05-01T09:00:00,000+0200 S is before" in (records[1].reason or "")


def test_one_meter_per_transaction(signer: Signer) -> None:
    records = judge(signer, begin("T5"), end("T6", MS="OTHER-METER"))
    assert verdicts(records) == ["valid", "invalid"]
    assert "MS is 'OTHER-METER', but 'METER-1' in value 0 of the same transaction" in (
        records[1].reason or ""
    )


def test_records_of_another_key_form_their_own_group(signer: Signer) -> None:
    """measurements.xml: two charging points in one file, each counting its own pages."""
    other = Signer.generate("secp256r1")
    values = [
        ContainerValue(0, record(signer, payload(pg="T100")), public_key=signer.public_der().hex()),
        ContainerValue(1, record(other, payload(pg="T7")), public_key=other.public_der().hex()),
        ContainerValue(2, record(signer, payload(pg="T101")), public_key=signer.public_der().hex()),
    ]
    assert verdicts(verify_values(values, "f.xml")) == ["valid"] * 3


def test_records_whose_signature_fails_are_left_out_of_the_transaction(signer: Signer) -> None:
    """test_ocmf_ebee_02.xml: the begin is forged, so the end has no authentic begin."""
    forged = record(signer, begin("T5")).replace('"RV":1.0', '"RV":0.5')
    values = [
        ContainerValue(0, forged, public_key=signer.public_der().hex()),
        ContainerValue(1, record(signer, end("T6")), public_key=signer.public_der().hex()),
    ]
    records = verify_values(values, "f.xml")
    assert verdicts(records) == ["invalid", "invalid"]
    assert "signature does not verify" in (records[0].reason or "")
    assert "transaction begins with TX=E" in (records[1].reason or "")
