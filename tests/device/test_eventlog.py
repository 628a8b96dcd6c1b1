"""The event logger / audit trail: counted, chained, signed, append-only, bounded."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import orjson
import pytest

from metrocloud.device import (
    EVENT_DOMAIN,
    DeviceEventKind,
    EventLog,
    EventLogFull,
    EventRecord,
    load_records,
    parse_record,
    verify_chain,
)
from metrocloud.device.eventlog import GENESIS
from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats.batches import InvalidBatch, parse_payload
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

from ._support import Clock

KEY = PrivateKey.generate()


def _filled(path: Path | None = None, count: int = 4, key: PrivateKey = KEY) -> EventLog:
    log = (
        EventLog.open(path, key, clock=Clock()) if path else EventLog.in_memory(key, clock=Clock())
    )
    kinds = list(DeviceEventKind)
    for i in range(count):
        log.append(kinds[i % len(kinds)], {"i": i})
    return log


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_records_are_counted_chained_and_signed(algorithm: str) -> None:
    key = PrivateKey.generate(KeyAlgorithm(algorithm))
    log = _filled(count=5, key=key)
    records = log.records
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev == GENESIS
    for before, after in itertools.pairwise(records):
        assert after.prev == before.hash
    for record in records:
        key.public_key.verify(record.signature, EVENT_DOMAIN + canonical_json(record.body()))
    check = verify_chain(records, key.public_key)
    assert check.ok and check.valid_records == 5 and check.head == log.head == records[-1].hash


def test_record_line_is_canonical_json_and_parses_back() -> None:
    record = _filled(count=1).records[0]
    line = record.to_line()
    assert line.endswith(b"\n") and line[:-1] == canonical_json(orjson.loads(line))
    assert parse_record(line) == record
    assert record.at == "2026-01-05T10:00:00.000Z"


def test_all_required_kinds_exist() -> None:
    required = {
        "parameter_changed",
        "software_updated",
        "software_update_refused",
        "seal_broken",
        "tamper_detected",
        "power_failure",
        "clock_set",
    }
    assert required <= {k.value for k in DeviceEventKind}


def _break(records: list[EventRecord], index: int, **changes: object) -> list[EventRecord]:
    broken = list(records)
    broken[index] = dataclasses.replace(broken[index], **changes)  # type: ignore[arg-type]
    return broken


@pytest.mark.parametrize(
    ("mutate", "seq", "reason"),
    [
        (lambda r: r[:2] + r[3:], 3, "found seq 4 where 3 was due"),
        (lambda r: [r[1], r[0], *r[2:]], 1, "found seq 2 where 1 was due"),
        (lambda r: _break(r, 2, data={"i": 99}), 3, "signature does not verify"),
        (lambda r: _break(r, 1, kind=DeviceEventKind.CLOCK_SET), 2, "signature"),
        (lambda r: _break(r, 3, prev="ab" * 32), 4, "is not the hash"),
        (lambda r: _break(r, 0, key="cd" * 32), 1, "signed with key"),
        (lambda r: _break(r, 2, signature=r[1].signature), 3, "signature does not verify"),
    ],
)
def test_verify_chain_reports_the_first_broken_link(mutate: object, seq: int, reason: str) -> None:
    records = list(_filled(count=5).records)
    check = verify_chain(mutate(records), KEY.public_key)  # type: ignore[operator]
    assert not check.ok and check.broken_seq == seq and reason in (check.reason or "")
    assert check.valid_records == seq - 1
    with pytest.raises(VerificationError, match=f"broken at seq {seq}"):
        check.raise_for_break()


def test_records_of_another_key_do_not_verify() -> None:
    check = verify_chain(_filled(count=2).records, PrivateKey.generate().public_key)
    assert not check.ok and check.broken_seq == 1


def test_file_log_persists_and_reloads_with_verification(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = _filled(path, count=3)
    assert path.read_bytes().count(b"\n") == 3
    again = EventLog.open(path, KEY)
    assert again.records == log.records and again.head == log.head
    again.append(DeviceEventKind.CLOCK_SET, {"old": "a", "new": "b"})
    assert [r.seq for r in EventLog.open(path, KEY).records] == [1, 2, 3, 4]
    assert again.verify().ok


def test_a_changed_line_in_the_file_stops_the_reload(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _filled(path, count=3)
    path.write_bytes(path.read_bytes().replace(b'{"i":1}', b'{"i":7}'))
    with pytest.raises(VerificationError, match="broken at seq 2"):
        EventLog.open(path, KEY)


def test_a_removed_line_stops_the_reload(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _filled(path, count=3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2])
    with pytest.raises(VerificationError, match="broken at seq 2: found seq 3"):
        EventLog.open(path, KEY)


def test_a_malformed_line_names_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _filled(path, count=2)
    path.write_bytes(path.read_bytes() + b"{}\n")
    with pytest.raises(InvalidInput, match="line 3"):
        EventLog.open(path, KEY)


def test_a_torn_final_append_is_cut_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _filled(path, count=2)
    path.write_bytes(path.read_bytes() + b'{"at":"2026-01-05T1')
    assert EventLog.open.__doc__ and load_records(path)[1] == 19
    log = EventLog.open(path, KEY)
    assert [r.kind for r in log.records][-1] is DeviceEventKind.POWER_FAILURE
    assert log.records[-1].data["bytes"] == 19
    assert log.verify().ok and load_records(path)[1] == 0


def test_when_full_the_log_refuses_rather_than_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, KEY, capacity=3)
    for i in range(3):
        log.append(DeviceEventKind.TAMPER_DETECTED, {"i": i})
    assert log.is_full and log.remaining == 0
    before = path.read_bytes()
    with pytest.raises(EventLogFull) as caught:
        log.append(DeviceEventKind.SEAL_BROKEN)
    assert caught.value.code == "event-log-full" and "P7" in (caught.value.rule or "")
    assert path.read_bytes() == before and len(log) == 3
    with pytest.raises(EventLogFull):
        log.ensure_room()


def test_unknown_kind_and_unrecordable_data_are_refused() -> None:
    log = EventLog.in_memory(KEY)
    with pytest.raises(InvalidInput, match="unknown event kind"):
        log.append("firmware_hacked")
    with pytest.raises(InvalidInput):
        log.append(DeviceEventKind.CLOCK_SET, {"t": float("nan")})
    assert len(log) == 0


def test_event_signature_never_passes_as_a_batch() -> None:
    record = _filled(count=1).records[0]
    with pytest.raises(InvalidBatch):
        parse_payload(record.signed_bytes())


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"v":1}',
        b'{"at":"x","data":{},"key":"'
        + b"a" * 64
        + b'","kind":"nope","prev":"'
        + b"0" * 64
        + b'","seq":1,"sig":"AA","v":1}',
        b'{"at":"x","data":{},"key":"'
        + b"a" * 64
        + b'","kind":"clock_set","prev":"'
        + b"0" * 64
        + b'","seq":0,"sig":"AA","v":1}',
        b'{"at":"x","data":{},"key":"'
        + b"a" * 64
        + b'","kind":"clock_set","prev":"'
        + b"0" * 64
        + b'","seq":1,"sig":"A=","v":1}',
    ],
)
def test_parse_record_is_strict(line: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_record(line)
