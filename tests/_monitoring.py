"""Giving an instrument monitoring results: an alert (a broken seal, from the registry) and a
maintenance estimate (a drifting register against a reference meter, in the node's lake);
or a streaming alert (a counter reset, in a segment the streaming monitor observed).

Shared by the monitoring API tests and the authorization matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metrocloud.domain.instruments import EventKind
from metrocloud.lake import Lake
from metrocloud.lake.engine import REFERENCE_SUFFIX
from metrocloud.services import events as ev
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from tests.lake._support import Row, table

QUANTITY = "1-0:1.8.0"
#: the first day of the readings (well inside the intake's age limit, not that it applies)
DAY0 = (datetime.now(UTC) - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)


def drifting_rows(
    instrument: str, category: str = "MI-003", days: int = 9, percent_per_day: float = 0.25
) -> list[Row]:
    """Quarter-hourly register readings (the nominal interval of an electricity meter, so no
    gap; 0.25 kWh each) and a daily reference reading 1 ms after the day's last one; the
    register's error grows by ``percent_per_day``."""
    rows: list[Row] = []
    register = reference = 100.0
    for k in range(days * 96):
        t = DAY0 + timedelta(minutes=15 * k)
        error = percent_per_day * k / 96 / 100
        register += 0.25
        reference += 0.25 / (1 + error)
        rows.append((instrument, category, t, QUANTITY, register))
        if k % 96 == 95:
            rows.append(
                (instrument, category, t + timedelta(milliseconds=1), QUANTITY + REFERENCE_SUFFIX,
                 reference)
            )  # fmt: skip
    return rows


def give_results(node: Node, authority: Actor, instrument_id: str, category: str) -> None:
    """A ``seal_broken`` alert (recorded by ``authority``) and a drift estimate for the
    instrument (it must be in service)."""
    ev.record_events(
        node, authority, [ev.EventDraft(instrument_id=instrument_id, kind=EventKind.SEAL_BROKEN)]
    )
    with Lake.open(node.settings.lake_path(), create=True) as lake:
        lake.write_segment(f"drift-{instrument_id}", table(drifting_rows(instrument_id, category)))


def give_stream_alert(node: Node, instrument_id: str) -> None:
    """A ``counter_reset`` streaming alert for the instrument (services/streaming.py)."""
    from metrocloud.services.streaming import StreamMonitor

    rows = [(instrument_id, "MI-003", DAY0 + timedelta(minutes=15 * k), QUANTITY, v)
            for k, v in enumerate((50.0, 60.0, 1.0))]  # fmt: skip
    StreamMonitor(node.db).observe(f"stream-{instrument_id}", table(rows))
