"""Maintenance statistics against hand-computed examples."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.services.maintenance import (
    fit_drift,
    kaplan_meier,
    median_survival,
    sen_interval,
)
from metrocloud.services.monitoring import DailyError, theil_sen

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_theil_sen_is_the_median_of_pairwise_slopes() -> None:
    # slopes: (0,1)->1, (0,2)->1, (0,3)->10/3, (1,2)->1, (1,3)->4.5, (2,3)->8: median 2.1667
    slope, intercept = theil_sen([0, 1, 2, 3], [0, 1, 2, 10])
    assert slope == pytest.approx((1 + 10 / 3) / 2)
    # intercept: median of y - slope x = [0, -1.1667, -2.3333, 3.5] -> -0.5833
    assert intercept == pytest.approx((-1.0 - 1 / 6 + 0) / 2)
    # an outlier does not move a clean line
    assert theil_sen([0, 1, 2, 3, 4], [1, 3, 5, 7, 100]) == (2.0, 1.0)
    with pytest.raises(InvalidInput):
        theil_sen([1, 1], [0, 1])


def test_sen_interval_brackets_the_slope_and_narrows_with_data() -> None:
    rng = random.Random(1)
    xs = list(range(10))
    ys = [2 * x + rng.gauss(0, 0.5) for x in xs]
    lo, hi = sen_interval(xs, ys)
    assert lo < theil_sen(xs, ys)[0] < hi
    assert 1.5 < lo < 2 < hi < 2.5
    xs2 = list(range(40))
    ys2 = [2 * x + rng.gauss(0, 0.5) for x in xs2]
    lo2, hi2 = sen_interval(xs2, ys2)
    assert hi2 - lo2 < hi - lo


def _textbook_sen_interval(
    xs: list[float], ys: list[float], level: float = 0.95
) -> tuple[float, float]:
    """Sen (1968) as written: every pairwise slope, sorted, two order statistics."""
    n = len(xs)
    slopes = sorted(
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(n)
        for j in range(i + 1, n)
        if xs[j] != xs[i]
    )
    big_n = len(slopes)
    c = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    m1, m2 = round((big_n - c) / 2), round((big_n + c) / 2)
    return slopes[min(big_n - 1, max(0, m1 - 1))], slopes[min(big_n - 1, max(0, m2))]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400),
            st.floats(min_value=-50, max_value=50, allow_nan=False),
        ),
        min_size=2,
        max_size=60,
    ),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_sen_interval_equals_the_textbook_order_statistics(
    points: list[tuple[int, float]], level: float
) -> None:
    xs = [float(x) / 7 for x, _ in points]  # repeated x (same day twice) included
    ys = [y for _, y in points]
    if len(set(xs)) < 2:
        with pytest.raises(InvalidInput):
            sen_interval(xs, ys, level)
        return
    assert sen_interval(xs, ys, level) == _textbook_sen_interval(xs, ys, level)


def test_kaplan_meier_hand_computed() -> None:
    # times 2, 3+, 4, 4, 5+, 7: S(2) = 5/6; at 3 one censored; S(4) = 5/6 * (1 - 2/4) = 5/12;
    # 5 censored; S(7) = 5/12 * (1 - 1/1) = 0
    curve = kaplan_meier([2, 3, 4, 4, 5, 7], [True, False, True, True, False, True])
    assert [(p.t, p.at_risk, p.failures, p.censored) for p in curve] == [
        (2, 6, 1, 0),
        (3, 5, 0, 1),
        (4, 4, 2, 0),
        (5, 2, 0, 1),
        (7, 1, 1, 0),
    ]
    assert [p.survival for p in curve] == pytest.approx([5 / 6, 5 / 6, 5 / 12, 5 / 12, 0.0])
    assert median_survival(curve) == 4
    assert kaplan_meier([1, 2], [False, False])[-1].survival == 1.0
    with pytest.raises(InvalidInput):
        kaplan_meier([1], [True, False])


def _errors(e0: float, rate: float, days: int) -> list[DailyError]:
    return [DailyError(T0 + timedelta(days=d), e0 + rate * d / 365, 10.0) for d in range(days)]


def test_fit_drift_predicts_the_crossing_and_the_reverification() -> None:
    # 0.5 % + 36.5 %/year reaches the 4 % MPE after 3.5 / 0.1 = 35 days
    est = fit_drift("X", _errors(0.5, 36.5, 20), 4.0, margin=timedelta(days=7))
    assert est.drift_percent_per_year == pytest.approx(36.5)
    assert est.drift_low <= 36.5 <= est.drift_high
    assert est.predicted_crossing == pytest.approx(
        T0 + timedelta(days=35), abs=timedelta(seconds=1)
    )
    assert est.recommended_reverification == date(2026, 1, 29)
    # the legal period wins when it ends first; a negative drift crosses -MPE
    early = fit_drift("X", _errors(0.5, 36.5, 20), 4.0, verified_until=date(2026, 1, 3))
    assert early.recommended_reverification == date(2026, 1, 3)
    down = fit_drift("Y", _errors(-1.0, -36.5, 10), 4.0)
    assert down.predicted_crossing == pytest.approx(
        T0 + timedelta(days=30), abs=timedelta(seconds=1)
    )
    flat = fit_drift("Z", _errors(0.1, 0.0, 10), 4.0)
    assert flat.predicted_crossing is None and flat.recommended_reverification is None
    with pytest.raises(InvalidInput):
        fit_drift("X", _errors(0, 1, 1), 4.0)
