"""Streaming monitoring rebuilt from the lake's history: ``metrocloud monitor replay``.

For a node that turned streaming on after its lake had readings, after a threshold change,
or after a segment was poisoned: the state (``stream_state``) and the alerts
(``stream_alerts``) are computed again from every reading the lake holds in [start, end),
with the live monitor's own functions (:func:`~._streaming_compute.registers`,
:func:`~._streaming_compute.step`, :func:`~._streaming_compute.flag_findings`,
:func:`~._streaming_store.merge_alert`), and replace what the tables held.

How, and why it equals batch mode:

1. the lake's *writer lock* is held from the first read to the last write. The live
   monitor only ever runs in the lake's writer (the node's lake service, ``ingest flush``,
   the simulator), so it cannot run meanwhile and no segment is committed behind the
   replay's back; while a node runs, the replay is refused (:class:`Conflict`). A node
   started during a replay waits for the lock (its lake service retries every 2 s) and takes
   the queue afterwards;
2. the partitions are fed day by day (a partition holds the readings of one category and
   one UTC day of ``t``), each continuing from the registers' state the day before left. As
   every reading of a day precedes every reading of the next, each reading meets the
   reading before it in time, which is batch mode's pairing (the lag over ``t`` per
   register, :meth:`~metrocloud.lake.engine.LakeEngine.counter_anomalies`): nothing is
   *late*, whatever order the segments were committed in;
3. the state and alerts are computed in memory (a register costs about 200 bytes; one
   partition's readings are held at a time) and written in *one* transaction, in the
   write turn the intake and the live monitor take: a crash or an error leaves the old
   tables untouched, and the database is held for the write only, not for the scan;
4. in that transaction every segment of the lake's manifest counts as taken in
   (``stream_segments``, so a flusher's redo or a re-queued segment changes nothing) and
   their ``stream_queue`` rows, pending or poisoned, go: their readings are in the replay.
   A queued segment the lake no longer holds stays queued.

Running it twice gives the same alerts (their ``segment`` names the partition that raised
them: ``replay:v<manifest version>/<category>/<day>``). With ``end`` the state stops there:
the live monitor continues from it, so readings committed after ``end`` are not in the
state and its next segment may find a gap per register; to resume live monitoring, replay
without ``end``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, delete, select

from metrocloud.domain.errors import Conflict
from metrocloud.ingest.intake import TURNS
from metrocloud.lake import Lake
from metrocloud.lake.engine import Bound, time_bounds
from metrocloud.lake.manifest import FileEntry, Manifest
from metrocloud.services._streaming_compute import (
    NO_READING,
    Floats,
    Int64s,
    flag_findings,
    registers,
    step,
)
from metrocloud.services._streaming_lake import read_lake_file
from metrocloud.services._streaming_queue import drop_queued_many
from metrocloud.services._streaming_store import (
    AlertRow,
    iso_ms,
    merge_alert,
    save_alerts,
    save_state,
)
from metrocloud.services.monitoring import DEFAULT_THRESHOLDS, Thresholds
from metrocloud.services.node import Node
from metrocloud.store.schema import stream_alerts, stream_queue, stream_segments, stream_state
from metrocloud.store.turns import write_turn

__all__ = ["Replayed", "replay_stream"]

_UTC_MS = pa.timestamp("ms", tz="UTC")
#: rows per write statement
_CHUNK = 10_000

#: progress: (readings read so far, readings in the window's partitions)
Progress = Callable[[int, int], object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Replayed:
    """What a replay did."""

    #: the manifest version read
    version: int
    start: datetime | None
    end: datetime | None
    partitions: int
    #: readings in [start, end) fed through the monitor, and those late (duplicates only)
    readings: int
    late: int
    registers: int
    alerts: int
    #: segments of the manifest now counted as taken in (not before), queue rows dropped
    segments_marked: int
    dropped_pending: int
    dropped_poisoned: int


class _State:
    """The registers' state in memory: (instrument, quantity) -> (last t ms, last value)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], tuple[int, float]] = {}

    def load(self, keys: Sequence[tuple[str, str]]) -> tuple[Int64s, Floats]:
        t = np.full(len(keys), NO_READING, dtype=np.int64)
        v = np.full(len(keys), np.nan, dtype=np.float64)
        for i, k in enumerate(keys):
            got = self.last.get(k)
            if got is not None:
                t[i], v[i] = got
        return t, v

    def save(self, keys: Sequence[tuple[str, str]], idx: Int64s, t: Int64s, v: Floats) -> None:
        for i, ti, vi in zip(idx.tolist(), t.tolist(), v.tolist(), strict=True):
            self.last[keys[i]] = (ti, vi)


def _day_range(lo: datetime | None, hi: datetime | None) -> tuple[date | None, date | None]:
    """The partition days [first, last] the window [lo, hi) reaches."""
    first = None if lo is None else lo.astimezone(UTC).date()
    last = None if hi is None else (hi - timedelta(milliseconds=1)).astimezone(UTC).date()
    return first, last


def _partitions(
    manifest: Manifest, lo: datetime | None, hi: datetime | None
) -> list[tuple[tuple[str, str], list[FileEntry]]]:
    """The live files of the window's partitions, by (day, category), days ascending."""
    first, last = _day_range(lo, hi)
    files = [
        f
        for f in manifest.files()
        if (first is None or f.day >= first.isoformat())
        and (last is None or f.day <= last.isoformat())
    ]
    files.sort(key=lambda f: (f.day, f.category, f.path))
    return [(k, list(g)) for k, g in groupby(files, key=lambda f: (f.day, f.category))]


def _window(table: pa.Table, lo: datetime | None, hi: datetime | None) -> pa.Table:
    if lo is None and hi is None:
        return table
    t = table.column("t").cast(_UTC_MS)
    keep = pa.array(np.ones(table.num_rows, dtype=bool))
    if lo is not None:
        keep = pc.and_(keep, pc.greater_equal(t, pa.scalar(lo, _UTC_MS)))
    if hi is not None:
        keep = pc.and_(keep, pc.less(t, pa.scalar(hi, _UTC_MS)))
    return table.filter(keep)


def _open_writer(root: Path) -> Lake:
    try:
        return Lake.open(root, writer=True)
    except Conflict as exc:
        raise Conflict(
            f"cannot replay while another process writes the lake at {root} (a running node, "
            "an ingest flush or a simulation): the live streaming monitor runs there; stop the "
            "node and replay again",
            rule="streaming replay takes the lake's writer lock (docs/monitoring.md#replay)",
        ) from exc


def replay_stream(
    node: Node,
    *,
    start: Bound = None,
    end: Bound = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    lake_path: Path | None = None,
    clock: Callable[[], datetime] | None = None,
    progress: Progress | None = None,
) -> Replayed:
    """Rebuild ``stream_state`` and ``stream_alerts`` from the readings in [start, end) of
    the node's lake (``lake_path``: another one) (module docstring); refused with
    :class:`Conflict` while another process is the lake's writer."""
    lo, hi = time_bounds(start, end)
    lake = _open_writer(lake_path or node.settings.lake_path())
    try:
        manifest = lake.manifest
        parts = _partitions(manifest, lo, hi)
        total = sum(f.rows for _, files in parts for f in files)
        now = iso_ms(round((clock or node.now)().timestamp() * 1000))
        state = _State()
        alerts: dict[tuple[str, str], AlertRow] = {}
        done = readings = late = 0
        if progress is not None:
            progress(0, total)
        for (day, category), files in parts:
            table = _window(pa.concat_tables([read_lake_file(lake.root, f) for f in files]), lo, hi)
            label = f"replay:v{manifest.version}/{category}/{day}"
            regs = registers(table)
            keys = regs.keys
            result = step(regs, *state.load(keys), thresholds)
            for f in result.findings + flag_findings(table):
                key = (f.instrument, f.kind)
                alerts[key] = merge_alert(alerts.get(key), f, label, now)
            state.save(keys, result.updated, result.last_t, result.last_value)
            readings += table.num_rows
            late += result.late
            done += sum(f.rows for f in files)
            if progress is not None:
                progress(done, total)
        with write_turn(node.db), node.db.write() as conn, TURNS.writing():
            marked = _replace(conn, state, alerts, manifest, now)
            pending, poisoned = drop_queued_many(conn, manifest.segments)
    finally:
        lake.close()
    return Replayed(
        version=manifest.version,
        start=lo,
        end=hi,
        partitions=len(parts),
        readings=readings,
        late=late,
        registers=len(state.last),
        alerts=len(alerts),
        segments_marked=marked,
        dropped_pending=pending,
        dropped_poisoned=poisoned,
    )


def _replace(
    conn: Connection,
    state: _State,
    alerts: dict[tuple[str, str], AlertRow],
    manifest: Manifest,
    now: str,
) -> int:
    """Swap the tables' contents; count the manifest's segments as taken in. The number of
    segments newly counted."""
    conn.execute(delete(stream_state))
    conn.execute(delete(stream_alerts))
    keys = sorted(state.last)
    for lo in range(0, len(keys), _CHUNK):
        part = keys[lo : lo + _CHUNK]
        t = np.array([state.last[k][0] for k in part], dtype=np.int64)
        v = np.array([state.last[k][1] for k in part], dtype=np.float64)
        save_state(conn, part, t, v)
    rows = [alerts[k] for k in sorted(alerts)]
    for lo in range(0, len(rows), _CHUNK):
        save_alerts(conn, rows[lo : lo + _CHUNK])
    seen = set(conn.execute(select(stream_segments.c.segment)).scalars())
    queued = dict(conn.execute(select(stream_queue.c.segment, stream_queue.c.readings)).all())
    own: dict[str, int] = {}
    for f in manifest.files():
        if f.segment is not None:
            own[f.segment] = own.get(f.segment, 0) + f.rows
    new = [
        {
            "segment": s,
            # the queue's count, else the rows of its files still live (0 once compacted)
            "readings": queued.get(s, own.get(s, 0)),
            "late": 0,
            "alerts": 0,
            "observed_at": now,
        }
        for s in sorted(set(manifest.segments) - seen)
    ]
    for lo in range(0, len(new), _CHUNK):
        conn.execute(stream_segments.insert(), new[lo : lo + _CHUNK])
    return len(new)
