"""Device event logs uploaded to the node: append-only, verified against the device key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from metrocloud.device.eventlog import DeviceEventKind, EventLog
from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.services import event_logs
from metrocloud.services.node import Node
from metrocloud.store.schema import device_event_logs, quarantine
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World
from tests.services import _verification_fleet as vf


@pytest.fixture
def fleet(world: World) -> vf.Fleet:
    return vf.register(world, world.certificate(world.nb1, world.man1), 2)


def _stored(node: Node, iid: str) -> list[str]:
    with node.db.read() as conn:
        return list(
            conn.execute(
                select(device_event_logs.c.line)
                .where(device_event_logs.c.instrument_id == iid)
                .order_by(device_event_logs.c.seq)
            ).scalars()
        )


def _quarantined(node: Node) -> list[tuple[str, str, int | None]]:
    with node.db.read() as conn:
        return [
            (r.reason, r.instrument_id, r.counter)
            for r in conn.execute(select(quarantine).order_by(quarantine.c.id))
        ]


def _log(fleet: vf.Fleet, iid: str, n: int) -> EventLog:
    log = vf.device_log(fleet.keys[iid])
    for i in range(n - 2):
        log.append(DeviceEventKind.CLOCK_SET, {"step": i})
    return log


def _lines(log: EventLog) -> list[bytes]:
    return [r.to_line() for r in log.records]


def test_a_later_upload_extends_the_earlier_one(node: Node, world: World, fleet: vf.Fleet) -> None:
    iid = fleet.ids[0]
    log = _log(fleet, iid, 5)
    lines = _lines(log)
    out = event_logs.upload_event_log(node, world.man1.actor, iid, b"".join(lines[:3]))
    assert (out["records"], out["appended"]) == (3, 3)
    # the whole log again: the known prefix is recognised, the rest appended
    out = event_logs.upload_event_log(node, world.op1.actor, iid, b"".join(lines[:4]))
    assert (out["records"], out["appended"], out["head"]) == (4, 1, log.records[3].hash)
    # a delta: just the new record; and the same upload again changes nothing
    for appended in (1, 0):
        out = event_logs.upload_event_log(node, world.op1.actor, iid, lines[4])
        assert (out["records"], out["appended"]) == (5, appended)
    assert [s.encode() + b"\n" for s in _stored(node, iid)] == lines
    assert out["key_id"] == fleet.keys[iid].key_id
    # a prefix of what is stored is fine too (nothing new)
    assert event_logs.upload_event_log(node, world.man1.actor, iid, lines[0])["appended"] == 0
    assert _quarantined(node) == []


def test_a_rewritten_history_is_refused_and_the_earlier_upload_stays(
    node: Node, world: World, fleet: vf.Fleet
) -> None:
    iid = fleet.ids[0]
    original = _log(fleet, iid, 4)
    event_logs.upload_event_log(node, world.man1.actor, iid, vf.log_bytes(original))
    # the device was reset and wrote a new history with the same key from seq 1
    rewritten = EventLog.in_memory(fleet.keys[iid], clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    for _ in range(5):
        rewritten.append(DeviceEventKind.PROVISIONED, {})
    with pytest.raises(event_logs.EventLogRewritten, match="seq 1 differs") as info:
        event_logs.upload_event_log(node, world.man1.actor, iid, vf.log_bytes(rewritten))
    assert info.value.code == "event-log-rewritten"
    assert [s.encode() + b"\n" for s in _stored(node, iid)] == _lines(original)
    assert _quarantined(node) == [("event-log-rewritten", iid, 1)]


def test_an_altered_record_is_refused_naming_its_seq_and_check(
    node: Node, world: World, fleet: vf.Fleet
) -> None:
    iid = fleet.ids[0]
    lines = _lines(_log(fleet, iid, 4))
    altered = lines[2].replace(b'"step":0', b'"step":7')
    assert altered != lines[2]
    with pytest.raises(event_logs.EventLogBroken, match="broken at seq 3") as info:
        event_logs.upload_event_log(
            node, world.man1.actor, iid, b"".join([*lines[:2], altered, lines[3]])
        )
    assert "check: signature" in info.value.message
    assert _stored(node, iid) == []  # nothing of a broken upload is kept as the log
    # a stored record altered in a later upload: the signature check names it too
    event_logs.upload_event_log(node, world.man1.actor, iid, b"".join(lines))
    with pytest.raises(event_logs.EventLogBroken, match="seq 3 differs"):
        event_logs.upload_event_log(node, world.man1.actor, iid, altered)
    assert len(_stored(node, iid)) == 4
    assert [q[0] for q in _quarantined(node)] == ["event-log-broken", "event-log-broken"]


def test_a_removed_record_breaks_the_counting(node: Node, world: World, fleet: vf.Fleet) -> None:
    iid = fleet.ids[0]
    lines = _lines(_log(fleet, iid, 4))
    with pytest.raises(event_logs.EventLogBroken, match=r"seq 3: found seq 4.*check: counting"):
        event_logs.upload_event_log(node, world.man1.actor, iid, b"".join(lines[:2] + lines[3:]))


def test_records_of_another_key_are_refused(node: Node, world: World, fleet: vf.Fleet) -> None:
    a, b = fleet.ids
    # the other instrument's device key (registered, but not for this instrument)
    with pytest.raises(event_logs.EventLogBroken, match="check: key"):
        event_logs.upload_event_log(
            node, world.man1.actor, a, vf.log_bytes(vf.device_log(fleet.keys[b]))
        )
    with pytest.raises(event_logs.EventLogBroken, match="not a device key registered"):
        event_logs.upload_event_log(
            node, world.man1.actor, a, vf.log_bytes(vf.device_log(PrivateKey.generate()))
        )


def test_an_upload_may_not_leave_a_gap(node: Node, world: World, fleet: vf.Fleet) -> None:
    iid = fleet.ids[0]
    lines = _lines(_log(fleet, iid, 4))
    event_logs.upload_event_log(node, world.man1.actor, iid, lines[0])
    with pytest.raises(InvalidInput, match="gap: send the records from seq 2"):
        event_logs.upload_event_log(node, world.man1.actor, iid, lines[3])
    assert len(_stored(node, iid)) == 1 and _quarantined(node) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no event record"),
        (b"not json\n", "line 1: event record is not JSON"),
        (b'{"v":1}\n', "line 1: event record must have exactly the fields"),
    ],
)
def test_malformed_uploads_are_invalid_input(
    node: Node, world: World, fleet: vf.Fleet, body: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        event_logs.upload_event_log(node, world.man1.actor, fleet.ids[0], body)
    assert _quarantined(node) == []


def test_a_non_canonical_line_is_refused(node: Node, world: World, fleet: vf.Fleet) -> None:
    iid = fleet.ids[0]
    line = _lines(_log(fleet, iid, 2))[0]
    spaced = line.replace(b'"v":1', b'"v": 1')
    with pytest.raises(InvalidInput, match="canonical form"):
        event_logs.upload_event_log(node, world.man1.actor, iid, spaced)


def test_only_the_manufacturer_and_the_operator_upload(
    node: Node, world: World, fleet: vf.Fleet
) -> None:
    iid = fleet.ids[0]
    data = vf.log_bytes(vf.device_log(fleet.keys[iid]))
    for outsider in (world.man2, world.op2, world.auth1, world.nb1, world.admin):
        with pytest.raises(Forbidden):
            event_logs.upload_event_log(node, outsider.actor, iid, data)
        with pytest.raises(Forbidden):
            event_logs.check_may_upload(node, outsider.actor, iid)
    with pytest.raises(NotFound):
        event_logs.upload_event_log(
            node, world.man1.actor, "ins-DE-00000000000000000000000000", data
        )
    assert _stored(node, iid) == []


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_no_single_byte_change_of_a_record_is_stored(position: int, value: int) -> None:
    """Whatever byte of a signed line changes, the upload is refused or changes nothing."""
    key = PrivateKey.generate()
    log = EventLog.in_memory(key, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC) + timedelta())
    log.append(DeviceEventKind.PROVISIONED, {"software": "FW 1.1.0"})
    log.append(DeviceEventKind.PARAMETER_CHANGED, {"name": "tariff", "value": 2})
    data = bytearray(vf.log_bytes(log))
    index = position % len(data)
    if data[index] == value:
        return
    data[index] = value
    try:
        records = event_logs.parse_upload(bytes(data))
    except InvalidInput:
        return
    from metrocloud.device.eventlog import verify_chain

    assert not verify_chain(records, key.public_key).ok


def test_the_table_counts_one_row_per_record(node: Node, world: World, fleet: vf.Fleet) -> None:
    vf.upload_logs(fleet)
    with node.db.read() as conn:
        n = conn.execute(select(func.count()).select_from(device_event_logs)).scalar_one()
    assert n == 4
