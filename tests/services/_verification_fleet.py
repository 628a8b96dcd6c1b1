"""Helpers for the remote-verification tests: instruments in service with device keys whose
private halves the test holds, their device event logs, and reference readings in the lake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from metrocloud.device.eventlog import DeviceEventKind, EventLog
from metrocloud.domain.instruments import EventKind
from metrocloud.lake import Lake
from metrocloud.services import event_logs
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services.node import Node
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World

REGISTER = "1-0:1.8.0"
REFERENCE = REGISTER + "*ref"


@dataclass
class Fleet:
    world: World
    cert: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    logs: dict[str, EventLog] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        return self.world.node


def _clock(start: datetime) -> Any:
    ticks = iter(range(1_000_000))
    return lambda: start + timedelta(minutes=next(ticks))


def register(
    world: World,
    cert: dict[str, Any],
    n: int,
    *,
    prefix: str = "VF",
    fleet: Fleet | None = None,
) -> Fleet:
    """``n`` instruments of ``cert`` (held by man1), placed on the market and put into
    service by op1 a month ago, each with a fresh Ed25519 device key."""
    fleet = fleet or Fleet(world, cert)
    keys = [PrivateKey.generate() for _ in range(n)]
    node = world.node
    ids: list[str] = []
    for lo in range(0, n, node.settings.max_batch):
        drafts = [
            inst.InstrumentDraft(
                serial=f"{prefix}{i:06d}",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(keys[i].public_key.to_spki_b64(),),
            )
            for i in range(lo, min(n, lo + node.settings.max_batch))
        ]
        refs, _ = inst.register_instruments(node, world.man1.actor, drafts)
        ids += [r["id"] for r in refs]
    now = node.now()
    for actor, kind, when in (
        (world.man1.actor, EventKind.PLACED_ON_MARKET, now - timedelta(days=31)),
        (world.op1.actor, EventKind.PUT_INTO_SERVICE, now - timedelta(days=30)),
    ):
        ev.record_events(
            node,
            actor,
            [ev.EventDraft(instrument_id=i, kind=kind, occurred_at=when) for i in ids],
        )
    fleet.ids += ids
    fleet.keys.update(zip(ids, keys, strict=True))
    return fleet


def device_log(key: PrivateKey, start: datetime | None = None) -> EventLog:
    """A device log as the reference device keeps it: provisioned, a parameter change."""
    log = EventLog.in_memory(key, clock=_clock(start or datetime.now(UTC) - timedelta(days=40)))
    log.append(DeviceEventKind.PROVISIONED, {"software": "FW 1.1.0"})
    log.append(DeviceEventKind.PARAMETER_CHANGED, {"name": "tariff", "value": 2})
    return log


def log_bytes(log: EventLog, first: int = 1, last: int | None = None) -> bytes:
    return b"".join(r.to_line() for r in log.records[first - 1 : last])


def upload_logs(fleet: Fleet, ids: Sequence[str] | None = None) -> None:
    """Each instrument's device log, uploaded by its manufacturer."""
    for iid in ids if ids is not None else fleet.ids:
        log = fleet.logs.setdefault(iid, device_log(fleet.keys[iid]))
        event_logs.upload_event_log(fleet.node, fleet.world.man1.actor, iid, log_bytes(log))


def reference_readings(
    node: Node, errors: dict[str, float], *, days: int = 10, category: str = "MI-003"
) -> None:
    """Daily register and reference readings over the last ``days`` days: the register
    reads ``(1 + error)`` times what the reference meter reads."""
    now = node.now()
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "instrument",
            "category",
            "day",
            "t",
            "quantity",
            "value",
            "unit",
            "status",
            "batch_counter",
            "seq",
            "ingested_at",
        )
    }
    for iid, error in errors.items():
        for d in range(days):
            t = (now - timedelta(days=days - d)).replace(hour=12, minute=0, second=0, microsecond=0)
            reference = 1000.0 + 50.0 * d
            for quantity, value, at in (
                (REGISTER, reference * (1 + error), t),
                (REFERENCE, reference, t + timedelta(milliseconds=1)),
            ):
                rows["instrument"].append(iid)
                rows["category"].append(category)
                rows["day"].append(at.date())
                rows["t"].append(at)
                rows["quantity"].append(quantity)
                rows["value"].append(value)
                rows["unit"].append("kWh")
                rows["status"].append(0)
                rows["batch_counter"].append(d + 1)
                rows["seq"].append(0)
                rows["ingested_at"].append(now)
    ts = pa.timestamp("ms", tz="UTC")
    table = pa.table(
        {
            "instrument": pa.array(rows["instrument"], pa.string()),
            "category": pa.array(rows["category"], pa.string()),
            "day": pa.array(rows["day"], pa.date32()),
            "t": pa.array(rows["t"], ts),
            "quantity": pa.array(rows["quantity"], pa.string()),
            "value": pa.array(rows["value"], pa.float64()),
            "unit": pa.array(rows["unit"], pa.string()),
            "status": pa.array(rows["status"], pa.int32()),
            "batch_counter": pa.array(rows["batch_counter"], pa.int64()),
            "seq": pa.array(rows["seq"], pa.int32()),
            "ingested_at": pa.array(rows["ingested_at"], ts),
        }
    )
    with Lake.open(node.settings.lake_path(), create=True) as lake:
        lake.write_segment(f"verification-test-{len(errors)}-{now.timestamp()}", table)
