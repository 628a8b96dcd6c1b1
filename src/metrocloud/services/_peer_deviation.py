"""Peer-group deviation: a persistent step in an instrument's consumption that its peers do
not share (the ``peer_deviation`` alert of :mod:`metrocloud.services.monitoring`).

Why: most instruments have no reference meter, so a manipulation that makes the register
count less (under-registration) leaves no error series to fit. What it does leave is a step
in the instrument's consumption. On its own such a step means little (a cold week, a
holiday, a weekend); compared with the peers on the same day it does: whatever moves the
whole group (weather, season, weekday, a public holiday) moves the peers' median too.

The computation, per peer group (the instruments of one category, one register quantity):

1. ``u[i, d] = log(consumption)``; days with no reading or a consumption <= 0 (a stuck, reset
   or reversed register, an idle day) carry no evidence and are left out (NaN). Idle
   instruments (median daily consumption below ``idle_share`` of the group's typical one) are
   neither peers nor alerted.
2. The instrument's level: the median over its days of ``u[i, d] - median_j u[j, d]``. Then
   ``x[i, d] = u[i, d] - level[i]`` is its consumption relative to its own usual level, and
   ``r[i, d] = x[i, d] - median_j x[j, d]`` that ratio against the peers' median ratio on the
   same day (in log: ratios become differences). A factor common to the group on a day
   cancels exactly: it adds the same ``log f`` to every ``u[., d]``, hence to both medians.
3. ``sigma``: the larger of the instrument's own day-to-day noise (1.4826 x the median
   absolute day-to-day difference / sqrt(2): a single step barely moves it) and the peers'
   median of the same. The split: the least-squares change point of ``r[i, .]`` after a
   Hampel filter (a day farther than 3 sigma from its 5-day running median counts as that
   median: one odd day cannot place the split), at least ``min_days`` valid days on either
   side. The step is the Hodges-Lehmann shift (the median of all after-minus-before
   differences, of the unfiltered values); its robust z-score divides it by its standard
   error, ``sqrt(pi/3) * sigma * sqrt(1/n_before + 1/n_after)``.
4. An alert needs: ``|step| >= min_percent``, ``|z| >= z_min``, and persistence: at least
   ``min_days`` days after the split lie beyond half the step, and so do the medians of both
   halves of the days after (a transient dip of a few days, a reversed or stuck register for a
   while, is not a step); and a step, not a drift. A meter whose error grows linearly in
   time is a ramp against its peers, which the change point also splits in two (halves
   apart by the slope times half the span). Where a straight line through the days is a
   drift no faster than ``max_drift_percent_per_year`` (a step of a few weeks is a line far
   steeper than any meter drifts), the step must stand beside the line: fitted together
   (``r = a + b day + c [after the split]``, on the filtered values), ``c`` has the step's
   sign, at least ``min_percent`` and ``z_trend_min`` standard errors; beside the trend a
   ramp's ``c`` is nil. The trend ``b`` is in the step's evidence.

Two passes: the instruments found in the first leave the peers' medians in the second, so that
under-registered peers do not make their honest peers seem to rise. Severity: ``critical``
from ``critical_percent`` on, else ``warning``.

Pure numpy on a dense (instrument x day) matrix; the lake is read once per category through
``LakeEngine.daily_consumption``, which both engines answer identically, so the alerts are
the same on DuckDB and Spark.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.engine import REFERENCE_SUFFIX, LakeEngine, whole_days

__all__ = [
    "PeerStep",
    "PeerThresholds",
    "consumption_matrix",
    "day_noise",
    "day_noise_profile",
    "find_peer_steps",
    "peer_deviation_steps",
    "peer_steps_of",
    "relative_series",
]

#: 1 / Phi^-1(3/4): a MAD as a normal standard deviation
_MAD_TO_SIGMA = 1.4826
#: the standard error of the Hodges-Lehmann shift is sqrt(pi/3) times that of a difference of
#: means (normal data: asymptotic relative efficiency 3/pi)
_HL_SE = math.sqrt(math.pi / 3)


@dataclass(frozen=True, slots=True)
class PeerThresholds:
    """The knobs of the peer-deviation detector (docs/monitoring.md)."""

    #: valid days needed on each side of the step (the persistence, "K days in a row")
    min_days: int = 4
    #: the step's size at least this many percent (of the level before it)
    min_percent: float = 5.0
    #: and its robust z-score at least this
    z_min: float = 4.0
    #: the step fitted beside a linear trend (not a drift): at least this many standard
    #: errors (the step has already passed ``z_min`` on its own)
    z_trend_min: float = 3.0
    #: the fastest drift of a meter's error (percent a year) taken for a possible
    #: explanation of a step: where a line through the days is steeper, the step is not
    #: asked to stand beside a trend (over a few weeks, no drift makes a 5 % step)
    max_drift_percent_per_year: float = 30.0
    #: critical from this size (percent) on, else warning
    critical_percent: float = 15.0
    #: an instrument whose median daily consumption is below this share of the group's
    #: typical (median) one is idle: not a peer, not alerted
    idle_share: float = 0.05
    #: a day enters the peer median only with at least this many peers; a group needs them
    min_peers: int = 5

    def __post_init__(self) -> None:
        if self.min_days < 2 or self.min_peers < 3:
            raise InvalidInput("peer deviation needs min_days >= 2 and min_peers >= 3")
        knobs = (self.min_percent, self.z_min, self.z_trend_min, self.max_drift_percent_per_year)
        if min(knobs) <= 0 or not 0 <= self.idle_share < 1:
            raise InvalidInput(
                "peer deviation: min_percent, z_min, z_trend_min, max_drift_percent_per_year"
                " > 0, 0 <= idle_share < 1"
            )


@dataclass(frozen=True, slots=True)
class PeerStep:
    """One instrument's step against its peers."""

    instrument: str
    #: the first day at the new level
    day: date
    #: size: the level after over the level before, minus 1, in percent (negative: less)
    percent: float
    #: robust z-score of the step (signed like it)
    z: float
    #: instruments in the peers' medians (not idle ones, nor those found in the first pass)
    peers: int
    days_before: int
    days_after: int
    severity: Literal["warning", "critical"]
    #: the instrument's linear trend against its peers beside the step (a drift), percent a
    #: year
    trend_percent_per_year: float = 0.0

    @property
    def at(self) -> datetime:
        return datetime.combine(self.day, time.min, UTC)

    def evidence(self) -> dict[str, Any]:
        return {
            "step_day": self.day.isoformat(),
            "step_percent": round(self.percent, 3),
            "z": round(self.z, 3),
            "peers": self.peers,
            "days_before": self.days_before,
            "days_after": self.days_after,
            "trend_percent_per_year": round(self.trend_percent_per_year, 3),
        }


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN slices are expected (NaN out)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmedian(a, axis=axis))


def relative_series(
    matrix: np.ndarray,
    th: PeerThresholds = PeerThresholds(),
    *,
    not_peers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(``r``, ``active``): each instrument's log consumption relative to its own level and
    to the peers' median on the day (steps 1 and 2 of the module docstring), NaN where there
    is no evidence; ``active`` marks the instruments that are not idle. ``matrix`` is
    (instrument x day) consumption, NaN for no reading; the rows marked in ``not_peers`` get
    their series but stay out of the peers' medians."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise InvalidInput(f"consumption matrix must be 2-D, got shape {m.shape}")
    excluded = np.zeros(m.shape[0], bool) if not_peers is None else np.asarray(not_peers, bool)
    positive = np.where(m > 0, m, np.nan)
    typical = _nanmedian(np.where(np.isfinite(m), m, np.nan), axis=1)
    active = np.isfinite(typical) & (typical > 0)
    if active.any():
        group = float(np.median(typical[active]))
        active &= typical >= th.idle_share * group
    u = np.where(active[:, None], np.log(positive), np.nan)
    peer = active & ~excluded
    enough = np.sum(np.isfinite(u[peer]), axis=0) >= th.min_peers
    u[:, ~enough] = np.nan
    level = _nanmedian(u - _nanmedian(u[peer], axis=0)[None, :], axis=1)
    x = u - level[:, None]
    r = x - _nanmedian(x[peer], axis=0)[None, :]
    return r, active


def day_noise(series: np.ndarray) -> float:
    """Robust day-to-day noise (sigma) of one series of valid values: 1.4826 x the median
    absolute difference of consecutive values, over sqrt(2). A step moves one difference
    only, so the noise is measured without knowing where the step is."""
    if series.size < 3:
        return math.nan
    return float(_MAD_TO_SIGMA * np.median(np.abs(np.diff(series))) / math.sqrt(2))


def day_noise_profile(r: np.ndarray, window: int = 7) -> np.ndarray:
    """Per day (column of ``r``, instruments x days): the group's day-to-day noise around it,
    1.4826 x the median over the instruments of ``|r[., d] - r[., d - 1]|`` / sqrt(2),
    smoothed by a centred running median of ``window`` days; a day without it takes the
    median of the others (the group's noise when no day has any: 1)."""
    days = r.shape[1]
    if days == 0:
        return np.ones(0)
    diffs = np.abs(np.diff(r, axis=1))
    per = np.full(days, np.nan)
    if days > 1:
        per[1:] = _MAD_TO_SIGMA * _nanmedian(diffs, axis=0) / math.sqrt(2)
        per[0] = per[1]
    fill = float(np.nanmedian(per)) if np.isfinite(per).any() else 1.0
    per = np.where(np.isfinite(per), per, fill)
    half = window // 2
    padded = np.concatenate([np.repeat(per[:1], half), per, np.repeat(per[-1:], half)])
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
    return np.where(smooth > 0, smooth, fill if fill > 0 else 1.0)


def _hampel(
    y: np.ndarray, lengths: np.ndarray, sigma: np.ndarray, half_width: int = 2
) -> np.ndarray:
    """Per row of ``y`` (its first ``lengths[j]`` values valid, packed to the left): every
    value farther than 3 ``sigma`` (per row, or per value: same shape as ``y``) from the
    median of its window (itself and
    ``half_width`` values either side, the end value repeated at the ends) replaced by that
    median. A single odd day (a partly stuck or reversed register) goes; a step, which the
    running median follows, stays. Rows in chunks, so memory stays bounded."""
    rows, width = y.shape
    out = np.full_like(y, np.nan)
    if rows == 0 or width == 0:
        return out
    last = np.maximum(lengths - 1, 0)
    for lo in range(0, rows, 2048):
        hi = min(rows, lo + 2048)
        idx = np.minimum(np.arange(width)[None, :], last[lo:hi, None])
        filled = np.take_along_axis(y[lo:hi], idx, axis=1)
        padded = np.concatenate(
            [
                np.repeat(filled[:, :1], half_width, 1),
                filled,
                np.repeat(filled[:, -1:], half_width, 1),
            ],
            axis=1,
        )
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_width + 1, axis=1)
        med = np.median(windows, axis=2)
        limit = 3 * (sigma[lo:hi] if sigma.ndim == 2 else sigma[lo:hi, None])
        clean = np.where(np.abs(filled - med) > limit, med, filled)
        out[lo:hi] = np.where(np.arange(width)[None, :] < lengths[lo:hi, None], clean, np.nan)
    return out


def _split(y: np.ndarray, min_side: int, w: np.ndarray | None = None) -> int | None:
    """The split k (first index after) in [min_side, n - min_side] that maximises the
    two-sample statistic ``|mean(y[:k]) - mean(y[k:])| / sqrt(1/W(:k) + 1/W(k:))`` with the
    means weighted by ``w`` (inverse variances; None: all 1, where the statistic is
    ``|mean(y[:k]) - mean(y[k:])| * sqrt(k (n - k) / n)``): the least-squares change point
    (the first of equal maxima)."""
    n = y.size
    if n < 2 * min_side:
        return None
    weights = np.ones(n) if w is None else w
    ks = np.arange(min_side, n - min_side + 1)
    cw = np.cumsum(weights)
    cwy = np.cumsum(weights * y)
    w_head, wy_head = cw[ks - 1], cwy[ks - 1]
    w_tail, wy_tail = cw[-1] - w_head, cwy[-1] - wy_head
    stat = np.abs(wy_head / w_head - wy_tail / w_tail) / np.sqrt(1 / w_head + 1 / w_tail)
    return int(ks[int(np.argmax(stat))])


@dataclass(frozen=True, slots=True)
class _TrendFit:
    #: the step at the split beside a linear trend (log), and its standard error
    shift: float
    shift_se: float
    #: the trend beside the step, per day (log)
    slope: float
    #: the slope of a straight line alone (no step), per day (log)
    line_slope: float


def _fit_trend(y: np.ndarray, days: np.ndarray, k: int, sd: np.ndarray) -> _TrendFit:
    """Weighted least squares (weights ``1 / sd**2``) of ``y = a + b day + c [index >= k]``,
    and of the line alone ``y = a + b day``."""
    t = days.astype(np.float64)
    w = 1.0 / np.square(sd)
    t -= float(np.sum(w * t) / np.sum(w))
    after = (np.arange(t.size) >= k).astype(np.float64)
    x = np.column_stack([np.ones_like(t), t, after])
    xw = x * w[:, None]
    try:
        inv = np.linalg.inv(x.T @ xw)
    except np.linalg.LinAlgError:
        return _TrendFit(0.0, math.inf, 0.0, 0.0)
    coef = inv @ (xw.T @ y)
    ybar = float(np.sum(w * y) / np.sum(w))
    tt = float(np.sum(w * t * t))
    return _TrendFit(
        shift=float(coef[2]),
        shift_se=math.sqrt(max(float(inv[2, 2]), 0.0)),
        slope=float(coef[1]),
        line_slope=float(np.sum(w * t * (y - ybar))) / tt if tt else 0.0,
    )


def find_peer_steps(
    instruments: Sequence[str],
    days: Sequence[date],
    matrix: np.ndarray,
    *,
    alert_on: Collection[str] | None = None,
    th: PeerThresholds = PeerThresholds(),
) -> list[PeerStep]:
    """The peer-deviation steps of one peer group: ``matrix[i, d]`` is the consumption of
    ``instruments[i]`` on ``days[d]`` (NaN: no reading). Every instrument is a peer; only
    those in ``alert_on`` (default all) are reported. Sorted by instrument."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (len(instruments), len(days)):
        raise InvalidInput(
            f"consumption matrix has shape {m.shape}, expected "
            f"({len(instruments)}, {len(days)}) instruments x days"
        )
    if len(instruments) < th.min_peers or not days:
        return []
    names = list(instruments)
    wanted = set(names) if alert_on is None else set(alert_on)
    # two passes: the instruments found deviating in the first leave the peers' medians in
    # the second (under-registered peers would otherwise pull the median after their steps,
    # and their honest peers would seem to rise)
    r, active = relative_series(m, th)
    first = _scan(names, days, r, active, np.flatnonzero(active), th)
    if not first:
        return []
    flagged = np.isin(np.asarray(names, dtype=object), [s.instrument for s in first])
    r, active = relative_series(m, th, not_peers=flagged)
    rows = np.asarray([i for i in np.flatnonzero(active) if names[i] in wanted], dtype=np.int64)
    return _scan(names, days, r, active & ~flagged, rows, th)


def _scan(
    instruments: list[str],
    days: Sequence[date],
    r: np.ndarray,
    peer: np.ndarray,
    rows: np.ndarray,
    th: PeerThresholds,
) -> list[PeerStep]:
    """Steps 3 and 4 of the module docstring for the ``rows`` of ``r``; ``peer`` marks the
    instruments in the peers' medians."""
    peers = int(peer.sum())
    if peers < th.min_peers:
        return []
    noise = np.array([day_noise(row[np.isfinite(row)]) for row in r])
    finite_noise = noise[peer & np.isfinite(noise)]
    peer_noise = float(np.median(finite_noise)) if finite_noise.size else math.nan
    sigma = np.fmax(noise, peer_noise) if math.isfinite(peer_noise) else noise
    rows = np.asarray([i for i in rows if math.isfinite(sigma[i]) and sigma[i] > 0], dtype=np.int64)
    # the noise of each day (the peers' day-to-day noise around it) over the group's: a
    # season of noisier days (gas in summer, hot water only: 25 % against 6 % in winter)
    # weighs what it is worth, and the standard errors are those of the days in question
    season = (
        day_noise_profile(r[peer]) / peer_noise
        if math.isfinite(peer_noise) and peer_noise > 0
        else np.ones(r.shape[1])
    )
    # the valid days of each row packed to the left, for the vectorised filter
    valid_of = [np.flatnonzero(np.isfinite(r[i])) for i in rows]
    lengths = np.asarray([v.size for v in valid_of], dtype=np.int64)
    packed = np.full((rows.size, int(lengths.max(initial=0))), np.nan)
    sd = np.full_like(packed, np.nan)
    for j, (i, v) in enumerate(zip(rows, valid_of, strict=True)):
        packed[j, : v.size] = r[i, v]
        sd[j, : v.size] = sigma[i] * season[v]
    filtered = _hampel(packed, lengths, sd)
    out: list[PeerStep] = []
    for j, i in enumerate(rows):
        name = instruments[i]
        valid = valid_of[j]
        y = packed[j, : valid.size]
        var = np.square(sd[j, : valid.size])
        k = _split(filtered[j, : valid.size], th.min_days, 1.0 / var)
        if k is None:
            continue
        before, after = y[:k], y[k:]
        # Hodges-Lehmann shift: the median of all (after - before) differences (robust, and
        # nearly as efficient as a difference of means on normal noise)
        step = float(np.median(np.subtract.outer(after, before)))
        percent = 100.0 * math.expm1(step)
        se = math.sqrt(var[:k].sum() / k**2 + var[k:].sum() / (valid.size - k) ** 2)
        z = step / (_HL_SE * se)
        if abs(percent) < th.min_percent or abs(z) < th.z_min:
            continue
        # a step, not a drift: where a straight line explains the days at least as well,
        # the shift at the split must stand beside the line
        fit = _fit_trend(filtered[j, : valid.size], valid, k, sd[j, : valid.size])
        # the drift a straight line through the days would be
        as_drift = 100.0 * abs(math.expm1(365.0 * fit.line_slope))
        if as_drift <= th.max_drift_percent_per_year and (
            fit.shift * step <= 0
            or abs(100.0 * math.expm1(fit.shift)) < th.min_percent
            or abs(fit.shift) < th.z_trend_min * fit.shift_se
        ):
            continue
        b = float(np.median(before))
        # persistent: at least min_days days after lie beyond half the step, and so do the
        # medians of both halves of the days after (not a dip of a few days)
        beyond = (after - b) * step >= step * step / 2
        half = after.size // 2
        halves = (after[:half], after[half:]) if half else (after,)
        if int(beyond.sum()) < th.min_days or not all(
            (float(np.median(h)) - b) * step >= step * step / 2 for h in halves
        ):
            continue
        severity: Literal["warning", "critical"] = (
            "critical" if abs(percent) >= th.critical_percent else "warning"
        )
        out.append(
            PeerStep(
                instrument=name,
                day=days[int(valid[k])],
                percent=percent,
                z=float(z),
                peers=peers,
                days_before=int(before.size),
                days_after=int(after.size),
                severity=severity,
                trend_percent_per_year=100.0 * math.expm1(365.0 * fit.slope),
            )
        )
    return sorted(out, key=lambda s: s.instrument)


def consumption_matrix(
    table: pa.Table,
) -> tuple[dict[str, list[str]], list[date], dict[str, np.ndarray], set[str]]:
    """From ``daily_consumption`` rows (one category): per register quantity the
    instruments, the days of the table, per quantity the (instrument x day) matrix, and the
    instruments with a reference meter (a ``*ref`` quantity; its rows are not peers)."""
    days_col = table.column("day")
    day_values = pc.unique(days_col)
    day_values = day_values.take(pc.sort_indices(day_values))
    days: list[date] = day_values.to_pylist()
    is_ref = pc.ends_with(table.column("quantity"), REFERENCE_SUFFIX)
    referenced = set(pc.unique(table.column("instrument").filter(is_ref)).to_pylist())
    cells = table.filter(
        pc.and_(pc.invert(is_ref), pc.is_valid(table.column("consumption")))
    ).select(["instrument", "quantity", "day", "consumption"])
    names: dict[str, list[str]] = {}
    matrices: dict[str, np.ndarray] = {}
    for q in sorted(pc.unique(cells.column("quantity")).to_pylist()):
        part = cells.filter(pc.equal(cells.column("quantity"), q))
        instruments = pc.unique(part.column("instrument"))
        instruments = instruments.take(pc.sort_indices(instruments))
        row = pc.index_in(part.column("instrument"), value_set=instruments).to_numpy()
        col = pc.index_in(part.column("day"), value_set=day_values).to_numpy()
        m = np.full((len(instruments), len(days)), np.nan)
        m[row, col] = part.column("consumption").to_numpy()
        names[q] = instruments.to_pylist()
        matrices[q] = m
    return names, days, matrices, referenced


def peer_steps_of(
    table: pa.Table, *, registered: Mapping[str, Any], th: PeerThresholds = PeerThresholds()
) -> list[PeerStep]:
    """The steps of one category's ``daily_consumption`` (whole days): every registered
    instrument without a reference meter, one peer group per register quantity."""
    names, days, matrices, referenced = consumption_matrix(table)
    out: list[PeerStep] = []
    for q, m in matrices.items():
        candidates = [n for n in names[q] if n in registered and n not in referenced]
        if candidates:
            out += find_peer_steps(names[q], days, m, alert_on=candidates, th=th)
    return sorted(out, key=lambda s: s.instrument)


def peer_deviation_steps(
    engine: LakeEngine,
    categories: Iterable[str],
    lo: datetime | None,
    hi: datetime | None,
    *,
    registered: Mapping[str, Any],
    th: PeerThresholds = PeerThresholds(),
) -> list[PeerStep]:
    """The steps of every registered instrument without a reference meter, one peer group
    per category and register quantity, over the whole days in [lo, hi)
    (:func:`~metrocloud.lake.engine.whole_days`)."""
    start, end = whole_days(lo, hi)
    out: list[PeerStep] = []
    for cat in sorted(set(categories)):
        table = engine.daily_consumption(start, end, category=cat)
        out += peer_steps_of(table, registered=registered, th=th)
    return sorted(out, key=lambda s: s.instrument)
