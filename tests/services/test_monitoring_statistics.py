"""The vectorised statistics of batch monitoring give the numbers of the textbook loops they
replaced, bit for bit (so detect's alerts did not change): Theil-Sen, the split of the daily
errors, the daily errors from reference pairs."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.engine import REFERENCE_PAIRS_SCHEMA
from metrocloud.services.monitoring import DailyError, _step, errors_of_pairs, theil_sen

T0 = datetime(2026, 3, 1, tzinfo=UTC)
floats = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, 2.5, -3.0, 1e300, -1e300]),
)


def _theil_sen_loops(xs: list[float], ys: list[float]) -> tuple[float, float]:
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))


def _step_loop(ys: list[float]) -> tuple[int, float] | None:
    n = len(ys)
    best: tuple[int, float] | None = None
    score, total, head = 0.0, sum(ys), 0.0
    for k in range(1, n - 1):
        head += ys[k - 1]
        if k < 2:
            continue
        weighted = abs(head / k - (total - head) / (n - k)) * math.sqrt(k * (n - k) / n)
        if best is None or weighted > score:
            best, score = (k, statistics.median(ys[k:]) - statistics.median(ys[:k])), weighted
    return best


def _same(a: object, b: object) -> bool:
    return repr(a) == repr(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 2.5, 7.0, -4.0]), floats), max_size=40))
def test_theil_sen_equals_the_pairwise_loops(points: list[tuple[float, float]]) -> None:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(set(xs)) < 2:
        try:
            theil_sen(xs, ys)
        except InvalidInput:
            return
        raise AssertionError("expected InvalidInput")
    assert _same(theil_sen(xs, ys), _theil_sen_loops(xs, ys))


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, max_size=60))
def test_the_split_equals_the_loop(ys: list[float]) -> None:
    assert _same(_step(ys), _step_loop(ys))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C"]),
            st.sampled_from(["1-0:1.8.0", "1-0:2.8.0"]),
            st.integers(0, 10**9),
            floats,
            floats,
        ),
        max_size=50,
    )
)
def test_daily_errors_equal_the_pair_by_pair_loop(
    rows: list[tuple[str, str, int, float, float]],
) -> None:
    rows = sorted({(i, q, t): (i, q, t, r, m) for i, q, t, r, m in rows}.values())
    table = pa.table(
        {
            "instrument": [r[0] for r in rows],
            "quantity": [r[1] for r in rows],
            "t": pa.array([r[2] for r in rows], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "reference": [r[3] for r in rows],
            "register": [r[4] for r in rows],
        },
        schema=REFERENCE_PAIRS_SCHEMA,
    )
    want: dict[str, list[DailyError]] = defaultdict(list)
    previous: dict[tuple[str, str], tuple[datetime, float, float]] = {}
    for row in table.to_pylist():
        key = (row["instrument"], row["quantity"])
        if key in previous:
            t0, r0, m0 = previous[key]
            dr = row["reference"] - r0
            if dr > 0:
                error = 100.0 * ((row["register"] - m0) / dr - 1.0)
                want[key[0]].append(DailyError(t0 + (row["t"] - t0) / 2, error, dr))
        previous[key] = (row["t"], row["reference"], row["register"])
    got = errors_of_pairs(table)
    assert _same(got, dict(want))
    for errors in got.values():
        assert all(e.t.utcoffset() == timedelta(0) for e in errors)
