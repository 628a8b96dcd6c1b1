"""Moves accepted batches from the intake's durable log into the lake, exactly once.

One round (:meth:`LakeFlusher.flush_once`):

1. *plan*: if no segment is pending, up to ``max_batches`` accepted batches still holding
   their wire bytes are assigned a new segment id, in one committed transaction;
2. *write*: the pending segment's readings go to the lake with that id
   (:meth:`metrocloud.lake.Lake.write_segment` is idempotent per segment id);
3. *finish*: the segment's wire bytes are dropped, in one committed transaction.

A crash between any two steps leaves a pending segment that the next round (in this process
or after a restart) writes again under the same id with the same rows, so no reading is lost
and none is written twice. Only the process holding the lake's writer lock flushes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import select, update

from metrocloud.formats.batches import parse_payload, split_wire
from metrocloud.lake import Lake
from metrocloud.store.database import Database
from metrocloud.store.schema import intake_batches

__all__ = ["LakeFlusher"]

log = logging.getLogger(__name__)
_UTC_MS = pa.timestamp("ms", tz="UTC")


class LakeFlusher:
    """Flushes the intake log into ``lake`` (which must be opened as the writer)."""

    def __init__(
        self, db: Database, lake: Lake, *, max_batches: int = 5_000, interval_s: float = 0.5
    ) -> None:
        self.db = db
        self.lake = lake
        self.max_batches = max_batches
        self.interval_s = interval_s
        self.readings_flushed = 0
        self.segments_flushed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one round -----------------------------------------------------------------------

    def flush_once(self) -> int:
        """Write at most one segment; the number of readings it held (0: nothing pending)."""
        segment = self._pending() or self._plan()
        if segment is None:
            return 0
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    intake_batches.c.id,
                    intake_batches.c.category,
                    intake_batches.c.received_at,
                    intake_batches.c.key_id,
                    intake_batches.c.wire,
                )
                .where(intake_batches.c.segment == segment, intake_batches.c.wire.is_not(None))
                .order_by(intake_batches.c.id)
            ).all()
        if not rows:
            return 0
        table = _readings(rows)
        self.lake.write_segment(segment, table)
        with self.db.write() as conn:
            conn.execute(
                update(intake_batches).where(intake_batches.c.segment == segment).values(wire=None)
            )
        self.readings_flushed += table.num_rows
        self.segments_flushed += 1
        return int(table.num_rows)

    def flush_all(self) -> int:
        """Flush until nothing is pending; the readings written."""
        total = 0
        while (n := self.flush_once()) > 0:
            total += n
        return total

    def _pending(self) -> str | None:
        with self.db.read() as conn:
            return conn.execute(
                select(intake_batches.c.segment)
                .where(intake_batches.c.segment.is_not(None), intake_batches.c.wire.is_not(None))
                .order_by(intake_batches.c.id)
                .limit(1)
            ).scalar()

    def _plan(self) -> str | None:
        with self.db.write() as conn:
            ids = (
                conn.execute(
                    select(intake_batches.c.id)
                    .where(intake_batches.c.segment.is_(None), intake_batches.c.wire.is_not(None))
                    .order_by(intake_batches.c.id)
                    .limit(self.max_batches)
                )
                .scalars()
                .all()
            )
            if not ids:
                return None
            segment = f"intake-{ids[0]}-{ids[-1]}"
            conn.execute(
                update(intake_batches)
                .where(
                    intake_batches.c.id.between(ids[0], ids[-1]),
                    intake_batches.c.segment.is_(None),
                    intake_batches.c.wire.is_not(None),
                )
                .values(segment=segment)
            )
        return segment

    # -- in the background ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lake-flusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current round, flush what is pending, and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.flush_once() == 0:
                    self._stop.wait(self.interval_s)
            except Exception:  # keep flushing; the batches stay in the intake log meanwhile
                log.exception("lake flush failed; retrying")
                self._stop.wait(self.interval_s * 4)


def _readings(rows: Sequence[Any]) -> pa.Table:
    """The lake rows of the batches ``rows`` (already verified at intake)."""
    instrument: list[str] = []
    category: list[str] = []
    t: list[int] = []
    quantity: list[str] = []
    value: list[float] = []
    unit: list[str] = []
    status: list[int] = []
    counter: list[int] = []
    seq: list[int] = []
    ingested: list[int] = []
    keys_of: dict[str, set[str]] = {}
    for row in rows:
        p = parse_payload(split_wire(row.wire)[0])
        n = len(p.t)
        keys_of.setdefault(p.instrument, set()).add(row.key_id)
        at = _ms(row.received_at)
        instrument += [p.instrument] * n
        category += [row.category] * n
        t += p.t
        quantity += [p.quantity] * n
        value += p.value
        unit += [p.unit] * n
        status += p.status
        counter += [p.counter] * n
        seq += range(n)
        ingested += [at] * n
    ts = pa.array(t, pa.int64()).cast(_UTC_MS)
    table = pa.table(
        {
            "instrument": pa.array(instrument, pa.string()).dictionary_encode(),
            "category": pa.array(category, pa.string()),
            "day": ts.cast(pa.date32()),
            "t": ts,
            "quantity": pa.array(quantity, pa.string()),
            "value": pa.array(value, pa.float64()),
            "unit": pa.array(unit, pa.string()),
            "status": pa.array(status, pa.int32()),
            "batch_counter": pa.array(counter, pa.int64()),
            "seq": pa.array(seq, pa.int32()),
            "ingested_at": pa.array(ingested, pa.int64()).cast(_UTC_MS),
        }
    )
    if any(len(k) > 1 for k in keys_of.values()):
        table = _first_of_each_key(table)
    return table


def _first_of_each_key(table: pa.Table) -> pa.Table:
    """Keep the first reading per (instrument, quantity, t): two keys of one instrument
    may report the same instant (the lake's identity of a reading)."""
    seen: set[tuple[str, str, int]] = set()
    keep = []
    cols = zip(
        table["instrument"].to_pylist(),
        table["quantity"].to_pylist(),
        table["t"].cast(pa.int64()).to_pylist(),
        strict=True,
    )
    for i, k in enumerate(cols):
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def _ms(iso: str) -> int:
    return int(
        datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp() * 1000
    )
