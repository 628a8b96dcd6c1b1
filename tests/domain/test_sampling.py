"""Sampling plans: MID modules F/F1 against an independent brute force, ISO 2859-1 tables."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.sampling import (
    Decision,
    Scheme,
    code_letter,
    decide,
    iso2859_plan,
    mid_defectives,
    mid_f_plan,
    p_accept,
    p_accept_binomial,
    p_accept_hypergeometric,
    table_2a,
)

# --- an independent reference -------------------------------------------------------------
# Drawing the sample one instrument at a time: the distribution of non-conforming
# instruments found after i draws, as exact fractions, extended draw by draw. No binomial
# coefficients, no cumulative sums shared with the implementation.

Dist = dict[int, Fraction]


def draw_without_replacement(dist: Dist, drawn: int, lot: int, bad: int) -> Dist:
    out: Dist = {}
    left = lot - drawn
    for found, prob in dist.items():
        p_bad = Fraction(bad - found, left)
        if p_bad:
            out[found + 1] = out.get(found + 1, Fraction(0)) + prob * p_bad
        if p_bad != 1:
            out[found] = out.get(found, Fraction(0)) + prob * (1 - p_bad)
    return out


def draw_with_replacement(dist: Dist, p: Fraction) -> Dist:
    out: Dist = {}
    for found, prob in dist.items():
        out[found + 1] = out.get(found + 1, Fraction(0)) + prob * p
        out[found] = out.get(found, Fraction(0)) + prob * (1 - p)
    return out


def at_most(dist: Dist, c: int) -> Fraction:
    return sum((prob for found, prob in dist.items() if found <= c), Fraction(0))


def brute_force(lot: int | None) -> tuple[int, int, Fraction, Fraction]:
    """Smallest n, then smallest c, with P(acc | 1 %) >= 0.95 and P(acc | 7 %) <= 0.05."""
    if lot is not None:
        d1 = next(d for d in range(lot, -1, -1) if 100 * d <= lot)  # largest d <= 1 % of N
        d7 = next(d for d in range(lot + 1) if 100 * d >= 7 * lot)  # smallest d >= 7 % of N
    good: Dist = {0: Fraction(1)}
    bad: Dist = {0: Fraction(1)}
    for n in count(1):
        if lot is None:
            good = draw_with_replacement(good, Fraction(1, 100))
            bad = draw_with_replacement(bad, Fraction(7, 100))
        else:
            good = draw_without_replacement(good, n - 1, lot, d1)
            bad = draw_without_replacement(bad, n - 1, lot, d7)
        for c in range(n + 1):
            at_7 = at_most(bad, c)
            if at_7 > Fraction(5, 100):
                break  # more c only accepts more
            at_1 = at_most(good, c)
            if at_1 >= Fraction(95, 100):
                return n, c, at_1, at_7
    raise AssertionError("unreachable")


def check_against_brute_force(lot: int | None) -> None:
    plan = mid_f_plan(lot)
    n, c, at_1, at_7 = brute_force(lot)
    assert (plan.n, plan.c) == (n, c)
    assert plan.p_accept_at_1pct == at_1  # exact fractions
    assert plan.p_accept_at_7pct == at_7
    assert plan.p_accept_at_1pct >= Fraction(95, 100)
    assert plan.p_accept_at_7pct <= Fraction(5, 100)


# --- MID modules F and F1 -----------------------------------------------------------------


def test_large_lot_plan_is_the_smallest_binomial_plan() -> None:
    check_against_brute_force(None)
    plan = mid_f_plan()
    assert (plan.scheme, plan.lot_size, plan.n, plan.c) == (Scheme.MID_F, None, 109, 3)
    assert not plan.full_inspection
    assert abs(float(plan.p_accept_at_1pct) - 0.9756853117757602) < 1e-12
    assert abs(float(plan.p_accept_at_7pct) - 0.04846783946119207) < 1e-12


def test_no_smaller_large_lot_plan_exists() -> None:
    plan = mid_f_plan()
    for n in range(1, plan.n):
        for c in range(n + 1):
            ok_1 = p_accept_binomial(n, c, Fraction(1, 100)) >= Fraction(95, 100)
            ok_7 = p_accept_binomial(n, c, Fraction(7, 100)) <= Fraction(5, 100)
            assert not (ok_1 and ok_7), (n, c)


@pytest.mark.parametrize(
    "lot", [*range(1, 121), 149, 150, 151, 199, 200, 201, 299, 300, 999, 1000, 1001, 5000]
)
def test_finite_lot_plan_matches_brute_force(lot: int) -> None:
    check_against_brute_force(lot)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=10, max_value=5000))
def test_finite_lot_plan_matches_brute_force_for_any_lot(lot: int) -> None:
    check_against_brute_force(lot)


@pytest.mark.parametrize("lot", range(1, 15))
def test_small_lots_need_full_inspection(lot: int) -> None:
    plan = mid_f_plan(lot)
    assert (plan.n, plan.c, plan.full_inspection) == (lot, 0, True)
    assert (plan.p_accept_at_1pct, plan.p_accept_at_7pct) == (Fraction(1), Fraction(0))


def test_first_lot_that_can_be_sampled() -> None:
    plan = mid_f_plan(15)
    assert (plan.n, plan.c, plan.full_inspection) == (12, 0, False)


@given(st.integers(min_value=1, max_value=10**7))
def test_worst_case_defectives_bracket_the_percentages(lot: int) -> None:
    d1, d7 = mid_defectives(lot)
    assert d1 <= Fraction(lot, 100) < d1 + 1
    assert d7 - 1 < Fraction(7 * lot, 100) <= d7
    assert d1 < d7


def test_known_plans_of_some_lot_sizes() -> None:
    assert [(mid_f_plan(n).n, mid_f_plan(n).c) for n in (20, 99, 100, 500, 1000, 10**6)] == [
        (16, 0),
        (34, 0),
        (51, 1),
        (83, 2),
        (86, 2),
        (109, 3),
    ]


@pytest.mark.parametrize("lot", [0, -5, True, 2.5])
def test_bad_lot_size_is_refused_naming_the_rule(lot: object) -> None:
    with pytest.raises(InvalidInput) as info:
        mid_f_plan(lot)  # type: ignore[arg-type]
    assert "lot size" in str(info.value)
    assert info.value.rule is not None and "module F" in info.value.rule


# --- probabilities ------------------------------------------------------------------------


def test_hypergeometric_example_by_hand() -> None:
    # 10 instruments, 2 bad, draw 3: P(0 bad) = C(8,3)/C(10,3) = 56/120
    assert p_accept_hypergeometric(3, 0, 10, 2) == Fraction(56, 120)
    assert p_accept_hypergeometric(3, 1, 10, 2) == Fraction(56 + 2 * 28, 120)
    assert p_accept_hypergeometric(3, 3, 10, 2) == 1


def test_binomial_example_by_hand() -> None:
    assert p_accept_binomial(2, 0, Fraction(1, 10)) == Fraction(81, 100)
    assert p_accept_binomial(2, 1, Fraction(1, 10)) == Fraction(99, 100)


@given(
    st.integers(min_value=1, max_value=300).flatmap(
        lambda lot: st.tuples(
            st.just(lot),
            st.integers(min_value=1, max_value=lot),
            st.integers(min_value=0, max_value=lot),
        )
    )
)
def test_acceptance_grows_with_c_and_falls_with_defectives(args: tuple[int, int, int]) -> None:
    lot, n, bad = args
    probs = [p_accept_hypergeometric(n, c, lot, bad) for c in range(n + 1)]
    assert probs == sorted(probs) and probs[-1] == 1
    if bad < lot:
        assert p_accept_hypergeometric(n, 0, lot, bad + 1) <= probs[0]


def test_p_accept_uses_the_mid_points() -> None:
    assert p_accept(86, 2, 1000) == (
        p_accept_hypergeometric(86, 2, 1000, 10),
        p_accept_hypergeometric(86, 2, 1000, 70),
    )
    assert p_accept(109, 3, None) == (
        p_accept_binomial(109, 3, Fraction(1, 100)),
        p_accept_binomial(109, 3, Fraction(7, 100)),
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: p_accept_binomial(0, 0, Fraction(1, 2)),
        lambda: p_accept_binomial(3, -1, Fraction(1, 2)),
        lambda: p_accept_binomial(3, 1, Fraction(3, 2)),
        lambda: p_accept_hypergeometric(11, 0, 10, 1),
        lambda: p_accept_hypergeometric(3, 0, 10, 11),
    ],
)
def test_bad_probability_arguments_are_invalid_input(call: object) -> None:
    with pytest.raises(InvalidInput):
        call()  # type: ignore[operator]


# --- the lot decision ---------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=109))
def test_decide_accepts_up_to_c_and_rejects_from_re(found: int) -> None:
    plan = mid_f_plan()
    expected = Decision.ACCEPT if found <= 3 else Decision.REJECT
    assert decide(plan, found) is expected


def test_decide_on_an_iso_plan() -> None:
    plan = iso2859_plan(1000, "1.0")  # J: n 80, Ac 2, Re 3
    assert decide(plan, 2) is Decision.ACCEPT
    assert decide(plan, plan.re) is Decision.REJECT


@pytest.mark.parametrize("found", [-1, 110, True, 1.0])
def test_decide_refuses_impossible_counts(found: object) -> None:
    with pytest.raises(InvalidInput) as info:
        decide(mid_f_plan(), found)  # type: ignore[arg-type]
    assert "109" in str(info.value)


# --- ISO 2859-1 ---------------------------------------------------------------------------
# ISO 2859-1:1999 Table 1, general inspection level II, typed from the NIBS/WBDG
# reproduction of MIL-STD-105E Table I (identical): (smallest lot, largest lot, letter).
TABLE_1 = [
    (2, 8, "A"),
    (9, 15, "B"),
    (16, 25, "C"),
    (26, 50, "D"),
    (51, 90, "E"),
    (91, 150, "F"),
    (151, 280, "G"),
    (281, 500, "H"),
    (501, 1200, "J"),
    (1201, 3200, "K"),
    (3201, 10000, "L"),
    (10001, 35000, "M"),
    (35001, 150000, "N"),
    (150001, 500000, "P"),
    (500001, 10**9, "Q"),
]

AQLS = ["0.65", "1.0", "1.5", "2.5", "4.0", "6.5"]
# ISO 2859-1:1999 Table 2-A, normal inspection, with every arrow already followed by hand:
# letter -> per AQL (0.65 ... 6.5) the plan used as (n, Ac, Re).
RESOLVED_2A: dict[str, list[tuple[int, int, int]]] = {
    "A": [(20, 0, 1), (13, 0, 1), (8, 0, 1), (5, 0, 1), (3, 0, 1), (2, 0, 1)],
    "B": [(20, 0, 1), (13, 0, 1), (8, 0, 1), (5, 0, 1), (3, 0, 1), (2, 0, 1)],
    "C": [(20, 0, 1), (13, 0, 1), (8, 0, 1), (5, 0, 1), (3, 0, 1), (8, 1, 2)],
    "D": [(20, 0, 1), (13, 0, 1), (8, 0, 1), (5, 0, 1), (13, 1, 2), (8, 1, 2)],
    "E": [(20, 0, 1), (13, 0, 1), (8, 0, 1), (20, 1, 2), (13, 1, 2), (13, 2, 3)],
    "F": [(20, 0, 1), (13, 0, 1), (32, 1, 2), (20, 1, 2), (20, 2, 3), (20, 3, 4)],
    "G": [(20, 0, 1), (50, 1, 2), (32, 1, 2), (32, 2, 3), (32, 3, 4), (32, 5, 6)],
    "H": [(80, 1, 2), (50, 1, 2), (50, 2, 3), (50, 3, 4), (50, 5, 6), (50, 7, 8)],
    "J": [(80, 1, 2), (80, 2, 3), (80, 3, 4), (80, 5, 6), (80, 7, 8), (80, 10, 11)],
    "K": [(125, 2, 3), (125, 3, 4), (125, 5, 6), (125, 7, 8), (125, 10, 11), (125, 14, 15)],
    "L": [(200, 3, 4), (200, 5, 6), (200, 7, 8), (200, 10, 11), (200, 14, 15), (200, 21, 22)],
    "M": [(315, 5, 6), (315, 7, 8), (315, 10, 11), (315, 14, 15), (315, 21, 22), (200, 21, 22)],
    "N": [(500, 7, 8), (500, 10, 11), (500, 14, 15), (500, 21, 22), (315, 21, 22), (200, 21, 22)],
    "P": [
        (800, 10, 11),
        (800, 14, 15),
        (800, 21, 22),
        (500, 21, 22),
        (315, 21, 22),
        (200, 21, 22),
    ],
    "Q": [
        (1250, 14, 15),
        (1250, 21, 22),
        (800, 21, 22),
        (500, 21, 22),
        (315, 21, 22),
        (200, 21, 22),
    ],
    "R": [
        (2000, 21, 22),
        (1250, 21, 22),
        (800, 21, 22),
        (500, 21, 22),
        (315, 21, 22),
        (200, 21, 22),
    ],
}
SIZES = {"A": 2, "B": 3, "C": 5, "D": 8, "E": 13, "F": 20, "G": 32, "H": 50, "J": 80}
SIZES |= {"K": 125, "L": 200, "M": 315, "N": 500, "P": 800, "Q": 1250, "R": 2000}


@pytest.mark.parametrize(("low", "high", "letter"), TABLE_1)
def test_table_1_code_letter_at_both_ends_of_each_range(low: int, high: int, letter: str) -> None:
    assert code_letter(low) == letter
    assert code_letter(high) == letter


@pytest.mark.parametrize(
    ("letter", "column"),
    [(letter, column) for letter in RESOLVED_2A for column in range(len(AQLS))],
)
def test_table_2a_every_letter_and_aql(letter: str, column: int) -> None:
    plan_letter, n, ac, re = table_2a(letter, AQLS[column])
    assert (n, ac, re) == RESOLVED_2A[letter][column]
    assert SIZES[plan_letter] == n
    assert re == ac + 1


@pytest.mark.parametrize(("low", "high", "letter"), TABLE_1)
@pytest.mark.parametrize("column", range(len(AQLS)))
def test_iso_plan_for_lot_sizes(low: int, high: int, letter: str, column: int) -> None:
    n, ac, re = RESOLVED_2A[letter][column]
    for lot in (low, high):
        plan = iso2859_plan(lot, AQLS[column])
        assert (plan.code_letter, plan.c, plan.re) == (letter, ac, re)
        assert plan.n == min(n, lot)  # sample size >= lot size: 100 % inspection
        assert plan.full_inspection == (n >= lot)
        assert plan.aql == Decimal(AQLS[column])


def test_arrow_changes_the_sample_size_too() -> None:
    down = iso2859_plan(20, "6.5")  # C shows ↓: first plan below is D
    assert (down.code_letter, down.plan_letter, down.n, down.c, down.re) == ("C", "D", 8, 1, 2)
    up = iso2859_plan(10, "6.5")  # B shows ↑: first plan above is A
    assert (up.code_letter, up.plan_letter, up.n, up.c, up.re) == ("B", "A", 2, 0, 1)


def test_iso_plan_probabilities_use_the_mid_points() -> None:
    plan = iso2859_plan(1000, "1.0")
    assert (plan.p_accept_at_1pct, plan.p_accept_at_7pct) == p_accept(80, 2, 1000)
    assert plan.as_dict() == {
        "scheme": "iso2859",
        "lot_size": 1000,
        "n": 80,
        "c": 2,
        "p_accept_at_1pct": float(plan.p_accept_at_1pct),
        "p_accept_at_7pct": float(plan.p_accept_at_7pct),
        "code_letter": "J",
        "re": 3,
    }


@pytest.mark.parametrize(
    ("aql", "value"),
    [("1", "1.0"), ("1.00", "1.0"), (Decimal("4"), "4.0"), (6.5, "6.5"), (" 0.65 ", "0.65")],
)
def test_equal_aql_spellings_are_accepted(aql: str | Decimal | float, value: str) -> None:
    assert iso2859_plan(1000, aql).aql == Decimal(value)


@pytest.mark.parametrize("aql", ["0.4", "10", "abc", "", "NaN", "inf"])
def test_other_aqls_are_refused_naming_the_allowed_ones(aql: str) -> None:
    with pytest.raises(InvalidInput) as info:
        iso2859_plan(1000, aql)
    assert "0.65, 1.0, 1.5, 2.5, 4.0, 6.5" in str(info.value)
    assert info.value.rule is not None and "ISO 2859-1" in info.value.rule


@pytest.mark.parametrize("lot", [1, 0, -3])
def test_lot_sizes_below_table_1_are_refused(lot: int) -> None:
    with pytest.raises(InvalidInput, match="Table"):
        iso2859_plan(lot, "1.0")


def test_unknown_code_letter_is_refused() -> None:
    with pytest.raises(InvalidInput, match="A, B, C"):
        table_2a("I", "1.0")


@given(st.integers(min_value=2, max_value=10**7), st.sampled_from(AQLS))
def test_iso_plan_never_samples_more_than_the_lot(lot: int, aql: str) -> None:
    plan = iso2859_plan(lot, aql)
    assert 1 <= plan.n <= lot
    assert 0 <= plan.c < plan.re <= plan.n + 1
    assert 0 <= plan.p_accept_at_7pct <= plan.p_accept_at_1pct <= 1
