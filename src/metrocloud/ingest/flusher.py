"""Moves accepted batches from the intake's durable log into the lake, exactly once.

One round (:meth:`LakeFlusher.flush_once`):

1. *plan*: if no segment is pending, the oldest intake rounds not yet in a segment (each
   what one intake transaction accepted, ``intake_rounds``), up to
   ``max_batches`` batches and ``max_readings`` readings (at least one round), are
   assigned a new segment id, rounds and their batches together, committed in
   transactions of at most :data:`_DB_CHUNK` batches (so that the intake's transactions do
   not wait long);
2. *write*: the pending segment's readings go to the lake with that id
   (:meth:`metrocloud.lake.Lake.write_segment` is idempotent per segment id);
3. *finish*: the segment's rounds are deleted, in one transaction; the batch rows stay (the
   intake's record of what it accepted, a few hundred bytes each), and the database reuses
   the freed pages.

A crash between any two steps (or two parts of one) leaves a pending segment that the next
round (in this process or after a restart) writes again under the same id: with the rounds
that carry its id, which are all of its rounds until step 3 deleted them at once (a crash
inside step 1 leaves a segment holding the rounds planned so far, written as it is), so no
reading is lost and none is written twice. Only the process holding the lake's writer lock
flushes, so this flusher knows which segments are pending: it asks the database (oldest
first) only when it starts and after a round that failed.

In the background (:meth:`LakeFlusher.start`) one thread prepares the next segment (plan,
read, decode) while a second writes the previous one into the lake and finishes it: the
lake's sorting and Parquet encoding run outside the interpreter lock, so the two overlap.
Two segments may then be pending at once; each is rewritten under its own id after a crash.

The readings come from the segment's rounds (:mod:`metrocloud.ingest.rounds`), each checked
against the digest recorded when it was stored, and holding as many batches as its record
says (:class:`IntakeLogCorrupt` otherwise). An ``arrow`` round (the intake's batches) holds
the readings the intake decoded when it checked them: its batches become lake rows by Arrow
compute alone. A ``wires`` round (imported OCMF records, lines a migration moved over)
holds one wire line per batch naming it, and each payload must still hash to its batch's
digest; the columns of such batches are built at once: the payloads are canonical JSON
(RFC 8785, checked at intake), so their fields are sliced from the text and the numbers of
all batches are parsed together by Arrow's CSV reader, in C++ and without the interpreter
lock; a payload laid out otherwise would be decoded as JSON instead. An imported OCMF
record (:mod:`metrocloud.ingest.ocmf`) is stored as its exact bytes and decoded on its own.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import logging
import queue
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import delete, select, update

from metrocloud.domain.errors import MetrocloudError
from metrocloud.formats._ocmf_rules import parse_time
from metrocloud.formats.ocmf import effective_readings, parse_ocmf
from metrocloud.ingest.intake import TURNS
from metrocloud.ingest.ocmf import OCMF_PREFIX, reading_status
from metrocloud.ingest.rounds import (
    ARROW,
    WIRES,
    read_arrow_round,
    round_digest,
    round_table,
    split_round,
)
from metrocloud.lake import Lake
from metrocloud.store.database import Database
from metrocloud.store.schema import intake_batches, intake_rounds
from metrocloud.store.turns import write_turn

__all__ = ["IntakeLogCorrupt", "LakeFlusher"]

log = logging.getLogger(__name__)
_UTC_MS = pa.timestamp("ms", tz="UTC")
#: the day of a UTC time is that of the same wall time without a zone: Arrow casts
#: zone-less timestamps to dates without a time zone lookup per value (ten times faster)
_NAIVE_MS = pa.timestamp("ms")
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"===", b"==", b"=")  # by length % 4 (unpadded base64url)
_PREFIX = len(b"MCB1.")
#: batches decoded together (bounds the decoder's temporary memory)
_DECODE_CHUNK = 2_000
#: batch rows of the intake log updated per write transaction (the intake's wait meanwhile)
_DB_CHUNK = 5_000
#: ids per IN (...) list
_IN_CHUNK = 500


class IntakeLogCorrupt(MetrocloudError):
    """A stored wire line no longer matches the digest recorded when it was accepted."""

    code = "intake-log-corrupt"


class _Prepared:
    """A segment read and decoded, waiting to be written into the lake."""

    __slots__ = ("segment", "table")

    def __init__(self, segment: str, table: pa.Table) -> None:
        self.segment = segment
        self.table = table


def _chunks(rounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(first, last) id of runs of ``rounds`` ((id, batches), ascending) holding at most
    :data:`_DB_CHUNK` batches each (a larger round alone)."""
    out: list[tuple[int, int]] = []
    first: int | None = None
    last = size = 0
    for round_id, batches in rounds:
        if first is not None and size + batches > _DB_CHUNK:
            out.append((first, last))
            first, size = None, 0
        if first is None:
            first = round_id
        last, size = round_id, size + batches
    if first is not None:
        out.append((first, last))
    return out


class LakeFlusher:
    """Flushes the intake log into ``lake`` (which must be opened as the writer)."""

    def __init__(
        self,
        db: Database,
        lake: Lake,
        *,
        max_batches: int = 50_000,
        max_readings: int = 200_000,
        interval_s: float = 0.5,
        on_committed: Callable[[str, pa.Table], object] | None = None,
    ) -> None:
        """``on_committed(segment, table)`` is called with each segment's id and readings
        once the lake committed it, before its intake rounds go: a crash after the lake commit
        calls it again with the same id (an observer must be idempotent per id). It runs on
        the flusher's critical path, in commit order: an observer that has real work to do
        records the id durably there and does the work elsewhere (the node's streaming
        monitor queues it and observes it in a thread of its own: docs/monitoring.md). It must
        not fail the flush: an exception is logged and counted (``hook_failures``), and
        the readings stay in the lake, written once."""
        self.db = db
        self.on_committed = on_committed
        self.hook_failures = 0
        self.lake = lake
        self.max_batches = max_batches
        self.max_readings = max_readings
        self.interval_s = interval_s
        self.readings_flushed = 0
        self.segments_flushed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: True while no segment is pending in the database but those this flusher planned
        #: and still holds (it is the only flusher: nobody else plans)
        self._settled = False

    # -- one round -----------------------------------------------------------------------

    def flush_once(self) -> int:
        """Write at most one segment; the number of readings it held (0: nothing pending)."""
        try:
            prepared = self._prepare()
            return 0 if prepared is None else self._commit(prepared)
        except BaseException:
            self._settled = False  # look for pending segments again next time
            raise

    def flush_all(self) -> int:
        """Flush until nothing is pending; the readings written."""
        total = 0
        while (n := self.flush_once()) > 0:
            total += n
        return total

    def _prepare(self) -> _Prepared | None:
        """Steps 1 and 2a: the oldest pending segment (once in doubt) or a newly planned one,
        and its readings; None if there is nothing to flush."""
        segment = None
        if not self._settled:
            segment = self._pending()
            if segment is None:
                self._settled = True
        if segment is None:
            segment = self._plan()
            if segment is None:
                return None
        b, r = intake_batches.c, intake_rounds.c
        rows: list[Any] = []
        with self.db.read() as conn:
            rounds = conn.execute(
                select(r.id, r.batches, r.format, r.data, r.digest)
                .where(r.segment == segment)
                .order_by(r.id)
            ).all()
            wired = [x.id for x in rounds if x.format == WIRES]
            for start in range(0, len(wired), _IN_CHUNK):  # only "wires" rounds need them
                rows += conn.execute(
                    select(
                        b.round_id,
                        b.category,
                        b.received_at,
                        b.key_id,
                        b.digest,
                        b.instrument_id,
                        b.counter,
                    )
                    .where(b.round_id.in_(wired[start : start + _IN_CHUNK]))
                    .order_by(b.id)
                ).all()
        with TURNS.flushing():  # the intake's checks in this process step aside
            parts = _parts(segment, rounds, rows)
        del rounds, rows
        return _Prepared(segment, _readings(parts))

    def _commit(self, prepared: _Prepared) -> int:
        """Steps 2b and 3: the segment into the lake, then its wire bytes dropped."""
        segment, table = prepared.segment, prepared.table
        if not table.num_rows:  # pragma: no cover - a planned segment holds batches
            return 0
        self.lake.write_segment(segment, table)
        if self.on_committed is not None:
            try:
                self.on_committed(segment, table)
            except Exception:  # the observer's loss, never the lake's: flush on
                self.hook_failures += 1
                log.exception("observer of lake segment %s failed; the segment is flushed", segment)
        with write_turn(self.db, priority=True), self.db.write() as conn, TURNS.writing():
            conn.execute(delete(intake_rounds).where(intake_rounds.c.segment == segment))
        self.readings_flushed += table.num_rows
        self.segments_flushed += 1
        return int(table.num_rows)

    def _pending(self) -> str | None:
        # the rounds not yet in the lake (few), oldest first
        r = intake_rounds.c
        with self.db.read() as conn:
            return conn.execute(
                select(r.segment).where(r.segment.is_not(None)).order_by(r.id).limit(1)
            ).scalar()

    def _plan(self) -> str | None:
        """Step 1: a new segment of the oldest unplanned rounds. The rounds and their batch
        rows get its id in transactions of at most :data:`_DB_CHUNK` batches, so that the
        intake's transactions are not kept waiting; a crash in between leaves a segment
        holding some of them, which is written as it is (its rows are those that carry its
        id when it is read)."""
        rounds: list[tuple[int, int]] = []
        batches = readings = 0
        r = intake_rounds.c
        with self.db.read() as conn:
            # row by row, up to the cut: a large backlog is not read beyond this segment
            result = conn.execute(
                select(r.id, r.batches, r.readings).where(r.segment.is_(None)).order_by(r.id)
            )
            for row in result:
                batches += row.batches
                readings += row.readings
                if rounds and (batches > self.max_batches or readings > self.max_readings):
                    break
                rounds.append((row.id, row.batches))
            result.close()
        if not rounds:
            return None
        segment = f"intake-r{rounds[0][0]}-{rounds[-1][0]}"
        for first, last in _chunks(rounds):
            with write_turn(self.db, priority=True), self.db.write() as conn, TURNS.writing():
                conn.execute(
                    update(intake_rounds)
                    .where(r.id.between(first, last), r.segment.is_(None))
                    .values(segment=segment)
                )
                conn.execute(
                    update(intake_batches)
                    .where(
                        intake_batches.c.round_id.between(first, last),
                        intake_batches.c.segment.is_(None),
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
                while not self._settled and not self._stop.is_set():
                    self.flush_once()  # pending segments first, one by one
                if self._pipeline() == 0:
                    self._stop.wait(self.interval_s)
            except Exception:  # keep flushing; the batches stay in the intake log meanwhile
                self._settled = False
                log.exception("lake flush failed; retrying")
                self._stop.wait(self.interval_s * 4)

    def _pipeline(self) -> int:
        """Flush until nothing is left, preparing the next segment (plan, read, decode)
        while a second thread writes the previous one into the lake: the two overlap, as
        the lake's sorting and Parquet encoding run outside the interpreter lock. Several
        planned segments may be pending at once; each is written under its own id, so a
        crash still redoes exactly them. Returns the readings written."""
        handoff: queue.Queue[_Prepared | None] = queue.Queue(maxsize=1)
        failure: list[BaseException] = []
        before = self.readings_flushed

        def write() -> None:
            while (item := handoff.get()) is not None:
                if failure:
                    continue  # drain: the segment stays pending, written after a restart
                try:
                    self._commit(item)
                except BaseException as exc:
                    failure.append(exc)

        writer = threading.Thread(target=write, name="lake-flusher-writer", daemon=True)
        writer.start()
        try:
            while not failure and not self._stop.is_set():
                prepared = self._prepare()
                if prepared is None:
                    break
                handoff.put(prepared)
        except BaseException:
            self._settled = False
            raise
        finally:
            handoff.put(None)
            writer.join()
        if failure:
            self._settled = False
            raise failure[0]
        return self.readings_flushed - before


# -- the readings of a segment ---------------------------------------------------------------


def _parts(segment: str, rounds: Sequence[Any], rows: Sequence[Any]) -> list[_Columns]:
    """The readings of a segment's ``rounds`` (in id order), each round's data checked
    against its digest: runs of ``arrow`` rounds as they are, ``wires`` rounds decoded with
    their batch records ``rows``."""
    parts: list[_Columns] = []
    tables: list[pa.Table] = []
    wired: list[Any] = []

    def arrow_run() -> None:
        if tables:
            parts.append(_arrow_columns(pa.concat_tables(tables)))
            tables.clear()

    def wires_run() -> None:
        if wired:
            mine = {x.id for x in wired}
            parts.extend(_wire_columns(segment, wired, [r for r in rows if r.round_id in mine]))
            wired.clear()

    for rd in rounds:
        data = bytes(rd.data)
        if round_digest(data) != rd.digest:
            raise IntakeLogCorrupt(
                f"intake round {rd.id} of {segment} does not hash to the digest recorded when "
                "it was stored; the intake log was altered after its batches were accepted"
            )
        if rd.format == ARROW:
            wires_run()
            try:
                table = read_arrow_round(data)
            except ValueError as exc:
                raise IntakeLogCorrupt(f"intake round {rd.id} of {segment}: {exc}") from None
            if table.num_rows != rd.batches:
                raise IntakeLogCorrupt(
                    f"intake round {rd.id} of {segment} holds {table.num_rows} batches, "
                    f"its record says {rd.batches}"
                )
            tables.append(table)
        elif rd.format == WIRES:
            arrow_run()
            wired.append(rd)
        else:
            raise IntakeLogCorrupt(f"intake round {rd.id} of {segment}: format {rd.format!r}")
    arrow_run()
    wires_run()
    return parts


def _arrow_columns(table: pa.Table) -> _Columns:
    """The lake's arrays of batches as ``arrow`` rounds hold them (:data:`ROUND_SCHEMA`
    rows; decoded wire lines are put in that shape too)."""
    table = table.combine_chunks()

    def col(name: str) -> Any:
        return table.column(name).chunk(0)

    t_lists = col("t")
    parents = pc.list_parent_indices(t_lists)
    t = pc.list_flatten(t_lists)
    n, batches = len(t), table.num_rows
    if n == batches:  # one reading a batch
        seq = pa.nulls(n, pa.int32()).fill_null(0)
    else:
        lengths = pc.list_value_length(t_lists).cast(pa.int32())
        starts = pc.subtract(pc.cumulative_sum(lengths), lengths)
        seq = pc.subtract(_arange(n), starts.take(parents))

    def per_batch(name: str) -> pa.Array:
        return col(name).take(parents)

    arrays = {
        "instrument": per_batch("instrument"),
        "category": per_batch("category"),
        "day": t.cast(_NAIVE_MS).cast(pa.date32()),
        "t": t.cast(_UTC_MS),
        "quantity": per_batch("quantity"),
        "value": pc.list_flatten(col("value")),
        "unit": per_batch("unit"),
        "status": pc.list_flatten(col("status")),
        "batch_counter": per_batch("batch_counter"),
        "seq": seq,
        "ingested_at": per_batch("ingested_at").cast(_UTC_MS),
    }
    pairs = (
        pa.table({"i": col("instrument"), "k": col("key_id")}).group_by(["i", "k"]).aggregate([])
    )
    keys_of: dict[str, set[str]] = {}
    for instrument, key in zip(pairs["i"].to_pylist(), pairs["k"].to_pylist(), strict=True):
        keys_of.setdefault(instrument, set()).add(key)
    return _Columns(arrays, keys_of)


def _wire_columns(segment: str, rounds: Sequence[Any], rows: Sequence[Any]) -> list[_Columns]:
    """The readings of ``wires`` rounds, each payload checked against its batch's digest."""
    decoded = _decode(rows, _wires_of(segment, rounds, rows))
    imported = [d for d in decoded if d[1].startswith(OCMF_PREFIX)]
    if imported:
        decoded = [d for d in decoded if not d[1].startswith(OCMF_PREFIX)]
    parts = [
        _columns(decoded[start : start + _DECODE_CHUNK])
        for start in range(0, len(decoded), _DECODE_CHUNK)
    ]
    if imported:
        parts.append(_ocmf_columns(imported))
    return parts


def _wires_of(segment: str, rounds: Sequence[Any], rows: Sequence[Any]) -> list[bytes]:
    """The wire line of each of ``rows`` (batches of ``wires`` rounds, in id order) from
    ``rounds``: each round holds one line per batch naming it, in id order."""
    lines: dict[int, list[bytes]] = {}
    for rd in rounds:
        round_id, batches = rd.id, rd.batches
        try:
            lines[round_id] = split_round(bytes(rd.data))
        except ValueError as exc:
            raise IntakeLogCorrupt(f"intake round {round_id} of {segment}: {exc}") from None
        if len(lines[round_id]) != batches:
            raise IntakeLogCorrupt(
                f"intake round {round_id} of {segment} holds {len(lines[round_id])} wire "
                f"lines for {batches} batches"
            )
    out: list[bytes] = []
    taken = dict.fromkeys(lines, 0)
    for row in rows:
        at = taken.get(row.round_id)
        if at is None or at >= len(lines[row.round_id]):
            raise IntakeLogCorrupt(
                f"batch {row.digest} of {segment} names intake round {row.round_id}, which "
                "holds no line for it"
            )
        out.append(lines[row.round_id][at])
        taken[row.round_id] = at + 1
    short = [k for k, n in taken.items() if n != len(lines[k])]
    if short:
        raise IntakeLogCorrupt(
            f"intake round(s) {short} of {segment} hold more lines than batches name them"
        )
    return out


def _payload(wire: bytes, digest: str) -> bytes:
    """The payload bytes of a stored wire line, checked against the digest taken at intake
    (an imported OCMF record is its own payload: its exact bytes were digested)."""
    line = bytes(wire).strip()
    if line.startswith(OCMF_PREFIX):
        if hashlib.sha256(line).hexdigest() != digest:
            raise IntakeLogCorrupt(
                f"the stored OCMF record with digest {digest} does not hash to it; the intake "
                "log was altered after the record was accepted"
            )
        return line
    end = line.find(b".", _PREFIX)
    text = line[_PREFIX:end] if line.startswith(b"MCB1.") and end > 0 else b""
    try:
        payload = binascii.a2b_base64(text.translate(_URL_TO_STD) + _PADDING[len(text) & 3])
    except binascii.Error:
        payload = b""
    if not text or hashlib.sha256(payload).hexdigest() != digest:
        raise IntakeLogCorrupt(
            f"the stored batch with digest {digest} does not hash to it; the intake log was "
            "altered after the batch was accepted"
        )
    return payload


_ARANGE: list[pa.Array] = [pa.array([], pa.int32())]


def _arange(n: int) -> pa.Array:
    """0, 1, ..., n-1 as int32 (grown once, then sliced)."""
    have = _ARANGE[0]
    if len(have) < n:
        have = _ARANGE[0] = pa.array(range(max(n, 2 * len(have))), pa.int32())
    return have.slice(0, n)


class _Columns:
    """The readings of some batches as Arrow arrays, and which keys signed each instrument."""

    __slots__ = ("arrays", "imported", "keys_of")

    def __init__(
        self, arrays: dict[str, pa.Array], keys_of: dict[str, set[str]], imported: bool = False
    ) -> None:
        self.arrays = arrays
        self.keys_of = keys_of
        #: imported OCMF records: a reading repeated by two records is kept once
        self.imported = imported


#: one batch of a segment: its row (category, received_at, key_id, ...), its payload and,
#: for a payload of the canonical layout, the fields the regular expression found
_Decoded = tuple[Any, bytes, tuple[bytes, ...] | None]


def _decode(rows: Sequence[Any], wires: Sequence[bytes]) -> list[_Decoded]:
    """The payloads of ``rows`` (their wire lines ``wires``, checked against their
    digests), split into fields."""
    pause = TURNS.pause_for_writers  # a write transaction of this process goes first
    decoded: list[_Decoded] = []
    append = decoded.append
    canonical = _CANONICAL.fullmatch
    for row, wire in zip(rows, wires, strict=True):
        pause()
        payload = _payload(wire, row.digest)
        m = canonical(payload)
        append((row, payload, None if m is None else m.groups()))
    return decoded


def _columns(decoded: Sequence[_Decoded]) -> _Columns:
    """Arrow arrays of the readings of ``decoded`` batches, column by column over all."""
    rows = [row for row, _, _ in decoded]
    groups = [g for _, _, g in decoded]
    fields = None if None in groups else _canonical_fields(groups)  # type: ignore[arg-type]
    if fields is None:  # pragma: no cover - every stored payload has the canonical layout
        fields = _json_fields([payload for _, payload, _ in decoded])
    instruments, counters, quantities, units, lengths, t, value, status = fields
    offsets = pa.array([0, *accumulate(lengths)], pa.int32())
    received: dict[str, int] = {}
    ingested: list[int] = []
    for row in rows:
        at = received.get(row.received_at)
        if at is None:
            at = received[row.received_at] = _ms(row.received_at)
        ingested.append(at)
    # the batches as an arrow round holds them: one way from there to the lake's rows
    return _arrow_columns(
        round_table(
            instruments,
            [row.category for row in rows],
            [row.key_id for row in rows],
            counters,
            quantities,
            units,
            ingested,
            offsets,
            t,
            value,
            status,
        )
    )


def _ocmf_columns(decoded: Sequence[_Decoded]) -> _Columns:
    """Arrow arrays of the readings of imported OCMF records (a record per charging session
    or fiscal page: few, so decoded one by one). Each reading's time, register (the OBIS code
    ``RI``), value, unit and meter status (:func:`metrocloud.ingest.ocmf.reading_status`)."""
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "instrument",
            "category",
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
    keys_of: dict[str, set[str]] = {}
    for row, payload, _ in decoded:
        doc = parse_ocmf(payload)
        keys_of.setdefault(row.instrument_id, set()).add(row.key_id)
        received = _ms(row.received_at)
        for seq, r in enumerate(effective_readings(doc)):
            at = parse_time(r.time)
            if at is None or r.value is None:  # pragma: no cover - checked at intake
                raise IntakeLogCorrupt(f"OCMF record {row.digest}: reading {seq} has no time")
            cols["instrument"].append(row.instrument_id)
            cols["category"].append(row.category)
            cols["t"].append(int(at.timestamp() * 1000))
            cols["quantity"].append(r.obis or "")
            cols["value"].append(float(r.value))
            cols["unit"].append(r.unit)
            cols["status"].append(reading_status(r.status))
            cols["batch_counter"].append(row.counter)
            cols["seq"].append(seq)
            cols["ingested_at"].append(received)
    ts = pa.array(cols["t"], pa.int64()).cast(_UTC_MS)
    arrays = {
        "instrument": pa.array(cols["instrument"], pa.string()),
        "category": pa.array(cols["category"], pa.string()),
        "day": ts.cast(pa.date32()),
        "t": ts,
        "quantity": pa.array(cols["quantity"], pa.string()),
        "value": pa.array(cols["value"], pa.float64()),
        "unit": pa.array(cols["unit"], pa.string()),
        "status": pa.array(cols["status"], pa.int32()),
        "batch_counter": pa.array(cols["batch_counter"], pa.int64()),
        "seq": pa.array(cols["seq"], pa.int32()),
        "ingested_at": pa.array(cols["ingested_at"], pa.int64()).cast(_UTC_MS),
    }
    return _Columns(arrays, keys_of, imported=True)


#: Per payload: instruments, counters, quantities, units, readings; then all t, value, status
_Fields = tuple[list[str], list[int], list[str], list[str], list[int], pa.Array, pa.Array, pa.Array]

#: The layout of a canonical payload (RFC 8785: sorted keys, no whitespace; the intake
#: checked it and the digest proves these are the bytes it checked). Its strings hold no
#: quote, backslash or control character (docs/device.md), its arrays numbers only.
_CANONICAL = re.compile(
    rb'\{"counter":(\d+),"instrument":"([^"]*)","key":"[0-9a-f]{64}","prev":"[0-9a-f]{64}",'
    rb'"quantity":"([^"]*)","software":"[0-9a-f]{64}","status":\[([^\]]*)\],"t":\[([^\]]*)\],'
    rb'"unit":"([^"]*)","v":1,"value":\[([^\]]*)\]\}'
)
_CSV_READ = pacsv.ReadOptions(column_names=["x"], block_size=1 << 26)
_CSV_PARSE = pacsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False)


def _numbers(texts: list[bytes], kind: pa.DataType) -> pa.Array:
    """The comma-separated JSON numbers of ``texts``, in order, parsed in Arrow's C++ CSV
    reader (its threads, without the interpreter lock)."""
    data = b"\n".join(texts).replace(b",", b"\n")
    convert = pacsv.ConvertOptions(
        column_types={"x": kind}, check_utf8=False, null_values=[], strings_can_be_null=False
    )
    column = pacsv.read_csv(
        io.BytesIO(data), read_options=_CSV_READ, parse_options=_CSV_PARSE, convert_options=convert
    ).column(0)
    return column.combine_chunks()


def _canonical_fields(groups: list[tuple[bytes, ...]]) -> _Fields | None:
    """The fields of canonical payloads, from the text the regular expression found; None
    if their columns disagree (then :func:`_json_fields` decodes them)."""
    lengths = [g[4].count(b",") + 1 for g in groups]
    for g, n in zip(groups, lengths, strict=True):
        if g[3].count(b",") + 1 != n or g[6].count(b",") + 1 != n:
            return None
    t = _numbers([g[4] for g in groups], pa.int64())
    value = _numbers([g[6] for g in groups], pa.float64())
    status = _numbers([g[3] for g in groups], pa.int32())
    if not len(t) == len(value) == len(status) == sum(lengths):
        return None
    return (
        [g[1].decode() for g in groups],
        [int(g[0]) for g in groups],
        [g[2].decode() for g in groups],
        [g[5].decode() for g in groups],
        lengths,
        t,
        value,
        status,
    )


def _json_fields(payloads: list[bytes]) -> _Fields:
    docs = [orjson.loads(p) for p in payloads]
    return (
        [d["instrument"] for d in docs],
        [d["counter"] for d in docs],
        [d["quantity"] for d in docs],
        [d["unit"] for d in docs],
        [len(d["t"]) for d in docs],
        pa.array([d["t"] for d in docs], pa.list_(pa.int64())).flatten(),
        pa.array([d["value"] for d in docs], pa.list_(pa.float64())).flatten(),
        pa.array([d["status"] for d in docs], pa.list_(pa.int32())).flatten(),
    )


def _readings(parts: Sequence[_Columns]) -> pa.Table:
    """The lake rows of a segment, from its decoded parts (in batch order)."""
    batches = [pa.RecordBatch.from_pydict(part.arrays) for part in parts if len(part.arrays["t"])]
    if not batches:  # pragma: no cover - a planned segment holds batches
        return pa.table({})
    table = pa.Table.from_batches(batches)
    keys_of: dict[str, set[str]] = {}
    for part in parts:
        for instrument, keys in part.keys_of.items():
            keys_of.setdefault(instrument, set()).update(keys)
    if any(len(k) > 1 for k in keys_of.values()) or any(p.imported for p in parts):
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
