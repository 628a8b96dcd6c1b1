"""The arithmetic of streaming monitoring: one segment of readings against the registers'
last known readings, in Arrow and numpy (no Python loop per reading).

A segment is sorted by (instrument, quantity, t); each reading is compared with its
predecessor, which is the reading before it in the segment or, for a register's first
reading in the segment, the register's state (its newest reading in earlier segments).
That is the batch detector's pairing (each reading against the previous one of its register
in time order, :meth:`~metrocloud.lake.engine.LakeEngine.counter_anomalies`) as long as a
register's readings arrive in time order; a reading not newer than its register's state is
*late*: it is counted and left out, as its predecessor is no longer known here (batch mode
places it in time order).

Only the few readings that are an anomaly, and one row per register (its new state), leave
the vectorised part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from metrocloud.device import StatusFlag
from metrocloud.lake.engine import REFERENCE_SUFFIX
from metrocloud.services.monitoring import (
    Severity,
    Thresholds,
    is_counter_reset,
    max_gap,
    nominal_interval,
)

__all__ = [
    "NO_READING",
    "STATUS_KINDS",
    "STREAM_KINDS",
    "Finding",
    "Registers",
    "Step",
    "flag_findings",
    "registers",
    "step",
]

#: ``last_t`` of a register without a reading yet
NO_READING: Final = np.iinfo(np.int64).min
#: reading status bits that are an alert in their own right, and the alert kind
STATUS_KINDS: Final[Mapping[str, int]] = {
    "seal_broken": int(StatusFlag.SEAL_BROKEN),
    "tamper_detected": int(StatusFlag.TAMPER_DETECTED),
}
#: the alert kinds streaming mode decides
STREAM_KINDS: Final = ("counter_reset", "reverse_flow", "gap", *STATUS_KINDS)
_TS_MS = pa.timestamp("ms", tz="UTC")
_MS: Final = timedelta(milliseconds=1)

Int64s = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Finding:
    """The evidence one segment holds for one alert (instrument, kind): its first anomaly
    (``at``, ms; ``quantity``), the last (``last``), how many, and the numbers batch mode
    reports for that kind (docs/monitoring.md)."""

    instrument: str
    kind: str
    severity: Severity
    at: int
    last: int
    quantity: str
    count: int
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Registers:
    """The register readings of a segment (reference readings left out), sorted by
    (instrument, quantity, t): per register its key and category, per reading its register
    index, time (ms) and value."""

    instruments: list[str]
    quantities: list[str]
    categories: list[str]
    reg: Int64s
    t: Int64s
    value: Floats

    @property
    def keys(self) -> list[tuple[str, str]]:
        return list(zip(self.instruments, self.quantities, strict=True))


@dataclass(frozen=True, slots=True)
class Step:
    """What a segment changes: the registers' new state (index into the segment's
    registers, time, value), the findings, and the late readings left out."""

    updated: Int64s
    last_t: Int64s
    last_value: Floats
    findings: list[Finding]
    late: int


def _strings(column: pa.ChunkedArray) -> pa.Array:
    """One array of plain strings (the lake's files hold the instrument dictionary-encoded)."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array.cast(pa.string())


def registers(table: pa.Table) -> Registers:
    """The register readings of ``table`` (lake readings schema), sorted."""
    cols = table.select(["instrument", "category", "quantity", "t", "value"])
    cols = pa.table(
        {
            "instrument": _strings(cols["instrument"]),
            "category": _strings(cols["category"]),
            "quantity": _strings(cols["quantity"]),
            "t": cols["t"].combine_chunks().cast(_TS_MS).cast(pa.int64()),
            "value": cols["value"].combine_chunks().cast(pa.float64()),
        }
    )
    cols = cols.filter(pc.invert(pc.ends_with(cols["quantity"], REFERENCE_SUFFIX)))
    cols = cols.sort_by(
        [("instrument", "ascending"), ("quantity", "ascending"), ("t", "ascending")]
    )
    n = cols.num_rows
    new = np.ones(n, dtype=bool)
    if n > 1:
        ins, qty = cols["instrument"].combine_chunks(), cols["quantity"].combine_chunks()
        same = pc.and_(
            pc.equal(ins.slice(1), ins.slice(0, n - 1)), pc.equal(qty.slice(1), qty.slice(0, n - 1))
        )
        new[1:] = ~same.to_numpy(zero_copy_only=False)
    starts = pa.array(np.flatnonzero(new))
    return Registers(
        instruments=cols["instrument"].take(starts).to_pylist(),
        quantities=cols["quantity"].take(starts).to_pylist(),
        categories=cols["category"].take(starts).to_pylist(),
        reg=np.cumsum(new, dtype=np.int64) - 1,
        t=cols["t"].to_numpy(),
        value=cols["value"].to_numpy(),
    )


def step(regs: Registers, state_t: Int64s, state_v: Floats, th: Thresholds) -> Step:
    """Compare each reading of ``regs`` with its predecessor; ``state_t`` / ``state_v``: each
    register's last reading before the segment (:data:`NO_READING`: none)."""
    fresh = regs.t > state_t[regs.reg]
    late = int(fresh.size - np.count_nonzero(fresh))
    reg, t, v = regs.reg[fresh], regs.t[fresh], regs.value[fresh]
    n = t.size
    if n == 0:
        empty = np.empty(0, np.int64)
        return Step(empty, empty, np.empty(0, np.float64), [], late)
    first = np.ones(n, dtype=bool)
    first[1:] = reg[1:] != reg[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    prev_t = np.empty_like(t)
    prev_t[1:] = t[:-1]
    prev_t[first] = state_t[reg[first]]
    prev_v = np.empty_like(v)
    prev_v[1:] = v[:-1]
    prev_v[first] = state_v[reg[first]]
    has_prev = prev_t != NO_READING
    limits = {c: max_gap(c, th) // _MS for c in set(regs.categories)}
    gap_ms = np.array([limits[c] for c in regs.categories], dtype=np.int64)  # per register
    delta = t - np.where(has_prev, prev_t, t)
    regression = has_prev & (v < prev_v)
    gap = has_prev & (delta > gap_ms[reg])
    reset = regression & is_counter_reset(prev_v, v, th)
    findings: list[Finding] = []
    for kind, mask in (
        ("counter_reset", reset),
        ("reverse_flow", regression & ~reset),
        ("gap", gap),
    ):
        idx = np.flatnonzero(mask)
        if idx.size:
            findings += _aggregate(kind, regs, reg[idx], t[idx], prev_t[idx], prev_v[idx], v[idx])
    return Step(reg[last], t[last], v[last], findings, late)


def _aggregate(
    kind: str,
    regs: Registers,
    reg: Int64s,
    t: Int64s,
    prev_t: Int64s,
    prev_v: Floats,
    v: Floats,
) -> list[Finding]:
    """One finding per instrument from its anomalies of ``kind`` (few: a loop is fine)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reg.tolist()):
        groups.setdefault(regs.instruments[r], []).append(i)
    out = []
    # a gap's evidence is its start, a regression's the reading (batch: first_evidence)
    when = prev_t if kind == "gap" else t

    def at(i: int) -> int:
        return int(when[i])

    for instrument, rows in groups.items():
        first = min(rows, key=lambda i: (at(i), regs.quantities[int(reg[i])]))
        quantity = regs.quantities[int(reg[first])]
        evidence: dict[str, Any]
        if kind == "gap":
            interval = nominal_interval(regs.categories[int(reg[first])])
            evidence = {
                "longest_s": max(int(t[i] - prev_t[i]) for i in rows) / 1000.0,
                "nominal_interval_s": interval.total_seconds() if interval else None,
            }
            severity: Severity = "warning"
        else:
            evidence = {
                "previous_value": float(prev_v[first]),
                "value": float(v[first]),
                "total_decrease": float(sum(prev_v[i] - v[i] for i in rows)),
            }
            severity = "critical"
        out.append(
            Finding(
                instrument=instrument,
                kind=kind,
                severity=severity,
                at=at(first),
                last=max(at(i) for i in rows),
                quantity=quantity,
                count=len(rows),
                evidence=evidence,
            )
        )
    return out


def flag_findings(table: pa.Table) -> list[Finding]:
    """Findings from the readings' status bits (:data:`STATUS_KINDS`): the device reports a
    broken seal or a detected tamper on its first reading after the event. Late readings
    count too: the bit is a fact whatever the order."""
    status = table["status"].combine_chunks().cast(pa.int64())
    bits = 0
    for b in STATUS_KINDS.values():
        bits |= b
    hit = pc.not_equal(pc.bit_wise_and(status, pa.scalar(bits, pa.int64())), 0)
    rows = table.filter(hit)
    if rows.num_rows == 0:
        return []
    ins = _strings(rows["instrument"]).to_pylist()
    qty = _strings(rows["quantity"]).to_pylist()
    ts = rows["t"].combine_chunks().cast(_TS_MS).cast(pa.int64()).to_pylist()
    st = rows["status"].combine_chunks().cast(pa.int64()).to_pylist()
    found: dict[tuple[str, str], list[tuple[int, str, int]]] = {}
    for i, q, t, s in zip(ins, qty, ts, st, strict=True):
        for kind, bit in STATUS_KINDS.items():
            if s & bit:
                found.setdefault((i, kind), []).append((t, q, s))
    out = []
    for (instrument, kind), hits in sorted(found.items()):
        t0, q0, s0 = min(hits)
        out.append(
            Finding(
                instrument=instrument,
                kind=kind,
                severity="critical",
                at=t0,
                last=max(h[0] for h in hits),
                quantity=q0,
                count=len(hits),
                evidence={"source": "reading status", "status": s0},
            )
        )
    return out
