"""The numbers behind the metrology detectors of :mod:`metrocloud.services.monitoring`.

Small statistics (Theil-Sen, the step of a series of daily errors), the daily errors of a
register against its reference meter (:class:`DailyError`, vectorised over a
``reference_pairs`` table: the same arithmetic as pair by pair) and the in-service MPE: numpy
and Arrow, no alerts. The public names are re-exported by services/monitoring.py and
imported from there.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.mpe import Line, MpeRule, Zone, in_service_factor, mpe
from metrocloud.lake.engine import Bound, LakeEngine

__all__ = ["DailyError", "errors_of_pairs", "in_service_mpe", "reference_errors", "theil_sen"]


@dataclass(frozen=True, slots=True)
class DailyError:
    """The relative error (percent) of a register over the span between two reference
    readings (consumption-weighted), stamped at the span's middle."""

    t: datetime
    error_percent: float
    reference_increment: float


# -- small statistics ------------------------------------------------------------------------


def theil_sen(
    xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """(slope, intercept) of the Theil-Sen line: the median of the pairwise slopes, and the
    median of ``y - slope * x``. Needs two distinct x. (numpy: the same floating-point
    operations as the textbook loops, so the same numbers.)"""
    if len(xs) != len(ys):
        raise InvalidInput(f"theil_sen: {len(xs)} x but {len(ys)} y")
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    i, j = _pairs(x.size)
    dx = x[j] - x[i]
    distinct = dx != 0
    if not distinct.any():
        raise InvalidInput("theil_sen needs at least two distinct x values")
    slope = _median((y[j] - y[i])[distinct] / dx[distinct])
    return slope, _median(y - slope * x)


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs i < j of n points."""
    i, j = np.triu_indices(n, k=1)
    return i, j


def _median(values: np.ndarray) -> float:
    """``statistics.median`` of a float array, to the sign of a zero (that one from a stable
    sort, as Python's; a partition is enough otherwise)."""
    n = values.size
    h = n // 2
    part = np.partition(values, [h - 1, h] if n % 2 == 0 else [h])
    out = float(part[h] if n % 2 else (part[h - 1] + part[h]) / 2)
    if out == 0.0:
        ordered = np.sort(values, kind="stable")
        out = float(ordered[h] if n % 2 else (ordered[h - 1] + ordered[h]) / 2)
    return out


def in_service_mpe(category: str, accuracy_class: str, country: str) -> Decimal:
    """The in-service MPE (percent) in normal operation (upper zone, 20 °C, line A) of an
    instrument of ``category`` and ``accuracy_class`` in ``country``; DE-EV: its MI-003
    meter."""
    cat = InstrumentCategory(category)
    rule: MpeRule
    if cat is InstrumentCategory.MI_005:
        rule = mpe(cat, accuracy_class, line=Line.A)
    elif cat is InstrumentCategory.MI_002:
        rule = mpe(cat, accuracy_class, zone=Zone.UPPER)
    elif cat is InstrumentCategory.DE_EV:
        rule = mpe(InstrumentCategory.MI_003, accuracy_class, zone=Zone.UPPER, temperature=20)
    else:
        rule = mpe(cat, accuracy_class, zone=Zone.UPPER, temperature=20)
    return rule.limit(in_service_factor(country))


def reference_errors(
    engine: LakeEngine, start: Bound = None, end: Bound = None
) -> dict[str, list[DailyError]]:
    """Per instrument with reference readings: the daily errors of its register, in time
    order (spans where the reference did not advance are left out)."""
    return errors_of_pairs(engine.reference_pairs(start, end))


def errors_of_pairs(pairs: pa.Table) -> dict[str, list[DailyError]]:
    """:func:`reference_errors` from a ``reference_pairs`` table."""
    return {ins: series.daily_errors() for ins, series in _error_series(pairs).items()}


@dataclass(frozen=True, slots=True)
class _Series:
    """One instrument's daily errors, as arrays (the columns of its :class:`DailyError`s)."""

    #: the middles of the spans, microseconds since the epoch
    t_us: np.ndarray
    error_percent: np.ndarray
    reference_increment: np.ndarray
    #: the time zone object the engine's times come with
    tz: tzinfo | None

    def t(self, k: int) -> datetime:
        return datetime(1970, 1, 1, tzinfo=self.tz) + timedelta(microseconds=int(self.t_us[k]))

    def daily_errors(self) -> list[DailyError]:
        epoch = datetime(1970, 1, 1, tzinfo=self.tz)
        return [
            DailyError(epoch + timedelta(microseconds=t), e, d)
            for t, e, d in zip(
                self.t_us.tolist(),
                self.error_percent.tolist(),
                self.reference_increment.tolist(),
                strict=True,
            )
        ]


def _error_series(pairs: pa.Table) -> dict[str, _Series]:
    """Each reference pair against its register's previous pair, vectorised (the same
    arithmetic as pair by pair), per instrument in time order."""
    n = pairs.num_rows
    if n < 2:
        return {}
    ins = pairs.column("instrument")
    same = np.asarray(
        pc.and_(
            pc.equal(ins.slice(1), ins.slice(0, n - 1)),
            pc.equal(pairs.column("quantity").slice(1), pairs.column("quantity").slice(0, n - 1)),
        )
    )
    ref = pairs.column("reference").to_numpy()
    reg = pairs.column("register").to_numpy()
    dr = ref[1:] - ref[:-1]
    k = np.flatnonzero(same & (dr > 0)) + 1
    if not k.size:
        return {}
    with np.errstate(over="ignore", invalid="ignore"):  # as Python's floats: inf, nan
        error = 100.0 * ((reg[k] - reg[k - 1]) / dr[k - 1] - 1.0)
    t_us = pairs.column("t").cast(pa.int64()).to_numpy() * 1000  # ms: the halves are whole us
    mids = t_us[k - 1] + (t_us[k] - t_us[k - 1]) // 2
    tz = pairs.column("t")[0].as_py().tzinfo
    codes = pc.dictionary_encode(ins.take(pa.array(k))).combine_chunks().indices.to_numpy()
    cut = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    bounds = [0, *cut.tolist(), k.size]
    names = ins.take(pa.array(k[bounds[:-1]])).to_pylist()
    increment = dr[k - 1]
    return {
        names[n]: _Series(mids[lo:hi], error[lo:hi], increment[lo:hi], tz)
        for n, (lo, hi) in enumerate(itertools.pairwise(bounds))
    }


def _step(ys: Sequence[float]) -> tuple[int, float] | None:
    """The split (index of the first day after) with the largest drop of the median daily
    error ``ys``, and the drop (percentage points, negative: registers less)."""
    n = len(ys)
    if n < 4:
        return None
    # the split: the classic (mean) two-sample statistic, the first of its maxima over
    # k = 2 .. n-2 (the running sums and the arithmetic are those of a loop over k)
    k = np.arange(2, n - 1)
    head = np.cumsum(np.asarray(ys))[1 : n - 2]
    total = sum(ys)
    weighted = np.abs(head / k - (total - head) / (n - k)) * np.sqrt(k * (n - k) / n)
    at = 0 if math.isnan(weighted[0]) else int(np.argmax(np.nan_to_num(weighted, nan=-1.0)))
    split = int(k[at])
    # the jump: medians (robust)
    return split, statistics.median(ys[split:]) - statistics.median(ys[:split])
