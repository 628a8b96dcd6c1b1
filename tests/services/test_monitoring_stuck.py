"""The stuck-register detector asks the engine only for the runs that can matter
(``stuck_cutoff``): its alerts equal those of the plain rule applied to every flat run (a
reference written here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.lake.engine import FLAT_RUNS_SCHEMA
from metrocloud.services.monitoring import Alert, Thresholds, _Instrument, _stuck, stuck_cutoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Runs:
    """An engine whose flat runs are given (filtered like a real engine: by duration)."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.asked: list[timedelta] = []

    def flat_runs(
        self, start: Any, end: Any, category: str | None = None, min_duration: timedelta = ...
    ) -> pa.Table:
        self.asked.append(min_duration)
        rows = [
            r
            for r in self.runs
            if r["category"] == category and r["last_t"] - r["first_t"] >= min_duration
        ]
        return pa.Table.from_pylist(
            [{k: v for k, v in r.items() if k != "category"} for r in rows],
            schema=FLAT_RUNS_SCHEMA,
        )


def _reference(
    runs: list[dict[str, Any]], reg: dict[str, _Instrument], th: Thresholds
) -> list[Alert]:
    """The rule as documented, over every run: the longest run (of enough readings) per
    instrument beyond max(stuck_min, factor x p90 of the peers' longest, 0 for none)."""
    out = []
    for cat in sorted({i.category for i in reg.values()}):
        longest: dict[str, dict[str, Any]] = {}
        for r in runs:
            if r["category"] != cat or r["readings"] < th.stuck_readings:
                continue
            cur = longest.get(r["instrument"])
            if cur is None or r["last_t"] - r["first_t"] > cur["last_t"] - cur["first_t"]:
                longest[r["instrument"]] = r
        peers = [i for i in reg.values() if i.category == cat]
        durations = sorted(
            [(r["last_t"] - r["first_t"]).total_seconds() for r in longest.values()]
            + [0.0] * (len(peers) - len(longest))
        )
        p90 = durations[min(len(durations) - 1, int(0.9 * len(durations)))] if durations else 0.0
        limit = max(th.stuck_min.total_seconds(), th.stuck_factor * p90)
        for ins, r in sorted(longest.items()):
            if (r["last_t"] - r["first_t"]).total_seconds() > limit:
                out.append((ins, r["first_t"]))
    return out  # type: ignore[return-value]


_run = st.tuples(
    st.integers(0, 11),  # instrument
    st.integers(0, 2000),  # start, minutes
    st.integers(0, 600),  # duration, minutes
    st.integers(1, 40),  # readings
)


@given(
    runs=st.lists(_run, max_size=60),
    factor=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]),
    stuck_min=st.integers(10, 300),
)
def test_the_cutoff_changes_no_alert(
    runs: list[tuple[int, int, int, int]], factor: float, stuck_min: int
) -> None:
    reg = {
        f"ins-{n}": _Instrument(f"ins-{n}", "MI-001" if n % 2 else "MI-002", "cer", "1")
        for n in range(12)
    }
    rows = [
        {
            "instrument": f"ins-{i}",
            "category": reg[f"ins-{i}"].category,
            "quantity": "q",
            "first_t": T0 + timedelta(minutes=s),
            "last_t": T0 + timedelta(minutes=s + d),
            "readings": n,
            "value": 1.0,
        }
        for i, s, d, n in runs
    ]
    th = Thresholds(stuck_min=timedelta(minutes=stuck_min), stuck_factor=factor)
    engine = _Runs(rows)
    got = [
        (a.instrument, a.at)
        for cat in sorted({i.category for i in reg.values()})
        for a in _stuck(engine.flat_runs(None, None, cat, stuck_cutoff(th)), cat, reg, th)
    ]
    assert got == _reference(rows, reg, th)
    assert all(m > timedelta(0) for m in engine.asked)  # never one row per reading
