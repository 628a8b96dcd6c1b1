"""The one pass behind :meth:`DuckDBEngine.monitoring_inputs
<metrocloud.lake.duckdb_engine.DuckDBEngine.monitoring_inputs>`, in Arrow and numpy.

:func:`monitoring_inputs_in_one_pass` answers the five tables of
:class:`~metrocloud.lake.engine.MonitoringInputs` in one pass over the partitions (see
"monitoring inputs in one pass" below), records the plan it used in the engine's
``last_monitoring_plan`` ("pass"), and falls back to the five queries
(:func:`~metrocloud.lake.engine.monitoring_inputs_by_queries`, plan "queries") where the
pass's assumption does not hold; tested equal to the SQL. :func:`days_of` (the partition
days of a window) is shared with the engine's queries in duckdb_engine.py.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.engine import (
    COUNTER_ANOMALIES_SCHEMA,
    DAILY_CONSUMPTION_SCHEMA,
    FLAT_RUNS_SCHEMA,
    GRID_OFFSETS_SCHEMA,
    REFERENCE_PAIRS_SCHEMA,
    REFERENCE_SUFFIX,
    Bound,
    MonitoringInputs,
    monitoring_inputs_by_queries,
    monitoring_tables,
    time_bounds,
    whole_days,
)

if TYPE_CHECKING:
    from metrocloud.lake.duckdb_engine import DuckDBEngine

__all__ = ["days_of", "monitoring_inputs_in_one_pass"]


def days_of(lo: datetime | None, hi: datetime | None) -> tuple[date | None, date | None]:
    """The partition days a half-open UTC time window touches."""
    first = None if lo is None else lo.date()
    last = None if hi is None else (hi - timedelta(microseconds=1)).date()
    return first, last


def monitoring_inputs_in_one_pass(
    engine: DuckDBEngine,
    start: Bound = None,
    end: Bound = None,
    category: str | None = None,
    *,
    threads: int,
    max_gap: timedelta,
    grid: timedelta,
    min_duration: timedelta,
    tables: Collection[str] | None = None,
) -> MonitoringInputs:
    """The five tables in one pass over the partitions of ``engine``'s snapshot (see
    "monitoring inputs in one pass" below), ``threads`` partitions at a time; sets
    ``engine.last_monitoring_plan``."""
    if not isinstance(max_gap, timedelta) or max_gap < timedelta(0):
        raise InvalidInput(f"max_gap must be a non-negative timedelta, got {max_gap!r}")
    if not isinstance(grid, timedelta) or grid < timedelta(milliseconds=1):
        raise InvalidInput(f"grid must be a timedelta of at least 1 ms, got {grid!r}")
    if not isinstance(min_duration, timedelta) or min_duration < timedelta(0):
        raise InvalidInput(f"min_duration must be a non-negative timedelta, got {min_duration!r}")
    monitoring_tables(tables)  # an unknown name is refused here too
    lo, hi = time_bounds(start, end)
    first, last = whole_days(lo, hi)
    ms = timedelta(milliseconds=1)
    params = _Params(
        lo_ms=-_NO_BOUND if lo is None else _ceil_ms(lo),
        hi_ms=_NO_BOUND if hi is None else _ceil_ms(hi),
        daily_from=-_NO_BOUND if first is None else _epoch_day(first) - 1,
        daily_start=-_NO_BOUND if first is None else _epoch_day(first),
        daily_end=_NO_BOUND if last is None else _epoch_day(last),
        gap_ms=max_gap // ms,
        grid_ms=grid // ms,
        min_ms=min_duration // ms,
    )
    w_first, w_last = days_of(lo, hi)
    w_lo = -_NO_BOUND if w_first is None else _epoch_day(w_first)
    w_hi = _NO_BOUND if w_last is None else _epoch_day(w_last)
    partitions: dict[tuple[str, int], list[Path]] = {}
    for f in engine.snapshot.manifest.files():
        day = _epoch_day(date.fromisoformat(f.day))
        if (category is None or f.category == category) and (
            w_lo <= day <= w_hi or params.daily_from <= day < params.daily_end
        ):
            partitions.setdefault((f.category, day), []).append(engine.snapshot.root / f.path)
    keys = sorted(partitions)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        parts = list(pool.map(lambda k: _partition(partitions[k], k[1], params), keys))
    try:
        out = _assemble(parts, params)
    except _Fallback:
        engine.last_monitoring_plan = "queries"
        return monitoring_inputs_by_queries(
            engine,
            lo,
            hi,
            category,
            max_gap=max_gap,
            grid=grid,
            min_duration=min_duration,
            tables=tables,
        )
    engine.last_monitoring_plan = "pass"
    return out


# -- monitoring inputs in one pass -------------------------------------------------------------
# Every file holds one (category, day) partition sorted by (instrument, quantity, t), so
# each register's readings of a day are one contiguous, time-ordered run. What monitoring
# asks of a register (its predecessor, its flat stretches, its day's first and last reading,
# the register reading at or before a reference reading) is then a comparison of neighbours
# inside a run, plus a stitch from each run to the register's run of the previous day with
# readings. The pass reads each partition once (Arrow; instrument and quantity as dictionary
# codes), computes in numpy, and stitches the runs' summaries (one row per register and
# day); the codes become ranks of the strings in SQL (binary) order, and strings again only
# in the answer. A partition of several files (not yet compacted), or a file not in that
# order, is sorted first. Where a register has two runs on one day (only possible across
# categories, in a call without a category) the answer is the five queries instead.

_EPOCH_DT: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NO_BOUND: Final = 2**62
_READ: Final = ["instrument", "quantity", "t", "value"]
_SORT: Final = [("instrument", "ascending"), ("quantity", "ascending"), ("t", "ascending")]
_KINDS: Final = pa.array(["gap", "regression"])
_Cols = dict[str, np.ndarray]


class _Fallback(Exception):
    """The one pass's assumption does not hold for this snapshot: ask the queries."""


@dataclass(frozen=True, slots=True)
class _Params:
    #: the time window [lo_ms, hi_ms) in whole milliseconds (see _ceil_ms)
    lo_ms: int
    hi_ms: int
    #: daily consumption: partitions of days [daily_from, daily_end) are read, days from
    #: daily_start on answered (days since the epoch)
    daily_from: int
    daily_start: int
    daily_end: int
    gap_ms: int
    grid_ms: int
    min_ms: int


@dataclass(slots=True)
class _Part:
    """One partition's contribution: tables of numpy columns whose ``ins``/``qty`` are codes
    into the partition's dictionaries (``qty`` of ``pairs``/``pending``: the reference
    quantity's code, whose register quantity is ``registers[code]``)."""

    instruments: pa.Array
    quantities: pa.Array
    registers: pa.Array
    tables: dict[str, _Cols]


def _ceil_ms(t: datetime) -> int:
    """The first whole millisecond at or after ``t``: for a reading (whole ms),
    ``t_ms >= _ceil_ms(bound)`` is ``t >= bound``, also for bounds finer than a ms."""
    return -(-((t - _EPOCH_DT) // timedelta(microseconds=1)) // 1000)


def _epoch_day(d: date) -> int:
    return (d - _EPOCH_DT.date()).days


def _same_value(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SQL ``IS NOT DISTINCT FROM`` on doubles: NaN equals NaN."""
    return np.asarray((a == b) | (np.isnan(a) & np.isnan(b)))


def _less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SQL ``a < b`` on doubles (DuckDB and Spark alike): NaN is above every number."""
    return np.asarray((a < b) | (np.isnan(b) & ~np.isnan(a)))


def _starts(ins: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new_run flags, run starts) of rows in register order."""
    new = np.ones(ins.size, bool)
    new[1:] = (ins[1:] != ins[:-1]) | (qty[1:] != qty[:-1])
    return new, np.flatnonzero(new)


@dataclass(frozen=True, slots=True)
class _Rows:
    """A partition's rows in (instrument, quantity, t) order, the strings as codes into
    dictionaries of distinct values (codes equal exactly when the strings are)."""

    ins: np.ndarray
    instruments: pa.Array
    qty: np.ndarray
    quantities: pa.Array
    t: np.ndarray  # ms since the epoch
    v: np.ndarray


def _rows(table: pa.Table) -> _Rows:
    ins, qty = table.column("instrument").chunk(0), table.column("quantity").chunk(0)
    return _Rows(
        ins.indices.to_numpy(zero_copy_only=False),
        ins.dictionary,
        qty.indices.to_numpy(zero_copy_only=False),
        qty.dictionary,
        np.asarray(table.column("t").chunk(0).cast(pa.int64()).to_numpy(), np.int64),
        table.column("value").chunk(0).to_numpy(),
    )


def _sort(table: pa.Table) -> pa.Table:
    plain = pa.table(
        {k: table.column(k).cast(pa.string()) for k in _READ[:2]}
        | {k: table.column(k) for k in _READ[2:]}
    ).sort_by(_SORT)
    return pa.table(
        {k: pc.dictionary_encode(plain.column(k)) for k in _READ[:2]}
        | {k: plain.column(k) for k in _READ[2:]}
    ).combine_chunks()


def _read_partition(paths: list[Path]) -> tuple[_Rows, np.ndarray, np.ndarray] | None:
    """The partition's rows (sorted here if they come in several files, or out of order),
    their new-run flags and run starts."""
    parts = [
        pq.ParquetFile(p, read_dictionary=_READ[:2]).read(columns=_READ, use_threads=False)
        for p in paths
    ]
    table = pa.concat_tables(parts).unify_dictionaries().combine_chunks()
    if table.num_rows == 0:
        return None
    rows = _rows(table if len(paths) == 1 else _sort(table))
    new, starts = _starts(rows.ins, rows.qty)
    if len(paths) == 1 and not _in_order(rows, new, starts):
        rows = _rows(_sort(table))
        new, starts = _starts(rows.ins, rows.qty)
    return rows, new, starts


def _in_order(rows: _Rows, new: np.ndarray, starts: np.ndarray) -> bool:
    """Whether each register's rows are contiguous and in time order."""
    if not ((rows.t[1:] >= rows.t[:-1]) | new[1:]).all():
        return False
    keys = rows.ins[starts].astype(np.int64) * len(rows.quantities) + rows.qty[starts]
    return bool(np.unique(keys).size == starts.size)


def _partition(paths: list[Path], day: int, p: _Params) -> _Part | None:
    read = _read_partition(paths)
    if read is None:
        return None
    rows, new, starts = read
    ins, qty, t, v = rows.ins, rows.qty, rows.t, rows.v
    registers = pc.utf8_slice_codeunits(rows.quantities, 0, -len(REFERENCE_SUFFIX))
    part = _Part(rows.instruments, rows.quantities, registers, {})
    if p.daily_from <= day < p.daily_end:
        ends = np.append(starts[1:], t.size)
        part.tables["daily"] = {
            "ins": ins[starts],
            "qty": qty[starts],
            "day": np.full(starts.size, day, np.int64),
            "first_value": v[starts],
            "last_value": v[ends - 1],
            "readings": ends - starts,
        }
    inside = (t >= p.lo_ms) & (t < p.hi_ms)
    if not inside.all():
        ins, qty, t, v = ins[inside], qty[inside], t[inside], v[inside]
        new, starts = _starts(ins, qty)
    if t.size:
        is_ref = pc.ends_with(rows.quantities, REFERENCE_SUFFIX).to_numpy(zero_copy_only=False)
        _window_pass(part, ins, qty, t, v, new, starts, is_ref, day, p)
    return part


def _window_pass(
    part: _Part,
    ins: np.ndarray,
    qty: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    new: np.ndarray,
    starts: np.ndarray,
    is_ref: np.ndarray,
    day: int,
    p: _Params,
) -> None:
    """The rows of one partition inside the time window: in-run anomalies, interior flat
    stretches, per-run summaries (edges, flat prefix and suffix, grid offsets), reference
    pairs."""
    n = t.size
    ends = np.append(starts[1:], n)
    size = ends - starts
    run_ref = is_ref[qty[starts]]
    same = ~new[1:]

    nan = bool(np.isnan(v).any())
    gap = np.flatnonzero(same & (t[1:] - t[:-1] > p.gap_ms)) + 1
    back = np.flatnonzero(same & (_less(v[1:], v[:-1]) if nan else v[1:] < v[:-1])) + 1
    at = np.concatenate((gap, back))
    part.tables["anomalies"] = {
        "ins": ins[at],
        "qty": qty[at],
        "kind": np.repeat(np.array([0, 1]), (gap.size, back.size)),
        "t": t[at],
        "previous_t": t[at - 1],
        "previous_value": v[at - 1],
        "value": v[at],
    }

    # flat stretches: the interior ones are final, those at a run's edges are stitched;
    # most readings differ from the one before, so the stretches of two or more readings
    # are found from the few that do not, every other reading is a stretch of its own
    eq = same & (_same_value(v[1:], v[:-1]) if nan else v[1:] == v[:-1])
    tail = np.flatnonzero(eq) + 1  # the readings equal to the one before
    cut = np.flatnonzero(np.diff(tail) != 1) + 1
    m_first = np.concatenate((tail[:1], tail[cut])) - 1
    m_last = np.concatenate((tail[cut - 1], tail[-1:]))
    m_run = np.searchsorted(starts, m_first, side="right") - 1
    at_start = m_first == starts[m_run]
    at_end = m_last == ends[m_run] - 1
    inner = ~at_start & ~at_end & (t[m_last] - t[m_first] >= p.min_ms) & ~run_ref[m_run]
    k, e = m_first[inner], m_last[inner]
    if p.min_ms <= 0:  # the stretches of one reading count too
        alone = np.ones(n, bool)
        alone[tail] = alone[tail - 1] = alone[starts] = alone[ends - 1] = False
        alone &= ~np.repeat(run_ref, size)
        k = np.concatenate((k, np.flatnonzero(alone)))
        e = np.concatenate((e, np.flatnonzero(alone)))
    part.tables["flat"] = {
        "ins": ins[k],
        "qty": qty[k],
        "first_t": t[k],
        "last_t": t[e],
        "readings": e - k + 1,
        "value": v[k],
    }
    prefix_len, prefix_last_t = np.ones(starts.size, np.int64), t[starts]
    prefix_len[m_run[at_start]] = (m_last - m_first + 1)[at_start]
    prefix_last_t[m_run[at_start]] = t[m_last[at_start]]
    suffix_len, suffix_first_t, suffix_value = (
        np.ones(starts.size, np.int64),
        t[ends - 1],
        v[ends - 1],
    )
    suffix_len[m_run[at_end]] = (m_last - m_first + 1)[at_end]
    suffix_first_t[m_run[at_end]] = t[m_first[at_end]]
    suffix_value[m_run[at_end]] = v[m_first[at_end]]

    # grid offsets: the off-grid count per run, the median only where one is off the grid
    r = t % p.grid_ms  # floor modulo, in [0, grid) as the SQL's
    off = np.flatnonzero(r)
    off_grid = np.bincount(np.searchsorted(starts, off, side="right") - 1, minlength=starts.size)
    median = np.zeros(starts.size)
    need = (off_grid > 0) & ~run_ref
    if need.any():
        rows = _ranges(starts[need], size[need])
        signed = np.where(2 * r[rows] > p.grid_ms, r[rows] - p.grid_ms, r[rows])
        counts = size[need]
        ordered = signed[np.lexsort((signed, np.repeat(np.arange(counts.size), counts)))]
        base = np.cumsum(counts) - counts
        median[need] = (ordered[base + (counts - 1) // 2] + ordered[base + counts // 2]) / 2

    part.tables["runs"] = {
        "ins": ins[starts],
        "qty": qty[starts],
        "day": np.full(starts.size, day, np.int64),
        "first_t": t[starts],
        "first_value": v[starts],
        "last_t": t[ends - 1],
        "last_value": v[ends - 1],
        "readings": size,
        "is_ref": run_ref,
        "off_grid": off_grid,
        "median": median,
        "prefix_len": prefix_len,
        "prefix_last_t": prefix_last_t,
        "suffix_len": suffix_len,
        "suffix_first_t": suffix_first_t,
        "suffix_value": suffix_value,
    }
    if run_ref.any():
        _reference_pass(part, ins, qty, t, v, starts, size, run_ref)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The row numbers of runs (given their starts and sizes), one after the other."""
    offsets = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    return np.asarray(np.arange(int(sizes.sum())) + offsets, np.int64)


def _reference_pass(
    part: _Part,
    ins: np.ndarray,
    qty: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    starts: np.ndarray,
    size: np.ndarray,
    run_ref: np.ndarray,
) -> None:
    """Each reference reading with its register's last reading at or before it in this
    partition (``pairs``); without one, it is left to the stitch (``pending``)."""
    code_of = {
        q: k for k, q in enumerate(part.quantities.to_pylist()) if not q.endswith(REFERENCE_SUFFIX)
    }  # a quantity's register, if it has one here (a reference quantity is none)
    register_code = np.asarray([code_of.get(q, -1) for q in part.registers.to_pylist()])
    nq = len(part.quantities)
    keys = ins[starts].astype(np.int64) * nq + qty[starts]
    order = np.argsort(keys)
    refs = np.flatnonzero(run_ref)
    rr = _ranges(starts[refs], size[refs])  # the reference readings
    reg_qty = register_code[qty[rr]]
    want = ins[rr].astype(np.int64) * nq + reg_qty
    pos = np.minimum(np.searchsorted(keys[order], want), order.size - 1)
    found = (reg_qty >= 0) & (keys[order][pos] == want)
    # search the readings of the registers asked for, each run in time order
    runs, local = np.unique(np.where(found, order[pos], -1), return_inverse=True)
    t0, span = int(t.min()), int(t.max() - t.min()) + 1
    if runs.size * span >= _NO_BOUND:
        raise _Fallback("a partition spanning too long a time")
    rows = _ranges(starts[runs[runs >= 0]], size[runs[runs >= 0]])
    shift = int(runs[0] < 0)  # the "not found" group, with no rows
    group = np.repeat(np.arange(shift, runs.size), size[runs[runs >= 0]])
    key = group * span + (t[rows] - t0)  # ascending: the runs one after the other
    at = np.searchsorted(key, local * span + (t[rr] - t0), side="right") - 1
    ok = found & (at >= 0)
    ok[ok] = group[at[ok]] == local[ok]
    for name, hit, register in (
        ("pairs", rr[ok], v[rows[at[ok]]]),
        ("pending", rr[~ok], None),
    ):
        part.tables[name] = {"ins": ins[hit], "qty": qty[hit], "t": t[hit], "reference": v[hit]}
        if register is not None:
            part.tables[name]["register"] = register


def _sorted_unique(arrays: list[pa.Array]) -> pa.Array:
    values = pc.unique(pa.concat_arrays(arrays)) if arrays else pa.array([], pa.string())
    return values.take(pc.sort_indices(values))


def _ranks(dictionary: pa.Array, values: pa.Array) -> np.ndarray:
    """Each dictionary entry's index in ``values`` (-1: not there)."""
    got = pc.index_in(dictionary, value_set=values).fill_null(-1)
    return np.asarray(got.to_numpy(zero_copy_only=False), np.int64)


def _gather(parts: list[_Part], instruments: pa.Array, quantities: pa.Array) -> dict[str, _Cols]:
    """The partitions' tables concatenated, codes replaced by ranks (``ins``, ``qty``)."""
    out: dict[str, list[_Cols]] = {}
    for part in parts:
        imap = _ranks(part.instruments, instruments)
        qmap = _ranks(part.quantities, quantities)
        rmap = _ranks(part.registers, quantities)
        for name, cols in part.tables.items():
            mapped = dict(cols)
            mapped["ins"] = imap[cols["ins"]]
            mapped["qty"] = (rmap if name in ("pairs", "pending") else qmap)[cols["qty"]]
            out.setdefault(name, []).append(mapped)
    return {
        name: {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        for name, chunks in out.items()
    }


def _take(cols: _Cols, idx: np.ndarray) -> _Cols:
    return {k: c[idx] for k, c in cols.items()}


def _order(cols: _Cols, *keys: str) -> _Cols:
    """``cols`` in (instrument, quantity, *keys) order."""
    order = np.lexsort([*(cols[k] for k in reversed(keys)), cols["qty"], cols["ins"]])
    return _take(cols, order)


def _answer(
    cols: _Cols | None, schema: pa.Schema, instruments: pa.Array, quantities: pa.Array
) -> pa.Table:
    if cols is None:
        return schema.empty_table()
    arrays = []
    for f in schema:
        if f.name in ("instrument", "quantity"):
            codes = cols["ins" if f.name == "instrument" else "qty"]
            arrays.append((instruments if f.name == "instrument" else quantities).take(codes))
        elif f.name == "kind":
            arrays.append(_KINDS.take(cols["kind"]))
        elif pa.types.is_timestamp(f.type):
            arrays.append(pa.array(cols[f.name], pa.int64()).cast(f.type))
        elif pa.types.is_date(f.type):
            arrays.append(pa.array(cols[f.name].astype(np.int32), pa.int32()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _assemble(found: list[_Part | None], p: _Params) -> MonitoringInputs:
    """The five tables from the partitions' contributions (see the comment above)."""
    parts = [x for x in found if x is not None]
    instruments = _sorted_unique([x.instruments for x in parts])
    quantities = _sorted_unique([x.quantities for x in parts])
    tables = _gather(parts, instruments, quantities)
    anomalies, flat, pairs = tables.get("anomalies"), tables.get("flat"), tables.get("pairs")
    grid = None
    runs = tables.get("runs")
    if runs is not None:
        runs = _order(runs, "first_t")
        same = np.zeros(runs["ins"].size, bool)
        same[1:] = (runs["ins"][1:] == runs["ins"][:-1]) & (runs["qty"][1:] == runs["qty"][:-1])
        first_t, last_t = runs["first_t"], runs["last_t"]
        if np.any(
            same[1:] & ((first_t[1:] <= last_t[:-1]) | (runs["day"][1:] == runs["day"][:-1]))
        ):
            raise _Fallback("a register with two runs on one day")
        # each run's first reading against the register's last reading before it
        k = np.flatnonzero(same)
        gap = k[first_t[k] - last_t[k - 1] > p.gap_ms]
        back = k[_less(runs["first_value"][k], runs["last_value"][k - 1])]
        at = np.concatenate((gap, back))
        stitched = {
            "ins": runs["ins"][at],
            "qty": runs["qty"][at],
            "kind": np.repeat(np.array([0, 1]), (gap.size, back.size)),
            "t": first_t[at],
            "previous_t": last_t[at - 1],
            "previous_value": runs["last_value"][at - 1],
            "value": runs["first_value"][at],
        }
        anomalies = _concat(anomalies, stitched)
        keep = ~runs["is_ref"]
        registers = _take(runs, np.flatnonzero(keep))
        grid = registers | {"median_offset_ms": registers["median"]}
        flat = _concat(flat, _flat_across_runs(registers, same[keep], p.min_ms))
        if "pending" in tables:
            pairs = _concat(pairs, _resolve_pending(tables["pending"], registers))
    return MonitoringInputs(
        counter_anomalies=_answer(
            anomalies and _order(anomalies, "t", "kind"),
            COUNTER_ANOMALIES_SCHEMA,
            instruments,
            quantities,
        ),
        grid_offsets=_answer(grid, GRID_OFFSETS_SCHEMA, instruments, quantities),
        flat_runs=_answer(
            flat and _order(flat, "first_t"), FLAT_RUNS_SCHEMA, instruments, quantities
        ),
        reference_pairs=_answer(
            pairs and _order(pairs, "t"), REFERENCE_PAIRS_SCHEMA, instruments, quantities
        ),
        daily_consumption=_answer(
            _consumption(tables["daily"], p) if "daily" in tables else None,
            DAILY_CONSUMPTION_SCHEMA,
            instruments,
            quantities,
        ),
    )


def _concat(a: _Cols | None, b: _Cols) -> _Cols:
    return b if a is None else {k: np.concatenate((a[k], b[k])) for k in a}


def _flat_across_runs(runs: _Cols, same: np.ndarray, min_ms: int) -> _Cols:
    """The flat stretches at the runs' edges, joined across consecutive runs of a register:
    a run's last stretch goes on into the next run's first when their values are equal (and
    on through a run flat as a whole)."""
    whole = runs["prefix_len"] == runs["readings"]
    per_run = np.where(whole, 1, 2)
    r = np.repeat(np.arange(same.size), per_run)  # the run of each piece
    first = np.zeros(r.size, bool)
    first[np.cumsum(per_run) - per_run] = True
    first_t = np.where(first, runs["first_t"][r], runs["suffix_first_t"][r])
    last_t = np.where(first & ~whole[r], runs["prefix_last_t"][r], runs["last_t"][r])
    length = np.where(
        first, np.where(whole[r], runs["readings"][r], runs["prefix_len"][r]), runs["suffix_len"][r]
    )
    joins = np.zeros(same.size, bool)
    joins[1:] = same[1:] & _same_value(runs["last_value"][:-1], runs["first_value"][1:])
    link = first & joins[r]
    starts = np.flatnonzero(~link)
    ends = np.append(starts[1:], r.size) - 1
    readings = np.add.reduceat(length, starts) if starts.size else length
    keep = last_t[ends] - first_t[starts] >= min_ms
    starts, ends = starts[keep], ends[keep]
    return {
        "ins": runs["ins"][r[starts]],
        "qty": runs["qty"][r[starts]],
        "first_t": first_t[starts],
        "last_t": last_t[ends],
        "readings": readings[keep],
        "value": np.where(first, runs["first_value"][r], runs["suffix_value"][r])[starts],
    }


def _resolve_pending(pending: _Cols, registers: _Cols) -> _Cols:
    """The reference readings without a register reading at or before them in their own
    partition: the register's last reading of its last run before them (none: left out)."""
    nq = int(max(registers["qty"].max(initial=0), pending["qty"].max(initial=0))) + 1
    keys = np.concatenate(
        (registers["ins"] * nq + registers["qty"], pending["ins"] * nq + pending["qty"])
    )
    times = np.concatenate((registers["first_t"], pending["t"]))
    is_run = np.arange(keys.size) < registers["ins"].size
    order = np.lexsort((~is_run, times, keys))
    before = np.maximum.accumulate(np.where(is_run[order], order, -1))
    mine = ~is_run[order]
    run, ask = before[mine], order[mine] - registers["ins"].size
    ok = (run >= 0) & (pending["qty"][ask] >= 0)
    ok[ok] = keys[run[ok]] == keys[order[mine][ok]]
    run, ask = run[ok], ask[ok]
    if np.any(registers["last_t"][run] > pending["t"][ask]):
        raise _Fallback("a reference reading inside another partition's run")
    return _take(pending, ask) | {"register": registers["last_value"][run]}


def _consumption(daily: _Cols, p: _Params) -> _Cols:
    daily = _order(daily, "day")
    day = daily["day"]
    same = np.zeros(day.size, bool)
    same[1:] = (daily["ins"][1:] == daily["ins"][:-1]) & (daily["qty"][1:] == daily["qty"][:-1])
    if np.any(same[1:] & (day[1:] == day[:-1])):
        raise _Fallback("a register in two partitions of one day")
    chained = np.zeros(day.size, bool)
    chained[1:] = same[1:] & (day[1:] == day[:-1] + 1)
    last = daily["last_value"]
    base = np.where(chained, np.roll(last, 1), daily["first_value"])
    return _take(daily | {"consumption": last - base}, np.flatnonzero(day >= p.daily_start))
