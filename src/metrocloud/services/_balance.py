"""Balance areas: an area meter against the sum of its members (the ``under_registration``
alert with ``source: balance`` of :mod:`metrocloud.services.monitoring`).

Why: a manipulated meter that counts less than it should is, on its own, only a step in a
noisy consumption (services/_peer_deviation.py); an 8 % step in a household's water or
electricity is lost in its day-to-day noise. Where the operator meters a group of
instruments as a whole (the households of a low-voltage feeder, the flats behind a
building's main meter, the dispensers of a filling station against its tank gauges, the
charging points behind a site's grid connection), the quantity the manipulated meter no
longer counts shows up in the area's balance, and it shows up with the manipulated meter's
own day-to-day pattern: that is what finds it, and finds which member it is.

The topology comes from the registry: the ``put_into_service`` (or a later ``relocated``)
event of each instrument names its ``details.balance_area`` and, of the area's meter,
``details.balance_role = "area_meter"``.

The computation, per area and register quantity, on whole days (``daily_consumption``):

1. Each member's and the meter's daily consumption from its daily last readings, carried
   over days without a reading (a transaction register that dispensed nothing). A day counts
   only where every member and the meter have a consumption >= 0 (not a reset or reversed
   register), none was read without moving all day (a stopped register), and, for interval
   registers, a reading on that day and the day before (a quarantined day would lump two
   days into one).
2. The members' shares of what the meter counted, ``s[j, d] = C[j, d] / A[d]``, and the
   losses' share ``rho[d] = 1 - sum_j s[j, d]``: the losses, the members' errors, noise.
3. Binary segmentation of ``rho``: the least-squares change point beside the model so far
   (a constant, then every change found), at least ``min_days`` days from the ends and from
   the changes found; its step fitted by least squares after one pass that sets aside the
   days farther than ``outlier_sigmas`` robust standard deviations. The search ends at the
   first change with ``|z| < z_min``, or after ``max_changes``.
4. A rise is offered to the members (:func:`_attribute`): per member ``j``, ``rho = model
   + beta s[j, d] [d >= split]``; the member's score adds that fit (its residual sum of
   squares over the noise variance) and its own share falling by what ``beta`` implies
   (twice the log-likelihood of "it fell" over "it did not"). The best member must beat the
   next by ``attribution``, with ``beta / se >= z_min``, an under-registration
   ``beta / (1 + beta)`` of at least ``min_fraction``, its own share not against it
   (``own_share_min``), persistence (the per-day ``beta`` of both halves of the days after
   at least half of it) and a step, not a drift (fitted beside the member's own error
   growing linearly in time, at least half of it and ``z_trend_min`` standard errors). It
   registers ``1 / (1 + beta)`` of the true quantity.
5. Anything else (a fall, a rise no member explains) joins the model as a change of its
   own; after each member found, those rises are offered to the members again. A rise
   where a member's share is nil on most days after it (a register that stopped for good,
   the stuck detector's finding) ends the area's days there. At the end the members found
   are refitted together for their ratios.

Pure numpy on what ``LakeEngine.daily_consumption`` answers, which both engines answer
identically, so the alerts are the same on DuckDB and Spark.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.engine import REFERENCE_SUFFIX

__all__ = [
    "AreaStep",
    "BalanceArea",
    "BalanceFindings",
    "BalanceThresholds",
    "area_findings",
    "balance_findings_of",
]

_MAD_TO_SIGMA = 1.4826
#: the columns every model of the losses' share starts with (the constant)
_FIXED = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BalanceArea:
    """One balance area as the registry records it."""

    id: str
    meter: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BalanceThresholds:
    """The knobs of the balance detector (docs/monitoring.md)."""

    #: valid days needed on each side of the split
    min_days: int = 7
    #: the member's step at least this many standard errors
    z_min: float = 5.0
    #: and at least this share of the true quantity uncounted (``beta / (1 + beta)``)
    min_fraction: float = 0.05
    #: days whose balance lies farther than this many robust standard deviations from the
    #: first fit are set aside for the second
    outlier_sigmas: float = 4.0
    #: members found per area at most
    max_per_area: int = 2
    #: changes of the losses' share examined per area at most
    max_changes: int = 8
    #: the member found must explain the losses' step better than the next one by this
    #: much: the difference of their residual sums of squares over the noise variance
    #: (twice the log-likelihood ratio; 13.8 is odds of 1000 to 1)
    attribution: float = 13.8
    #: the member's own share must not speak against its fall: twice the log-likelihood of
    #: "it fell by what beta says" over "it did not" at least this (-4: two standard errors)
    own_share_min: float = -4.0
    #: the step fitted beside the member's own linear drift: at least half of it and this
    #: many standard errors
    z_trend_min: float = 3.0

    def __post_init__(self) -> None:
        if self.min_days < 3 or self.max_per_area < 1:
            raise InvalidInput("balance: min_days >= 3 and max_per_area >= 1")
        if self.z_min <= 0 or not 0 < self.min_fraction < 1 or self.outlier_sigmas <= 0:
            raise InvalidInput("balance: z_min > 0, 0 < min_fraction < 1, outlier_sigmas > 0")


@dataclass(frozen=True, slots=True)
class AreaStep:
    """One member found counting less than its area meter says it delivers."""

    instrument: str
    area: str
    meter: str
    #: the first day of the step
    day: date
    #: what the member registers of the true quantity after the step (``1 / (1 + beta)``)
    ratio: float
    z: float
    #: twice the log-likelihood ratio of this member against the next likeliest
    odds: float
    #: the area's losses before the step, percent of the meter's quantity
    loss_percent: float
    members: int
    days_before: int
    days_after: int

    @property
    def at(self) -> datetime:
        return datetime.combine(self.day, time.min, UTC)

    def evidence(self) -> dict[str, Any]:
        return {
            "source": "balance",
            "balance_area": self.area,
            "area_meter": self.meter,
            "step_day": self.day.isoformat(),
            "ratio": round(self.ratio, 4),
            "under_registration_percent": round((1 - self.ratio) * 100, 3),
            "z": round(self.z, 3),
            "attribution": round(self.odds, 3) if math.isfinite(self.odds) else None,
            "area_loss_percent": round(self.loss_percent, 3),
            "members": self.members,
            "days_before": self.days_before,
            "days_after": self.days_after,
        }


def _daily(
    table: pa.Table,
) -> tuple[list[date], dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """The days of ``table``, and per (instrument, quantity) its last value and its
    consumption per day (NaN where it has no row)."""
    day_values = pc.unique(table.column("day"))
    day_values = day_values.take(pc.sort_indices(day_values))
    days: list[date] = day_values.to_pylist()
    keep = pc.invert(pc.ends_with(table.column("quantity"), REFERENCE_SUFFIX))
    part = table.filter(keep).sort_by([("instrument", "ascending"), ("quantity", "ascending")])
    col = pc.index_in(part.column("day"), value_set=day_values).to_numpy()
    inst = part.column("instrument").to_pylist()
    qty = part.column("quantity").to_pylist()
    last = part.column("last_value").to_numpy(zero_copy_only=False).astype(float)
    cons = part.column("consumption").to_numpy(zero_copy_only=False).astype(float)
    out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    lo = 0
    n = len(inst)
    while lo < n:
        hi = lo
        while hi < n and inst[hi] == inst[lo] and qty[hi] == qty[lo]:
            hi += 1
        lv = np.full(len(days), np.nan)
        cv = np.full(len(days), np.nan)
        lv[col[lo:hi]] = last[lo:hi]
        cv[col[lo:hi]] = cons[lo:hi]
        out[(inst[lo], qty[lo])] = (lv, cv)
        lo = hi
    return days, out


def _consumption(last: np.ndarray, first_day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Daily consumption from the daily last values carried over days without a row (the
    first day with a row: the engine's own consumption), and where a row exists."""
    present = ~np.isnan(last)
    idx = np.where(present, np.arange(last.size), -1)
    np.maximum.accumulate(idx, out=idx)
    filled = np.where(idx >= 0, last[np.maximum(idx, 0)], np.nan)
    c = np.full(last.size, np.nan)
    c[1:] = filled[1:] - filled[:-1]
    first = int(np.argmax(present)) if present.any() else last.size
    if first < last.size:
        c[first] = first_day[first]
    return c, present


def _change_point(
    y: np.ndarray, base: np.ndarray, min_days: int, taken: Sequence[int] = ()
) -> int | None:
    """The index splitting ``y`` best in least squares beside the columns of ``base``, with
    ``min_days`` values on either side and from every split in ``taken``; None if there is
    no room."""
    n = y.size
    if n < 2 * min_days:
        return None
    q, _ = np.linalg.qr(base)
    r = y - q @ (q.T @ y)
    ks = np.arange(min_days, n - min_days + 1)
    for k in taken:
        ks = ks[np.abs(ks - k) >= min_days]
    if ks.size == 0:
        return None
    steps = (np.arange(n)[None, :] >= ks[:, None]).astype(float)
    steps -= (steps @ q) @ q.T
    num = (steps @ r) ** 2
    den = np.einsum("ij,ij->i", steps, steps)
    gain = np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0)
    return int(ks[int(np.argmax(gain))])


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Least squares: coefficients, their standard errors, the residuals' sigma."""
    n, p = x.shape
    if n <= p + 2:
        return None
    coef, _res, rank, _sv = np.linalg.lstsq(x, y, rcond=None)
    if rank < p:
        return None
    e = y - x @ coef
    s2 = float(e @ e) / (n - p)
    try:
        cov = np.linalg.inv(x.T @ x) * s2
    except np.linalg.LinAlgError:
        return None
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return coef, se, math.sqrt(s2)


@dataclass(slots=True)
class _Area:
    """One area's valid days on the way through :func:`area_findings`."""

    names: list[str]
    #: members' shares of the meter's quantity (member x day), the losses' share
    shares: np.ndarray
    rho: np.ndarray
    #: time in years, centred
    t: np.ndarray
    #: the model's columns so far: the constant (``_FIXED``), then the changes found
    base: list[np.ndarray]
    #: where the changes found are
    splits: list[int]
    #: per change found (``base[_FIXED:]``): the step of ``out`` it is, or None (a change of
    #: its own)
    owners: list[int | None]


@dataclass(frozen=True, slots=True)
class BalanceFindings:
    """What the balances say: the members found, and the claimed steps (an instrument's
    fall against its peers, say) the balance contradicts, with the numbers."""

    steps: list[AreaStep]
    contradicted: dict[str, dict[str, Any]]


def area_findings(
    area: BalanceArea,
    days: Sequence[date],
    meter: np.ndarray,
    members: Mapping[str, np.ndarray],
    valid: np.ndarray,
    th: BalanceThresholds = BalanceThresholds(),
    claims: Mapping[str, tuple[date, float]] | None = None,
) -> BalanceFindings:
    """The members of ``area`` found under-registering: ``meter`` and ``members`` are daily
    consumptions over ``days``, ``valid`` the days that count (step 1 of the module's).

    The changes of the losses' share are taken one at a time, the largest first (binary
    segmentation): a rise that one member's share explains is that member's; any other
    significant change (a register stopped for a while and going on again, a meter's
    drift in steps, a fall) joins the model as a step of its own, so that the next search
    is not misled by it."""
    names = sorted(members)
    idx = np.flatnonzero(valid & (meter > 0))
    if not names or idx.size < 2 * th.min_days:
        return BalanceFindings([], {})
    a = meter[idx]
    shares = np.vstack([members[n][idx] for n in names]) / a
    t = (idx - idx.mean()) / 365.0
    st = _Area(names, shares, 1.0 - shares.sum(axis=0), t, [np.ones(idx.size)], [], [])
    out: list[AreaStep] = []
    for _ in range(th.max_changes):
        base = np.column_stack(st.base)
        k = _change_point(st.rho, base, th.min_days, st.splits)
        if k is None:
            break
        st.splits.append(k)
        after = (np.arange(st.rho.size) >= k).astype(float)
        fitted = _robust_fit(np.column_stack([base, after]), st.rho, th.outlier_sigmas)
        if fitted is None:
            break
        coef, se, keep = fitted
        step, step_z = float(coef[-1]), float(coef[-1] / se[-1]) if se[-1] > 0 else 0.0
        log.debug(
            "balance %s: change on %s, %.5f (z %.1f)", area.id, days[int(idx[k])], step, step_z
        )
        if abs(step_z) < th.z_min:
            break
        if step > 0 and _stopped(st, k):
            # a register that stopped for good (the stuck detector's finding) leaves its
            # true consumption in the balance with nothing to follow: the days before only
            st = _until(st, k)
            continue
        found = _attribute(area, st, base, k, keep, th, out) if step > 0 else None
        if found is None:
            st.base.append(after)  # a change of its own
            st.owners.append(None)
            continue
        st.base.append(st.shares[found[0]] * after)
        st.owners.append(len(out))
        out.append(_step(area, days, idx, st, k, found))
        # a rise set aside before may be a member's now that this one is in the model
        _revisit(area, days, idx, st, th, out)
        if len(out) >= th.max_per_area:
            break
    steps = sorted(_refit(st, out, th), key=lambda s: s.instrument)
    contradicted: dict[str, dict[str, Any]] = {}
    for name, (day, percent) in sorted((claims or {}).items()):
        # a fall of 100 % is a register that stopped: the stuck detector's
        if name in names and -100 < percent < 0 and name not in {s.instrument for s in steps}:
            at = int(np.searchsorted(idx, bisect_left(days, day)))
            verdict = _contradicts(st, names.index(name), at, -percent / (100 + percent), th)
            if verdict is not None:
                contradicted[name] = {"balance_area": area.id, **verdict}
    return BalanceFindings(steps, contradicted)


def _contradicts(
    st: _Area, j: int, k: int, implied: float, th: BalanceThresholds
) -> dict[str, Any] | None:
    """Whether the balance contradicts member ``j`` counting ``1 / (1 + implied)`` of the
    true quantity from position ``k`` on: the numbers if it does, else None."""
    n = st.rho.size
    # a few days after are enough to contradict a large fall (the standard error says how
    # sure): a peer step needs four
    if not th.min_days <= k <= n - 3:
        return None
    after = (np.arange(n) >= k).astype(float)
    found = [c for c, owner in zip(st.base[_FIXED:], st.owners, strict=True) if owner is not None]
    x = np.column_stack([*st.base[:_FIXED], *found, st.shares[j] * after])
    fitted = _robust_fit(x, st.rho, th.outlier_sigmas)
    if fitted is None:
        return None
    beta, se = float(fitted[0][-1]), float(fitted[1][-1])
    if beta + 2 * se >= implied / 2:
        return None
    return {"beta": round(beta, 4), "se": round(se, 4), "implied_beta": round(implied, 4)}


def _step(
    area: BalanceArea,
    days: Sequence[date],
    idx: np.ndarray,
    st: _Area,
    k: int,
    found: tuple[int, float, float, float],
) -> AreaStep:
    j, beta, z, odds = found
    before = np.arange(st.rho.size) < k
    return AreaStep(
        instrument=st.names[j],
        area=area.id,
        meter=area.meter,
        day=days[int(idx[k])],
        ratio=1.0 / (1.0 + beta),
        z=z,
        odds=odds,
        loss_percent=float(np.median(st.rho[before])) * 100,
        members=len(st.names),
        days_before=int(before.sum()),
        days_after=int(st.rho.size - k),
    )


def _revisit(
    area: BalanceArea,
    days: Sequence[date],
    idx: np.ndarray,
    st: _Area,
    th: BalanceThresholds,
    out: list[AreaStep],
) -> None:
    """Attribute again the rises set aside as changes of their own (``owners`` None), each
    beside everything else in the model; one that a member explains now becomes its."""
    for i, owner in enumerate(st.owners):
        if owner is not None or len(out) >= th.max_per_area:
            continue
        col = _FIXED + i
        k = st.splits[i]
        others = np.column_stack(st.base[:col] + st.base[col + 1 :])
        fitted = _robust_fit(np.column_stack([others, st.base[col]]), st.rho, th.outlier_sigmas)
        if fitted is None or fitted[0][-1] <= 0:
            continue
        found = _attribute(area, st, others, k, fitted[2], th, out)
        if found is None:
            continue
        after = (np.arange(st.rho.size) >= k).astype(float)
        st.base[col] = st.shares[found[0]] * after
        st.owners[i] = len(out)
        out.append(_step(area, days, idx, st, k, found))


def _refit(st: _Area, out: list[AreaStep], th: BalanceThresholds) -> list[AreaStep]:
    """The ratios of the members found, fitted together (each was found beside the steps
    found before it only)."""
    if len(out) < 2:
        return out
    fitted = _robust_fit(np.column_stack(st.base), st.rho, th.outlier_sigmas)
    if fitted is None:
        return out
    coef = fitted[0]
    for col, owner in enumerate(st.owners, start=_FIXED):
        if owner is not None and coef[col] > 0:
            out[owner] = replace(out[owner], ratio=1.0 / (1.0 + float(coef[col])))
    return out


def _stopped(st: _Area, k: int) -> bool:
    """Whether a member's share is (nearly) nil on most days from ``k`` on although it was
    not before: a register that stopped."""
    pos = np.arange(st.rho.size)
    before, after = st.shares[:, pos < k], st.shares[:, pos >= k]
    level = np.median(before, axis=1)
    nil = (after <= 0.02 * level[:, None]).mean(axis=1)
    return bool(np.any((level > 0) & (nil >= 0.8)))


def _until(st: _Area, k: int) -> _Area:
    """``st`` cut to its first ``k`` days (and the changes found before them)."""
    keep = [i for i, s in enumerate(st.splits) if s < k - 1]
    return _Area(
        st.names,
        st.shares[:, :k],
        st.rho[:k],
        st.t[:k],
        [c[:k] for c in st.base[:_FIXED]] + [st.base[_FIXED + i][:k] for i in keep],
        [st.splits[i] for i in keep],
        [st.owners[i] for i in keep],
    )


def _attribute(
    area: BalanceArea,
    st: _Area,
    base: np.ndarray,
    k: int,
    keep: np.ndarray,
    th: BalanceThresholds,
    found: Sequence[AreaStep],
) -> tuple[int, float, float, float] | None:
    """The member whose lost share makes the rise of the losses at ``k``: (its index,
    ``beta``, z, twice the log-likelihood ratio against the next member), or None.

    The losses' step follows the day-to-day pattern of the share the member no longer
    counts: per member, ``rho = base + beta s_j [after]`` by least squares over the days
    the area's fit kept; the best fit, if much better than the next, significant, large
    enough, persistent, and consistent with the member's own share falling."""
    n = st.rho.size
    pos = np.arange(n)
    after = (pos >= k).astype(float)
    taken = {s.instrument for s in found}
    trend = np.column_stack([np.ones(n), st.t, after])
    # (residual sum of squares, member, beta, z, twice the log-likelihood of its own share)
    scored: list[tuple[float, int, float, float, float]] = []
    sigma2 = math.inf
    for j, name in enumerate(st.names):
        if name in taken:
            continue
        x = np.column_stack([base, st.shares[j] * after])
        got = _fit(x[keep], st.rho[keep])
        own = _fit(trend[keep], st.shares[j][keep])
        if got is None or own is None:
            continue
        e = st.rho[keep] - x[keep] @ got[0]
        sse = float(e @ e)
        sigma2 = min(sigma2, sse / max(1, int(keep.sum()) - x.shape[1]))
        beta = float(got[0][-1])
        z = beta / float(got[1][-1]) if got[1][-1] > 0 else 0.0
        # the member's own share: its fall (beside its trend), against the fall ``beta``
        # implies; twice the log-likelihood of "this member fell" over "it did not"
        level = float(np.mean(st.shares[j][keep & (pos < k)])) if (keep & (pos < k)).any() else 0
        if level <= 0 or own[1][2] <= 0:
            continue
        fell, fell_se = -float(own[0][2]) / level, float(own[1][2]) / level
        implied = beta / (1 + beta) if beta > 0 else 0.0
        share_ll = (fell**2 - (fell - implied) ** 2) / fell_se**2
        scored.append((sse, j, beta, z, share_ll))
    if not scored:
        return None
    ranked = sorted(scored, key=lambda f: f[0] / sigma2 - f[4])
    sse, j, beta, z, share_ll = ranked[0]
    odds = (
        (ranked[1][0] / sigma2 - ranked[1][4]) - (sse / sigma2 - share_ll)
        if len(ranked) > 1
        else math.inf
    )
    log.debug(
        "balance %s: %s beta %.4f z %.1f odds %.1f share %.1f",
        area.id,
        st.names[j],
        beta,
        z,
        odds,
        share_ll,
    )
    if odds < th.attribution or z < th.z_min or beta <= 0 or share_ll < th.own_share_min:
        return None
    ratio = 1.0 / (1.0 + beta)
    # a register that stopped is the stuck detector's; a small step is no finding
    if ratio < 0.1 or 1 - ratio < th.min_fraction:
        return None
    if not _holds(area, st, base, k, keep, j, beta, th):
        return None
    return j, beta, z, odds


def _holds(
    area: BalanceArea,
    st: _Area,
    base: np.ndarray,
    k: int,
    keep: np.ndarray,
    j: int,
    beta: float,
    th: BalanceThresholds,
) -> bool:
    """Whether member ``j``'s step ``beta`` at ``k`` is persistent (the per-day beta of
    both halves of the days after, every valid day and not only those the fit kept, at
    least half of it) and a step, not a drift (beside the member's own error growing
    linearly in time, as a meter drifting out of its MPE makes a ramp of the losses in its
    share, the step holds)."""
    pos = np.arange(st.rho.size)
    after = (pos >= k).astype(float)
    sj = st.shares[j]
    refit = _fit(np.column_stack([base, sj * after])[keep], st.rho[keep])
    if refit is None:
        return False
    coef = refit[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_day = (st.rho - base @ coef[:-1]) / sj
    later = np.flatnonzero((pos >= k) & (sj > 0))
    if later.size < 4:
        return False
    half = later.size // 2
    halves = (float(np.median(per_day[later[:half]])), float(np.median(per_day[later[half:]])))
    beside = _fit(np.column_stack([base, sj * after, sj, sj * st.t])[keep], st.rho[keep])
    if beside is None:
        return False
    b2, se2 = float(beside[0][-3]), float(beside[1][-3])
    log.debug(
        "balance %s: halves %.4f %.4f; beside a drift %.4f (z %.1f)",
        area.id,
        *halves,
        b2,
        b2 / se2 if se2 else 0.0,
    )
    return min(halves) >= beta / 2 and se2 > 0 and b2 >= beta / 2 and b2 / se2 >= th.z_trend_min


def _robust_fit(
    x: np.ndarray, y: np.ndarray, sigmas: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Least squares, then again without the days farther than ``sigmas`` robust standard
    deviations from the first fit: (coefficients, standard errors, days kept)."""
    first = _fit(x, y)
    if first is None:
        return None
    e = y - x @ first[0]
    mad = float(np.median(np.abs(e - np.median(e)))) * _MAD_TO_SIGMA
    keep = np.abs(e) <= sigmas * mad if mad > 0 else np.ones(y.size, dtype=bool)
    second = _fit(x[keep], y[keep])
    if second is None:
        return None
    return second[0], second[1], keep


def balance_findings_of(
    table: pa.Table,
    areas: Sequence[BalanceArea],
    *,
    interval: bool,
    th: BalanceThresholds = BalanceThresholds(),
    claims: Mapping[str, tuple[date, float]] | None = None,
) -> BalanceFindings:
    """The findings of one category's ``daily_consumption`` (whole days) in ``areas``
    (their meter and members of that category); ``interval``: the category's registers
    read at a fixed interval (a day without a reading is a lost day, not an idle one);
    ``claims`` as :func:`area_findings` takes them."""
    steps: list[AreaStep] = []
    contradicted: dict[str, dict[str, Any]] = {}
    if not areas or table.num_rows == 0:
        return BalanceFindings(steps, contradicted)
    days, series = _daily(table)
    for area in areas:
        quantities = {q for (i, q) in series if i == area.meter}
        for q in sorted(quantities):
            got = [(m, series.get((m, q))) for m in area.members]
            mine = {m: s for m, s in got if s is not None}
            if len(mine) < 2:
                continue
            cons: dict[str, np.ndarray] = {}
            valid = np.ones(len(days), dtype=bool)
            for name, (last, first_day) in [(area.meter, series[(area.meter, q)]), *mine.items()]:
                c, present = _consumption(last, first_day)
                cons[name] = c
                # a register read but not moving all day (stopped, not idle: an idle
                # transaction register has no row) carries no balance either
                moved = ~(present & (np.nan_to_num(c, nan=-1.0) == 0))
                valid &= np.isfinite(c) & (np.nan_to_num(c, nan=-1.0) >= 0) & moved
                if interval:
                    valid &= present
                    valid[1:] &= present[:-1]
            meter = cons.pop(area.meter)
            found = area_findings(area, days, meter, cons, valid, th, claims)
            steps += found.steps
            contradicted.update(found.contradicted)
    return BalanceFindings(sorted(steps, key=lambda s: s.instrument), contradicted)
