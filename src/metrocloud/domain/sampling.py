"""Statistical sampling of lots: MID modules F and F1, and ISO 2859-1 single sampling.

Pure, exact arithmetic: every probability is a :class:`fractions.Fraction` computed from
integer binomial coefficients (``math.comb``), so no float rounding can move a plan across
one of the legal limits. See docs/sampling.md for the method, the definitions and sources.

MID (Directive 2014/32/EU, Annex II, module F point 5.3 and module F1 point 6.3): the
sampling system shall ensure

- a level of quality corresponding to a probability of acceptance of 95 % with a
  non-conformity of less than 1 %, and
- a limit quality corresponding to a probability of acceptance of 5 % with a
  non-conformity of less than 7 %.

:func:`mid_f_plan` returns the single sampling plan (n, c) with the smallest n (then the
smallest c) that accepts a lot at the 1 % point with probability >= 95 % and a lot at the
7 % point with probability <= 5 %.

- Finite lot of N instruments: hypergeometric model, with D1 = floor(0.01 N) non-conforming
  instruments at the producer's point and D7 = ceil(0.07 N) at the consumer's point. Both
  choices are the worst case for the party the condition protects: the acceptance
  probability falls as defectives rise, so the lot with at most 1 % defectives that is
  hardest to accept has floor(0.01 N), and the lot with at least 7 % defectives that is
  hardest to reject has ceil(0.07 N).
- No lot size (a lot so large that drawing without replacement does not matter):
  binomial model with p = 1/100 and p = 7/100.

A plan always exists for a finite lot: n = N with c = D1 inspects every instrument, accepts
every lot with D1 defectives and rejects every lot with D7 > D1. When the search arrives
there, the answer is that 100 % inspection (n = N) is needed; :attr:`SamplingPlan.full_inspection`
says so.

ISO 2859-1:1999 (single sampling, normal inspection, general inspection level II): the
sample size code letter from Table 1, the plan from Table 2-A; an arrow in Table 2-A leads
to the first plan below (or above) it, whose sample size replaces that of the code letter;
a sample size equal to or larger than the lot means 100 % inspection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from itertools import count
from types import MappingProxyType

from metrocloud.domain.errors import InvalidInput

__all__ = [
    "AQLS",
    "CODE_LETTERS",
    "ISO_RULE",
    "MID_RULE",
    "P_CONSUMER",
    "P_PRODUCER",
    "SAMPLE_SIZES",
    "Decision",
    "SamplingPlan",
    "Scheme",
    "code_letter",
    "decide",
    "iso2859_plan",
    "mid_defectives",
    "mid_f_plan",
    "p_accept",
    "p_accept_binomial",
    "p_accept_hypergeometric",
    "table_2a",
]

MID_RULE = "MID 2014/32/EU Annex II module F point 5.3 / module F1 point 6.3"
ISO_RULE = "ISO 2859-1:1999 Tables 1 and 2-A (normal inspection, general level II)"

#: non-conforming fraction at the producer's point (accept with >= 95 %)
P_PRODUCER = Fraction(1, 100)
#: non-conforming fraction at the consumer's point (accept with <= 5 %)
P_CONSUMER = Fraction(7, 100)
_MIN_ACCEPT = Fraction(95, 100)
_MAX_ACCEPT = Fraction(5, 100)


class Scheme(StrEnum):
    MID_F = "mid-f"
    ISO2859 = "iso2859"


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingPlan:
    """A single sampling plan: inspect ``n`` of the lot, accept with at most ``c`` found.

    ``p_accept_at_1pct`` and ``p_accept_at_7pct`` are the exact acceptance probabilities at
    the MID points (hypergeometric with D1/D7 for a finite lot, binomial without lot size),
    given for both schemes so that an ISO 2859-1 plan can be compared with MID module F.
    """

    scheme: Scheme
    lot_size: int | None
    n: int
    c: int
    p_accept_at_1pct: Fraction
    p_accept_at_7pct: Fraction
    rule: str
    #: ISO 2859-1: the AQL in percent, the code letter of Table 1 for the lot size, and the
    #: letter of the plan used after following an arrow of Table 2-A
    aql: Decimal | None = None
    code_letter: str | None = None
    plan_letter: str | None = None

    @property
    def re(self) -> int:
        """Rejection number: the lot is rejected when this many or more are found."""
        return self.c + 1

    @property
    def full_inspection(self) -> bool:
        """True when every instrument of the lot is inspected (n = N)."""
        return self.lot_size is not None and self.n >= self.lot_size

    def as_dict(self) -> dict[str, object]:
        """The plan as JSON-ready values (probabilities as floats, exact to 1e-16)."""
        out: dict[str, object] = {
            "scheme": str(self.scheme),
            "lot_size": self.lot_size,
            "n": self.n,
            "c": self.c,
            "p_accept_at_1pct": float(self.p_accept_at_1pct),
            "p_accept_at_7pct": float(self.p_accept_at_7pct),
        }
        if self.scheme is Scheme.ISO2859:
            out["code_letter"] = self.code_letter
            out["re"] = self.re
        return out


# --- acceptance probabilities -------------------------------------------------------------


def _invalid(message: str, *, rule: str) -> InvalidInput:
    """InvalidInput whose message also names the rule (the CLI prints only the message)."""
    return InvalidInput(f"{message} [{rule}]", rule=rule)


def _pow(base: int, exponent: int) -> int:
    """``base ** exponent`` for a non-negative exponent, typed as the int it is."""
    return int(base**exponent)


def _check_plan(n: int, c: int) -> None:
    if n < 1 or c < 0:
        raise _invalid(f"a sampling plan needs n >= 1 and c >= 0, got n={n}, c={c}", rule=MID_RULE)


def p_accept_binomial(n: int, c: int, p: Fraction) -> Fraction:
    """P(X <= c) for X ~ Binomial(n, p), exactly (a lot too large to matter)."""
    _check_plan(n, c)
    if not 0 <= p <= 1:
        raise _invalid(f"a non-conforming fraction lies in [0, 1], got {p}", rule=MID_RULE)
    a, b = p.numerator, p.denominator
    total = sum(math.comb(n, k) * _pow(a, k) * _pow(b - a, n - k) for k in range(min(c, n) + 1))
    return Fraction(total, _pow(b, n))


def p_accept_hypergeometric(n: int, c: int, lot_size: int, defectives: int) -> Fraction:
    """P(X <= c) when n of ``lot_size`` instruments, ``defectives`` of them bad, are drawn."""
    _check_plan(n, c)
    if not 0 <= defectives <= lot_size or n > lot_size:
        raise _invalid(
            f"need 0 <= defectives <= lot size and n <= lot size, got n={n}, "
            f"defectives={defectives}, lot size={lot_size}",
            rule=MID_RULE,
        )
    good = lot_size - defectives
    total = sum(math.comb(defectives, k) * math.comb(good, n - k) for k in range(min(c, n) + 1))
    return Fraction(total, math.comb(lot_size, n))


def mid_defectives(lot_size: int) -> tuple[int, int]:
    """(D1, D7) = (floor(0.01 N), ceil(0.07 N)): the worst-case lots at the MID points."""
    _check_lot_size(lot_size, MID_RULE)
    return lot_size // 100, -(-7 * lot_size // 100)


def p_accept(n: int, c: int, lot_size: int | None) -> tuple[Fraction, Fraction]:
    """Acceptance probabilities of (n, c) at the MID 1 % and 7 % points."""
    if lot_size is None:
        return p_accept_binomial(n, c, P_PRODUCER), p_accept_binomial(n, c, P_CONSUMER)
    d1, d7 = mid_defectives(lot_size)
    n = min(n, lot_size)
    return (
        p_accept_hypergeometric(n, c, lot_size, d1),
        p_accept_hypergeometric(n, c, lot_size, d7),
    )


def _check_lot_size(lot_size: int, rule: str, minimum: int = 1) -> None:
    if isinstance(lot_size, bool) or not isinstance(lot_size, int) or lot_size < minimum:
        raise _invalid(f"the lot size must be an integer >= {minimum}, got {lot_size!r}", rule=rule)


# --- MID modules F and F1 -----------------------------------------------------------------


class _Cdf:
    """Cumulative acceptance counts of one sample size, extended one c at a time.

    ``num(c) / den`` is P(X <= c); the terms are exact integers, so the comparisons with
    95 % and 5 % below are exact.
    """

    def __init__(self, n: int, lot_size: int | None, defectives: int, p: Fraction) -> None:
        self.n, self.lot_size, self.defectives, self.p = n, lot_size, defectives, p
        if lot_size is None:
            self.den = _pow(p.denominator, n)
        else:
            self.den = math.comb(lot_size, n)
        self.k = -1
        self.num = 0

    def term(self, k: int) -> int:
        if self.lot_size is None:
            a, b = self.p.numerator, self.p.denominator
            return math.comb(self.n, k) * _pow(a, k) * _pow(b - a, self.n - k)
        good = self.lot_size - self.defectives
        return math.comb(self.defectives, k) * math.comb(good, self.n - k)

    def upto(self, c: int) -> int:
        while self.k < c:
            self.k += 1
            self.num += self.term(self.k)
        return self.num


def _smallest_c(n: int, producer: _Cdf) -> int:
    """Smallest c with P(accept) >= 95 % at the producer's point (c = n always does)."""
    c = 0
    while 100 * producer.upto(c) < 95 * producer.den:
        c += 1
    return c


def mid_f_plan(lot_size: int | None = None) -> SamplingPlan:
    """The smallest single sampling plan meeting MID module F / F1 (see the module doc).

    For each n = 1, 2, ... the smallest c meeting the 95 % condition at the 1 % point is the
    only candidate (acceptance at the 7 % point grows with c); the first n whose candidate
    also meets the 5 % condition at the 7 % point wins.
    """
    if lot_size is not None:
        _check_lot_size(lot_size, MID_RULE)
        d1, d7 = mid_defectives(lot_size)
    else:
        d1 = d7 = 0
    sizes = count(1) if lot_size is None else range(1, lot_size + 1)
    for n in sizes:
        producer = _Cdf(n, lot_size, d1, P_PRODUCER)
        consumer = _Cdf(n, lot_size, d7, P_CONSUMER)
        c = _smallest_c(n, producer)
        if 100 * consumer.upto(c) <= 5 * consumer.den:
            return SamplingPlan(
                scheme=Scheme.MID_F,
                lot_size=lot_size,
                n=n,
                c=c,
                p_accept_at_1pct=Fraction(producer.upto(c), producer.den),
                p_accept_at_7pct=Fraction(consumer.upto(c), consumer.den),
                rule=MID_RULE,
            )
    # n = N with c = D1 always qualifies, because D1 < D7 (module docstring)
    raise AssertionError(f"no plan up to 100 % inspection for a lot of {lot_size}")


# --- ISO 2859-1 ---------------------------------------------------------------------------

# ISO 2859-1:1999 Table 1, general inspection level II: (largest lot size, code letter).
# Verified against the public reproductions named in docs/sampling.md.
_TABLE_1: tuple[tuple[int, str], ...] = (
    (8, "A"),
    (15, "B"),
    (25, "C"),
    (50, "D"),
    (90, "E"),
    (150, "F"),
    (280, "G"),
    (500, "H"),
    (1200, "J"),
    (3200, "K"),
    (10000, "L"),
    (35000, "M"),
    (150000, "N"),
    (500000, "P"),
)
_TABLE_1_LAST = "Q"  # 500 001 and over

#: ISO 2859-1:1999 Table 2-A: sample size of each code letter.
SAMPLE_SIZES: Mapping[str, int] = MappingProxyType(
    {
        "A": 2,
        "B": 3,
        "C": 5,
        "D": 8,
        "E": 13,
        "F": 20,
        "G": 32,
        "H": 50,
        "J": 80,
        "K": 125,
        "L": 200,
        "M": 315,
        "N": 500,
        "P": 800,
        "Q": 1250,
        "R": 2000,
    }
)
CODE_LETTERS: tuple[str, ...] = tuple(SAMPLE_SIZES)

#: The AQL columns (percent non-conforming) this module carries.
AQLS: tuple[Decimal, ...] = tuple(Decimal(a) for a in ("0.65", "1.0", "1.5", "2.5", "4.0", "6.5"))

_DOWN, _UP = "↓", "↑"
# ISO 2859-1:1999 Table 2-A (single sampling plans for normal inspection, master table),
# columns AQL 0.65, 1.0, 1.5, 2.5, 4.0, 6.5: "Ac Re", or an arrow: ↓ use the first sampling
# plan below the arrow, ↑ use the first sampling plan above the arrow.
_TABLE_2A: Mapping[str, tuple[str, str, str, str, str, str]] = MappingProxyType(
    {
        #     0.65     1.0      1.5      2.5      4.0      6.5
        "A": ("↓", "↓", "↓", "↓", "↓", "0 1"),
        "B": ("↓", "↓", "↓", "↓", "0 1", "↑"),
        "C": ("↓", "↓", "↓", "0 1", "↑", "↓"),
        "D": ("↓", "↓", "0 1", "↑", "↓", "1 2"),
        "E": ("↓", "0 1", "↑", "↓", "1 2", "2 3"),
        "F": ("0 1", "↑", "↓", "1 2", "2 3", "3 4"),
        "G": ("↑", "↓", "1 2", "2 3", "3 4", "5 6"),
        "H": ("↓", "1 2", "2 3", "3 4", "5 6", "7 8"),
        "J": ("1 2", "2 3", "3 4", "5 6", "7 8", "10 11"),
        "K": ("2 3", "3 4", "5 6", "7 8", "10 11", "14 15"),
        "L": ("3 4", "5 6", "7 8", "10 11", "14 15", "21 22"),
        "M": ("5 6", "7 8", "10 11", "14 15", "21 22", "↑"),
        "N": ("7 8", "10 11", "14 15", "21 22", "↑", "↑"),
        "P": ("10 11", "14 15", "21 22", "↑", "↑", "↑"),
        "Q": ("14 15", "21 22", "↑", "↑", "↑", "↑"),
        "R": ("21 22", "↑", "↑", "↑", "↑", "↑"),
    }
)


def _aql(value: Decimal | str | float) -> Decimal:
    try:
        aql = Decimal(str(value).strip())
    except InvalidOperation:
        aql = Decimal("NaN")
    if not aql.is_finite() or aql not in AQLS:
        allowed = ", ".join(str(a) for a in AQLS)
        raise _invalid(f"AQL must be one of {allowed} (percent), got {value!r}", rule=ISO_RULE)
    return aql


def code_letter(lot_size: int) -> str:
    """Sample size code letter of ISO 2859-1 Table 1, general inspection level II."""
    _check_lot_size(lot_size, ISO_RULE, minimum=2)
    for upper, letter in _TABLE_1:
        if lot_size <= upper:
            return letter
    return _TABLE_1_LAST


def table_2a(letter: str, aql: Decimal | str | float) -> tuple[str, int, int, int]:
    """(plan letter, n, Ac, Re) of Table 2-A for a code letter and AQL, arrows followed."""
    if letter not in SAMPLE_SIZES:
        raise _invalid(
            f"code letter must be one of {', '.join(CODE_LETTERS)}, got {letter!r}",
            rule=ISO_RULE,
        )
    column = AQLS.index(_aql(aql))
    row = CODE_LETTERS.index(letter)
    cell = _TABLE_2A[letter][column]
    while cell in (_DOWN, _UP):
        row += 1 if cell == _DOWN else -1
        cell = _TABLE_2A[CODE_LETTERS[row]][column]
    ac, re = (int(x) for x in cell.split())
    plan_letter = CODE_LETTERS[row]
    return plan_letter, SAMPLE_SIZES[plan_letter], ac, re


def iso2859_plan(lot_size: int, aql: Decimal | str | float) -> SamplingPlan:
    """ISO 2859-1 single sampling plan, normal inspection, general inspection level II."""
    letter = code_letter(lot_size)
    level = _aql(aql)
    plan_letter, n, ac, _ = table_2a(letter, level)
    n = min(n, lot_size)  # "if sample size equals or exceeds lot size, do 100 % inspection"
    at_1, at_7 = p_accept(n, ac, lot_size)
    return SamplingPlan(
        scheme=Scheme.ISO2859,
        lot_size=lot_size,
        n=n,
        c=ac,
        p_accept_at_1pct=at_1,
        p_accept_at_7pct=at_7,
        rule=ISO_RULE,
        aql=level,
        code_letter=letter,
        plan_letter=plan_letter,
    )


# --- the lot decision ---------------------------------------------------------------------


def decide(plan: SamplingPlan, nonconforming_found: int) -> Decision:
    """Accept the lot when at most ``plan.c`` of the ``plan.n`` inspected do not conform."""
    found = nonconforming_found
    if isinstance(found, bool) or not isinstance(found, int) or not 0 <= found <= plan.n:
        raise _invalid(
            f"non-conforming instruments found must be an integer from 0 to the sample size "
            f"{plan.n}, got {found!r}",
            rule=plan.rule,
        )
    return Decision.ACCEPT if found <= plan.c else Decision.REJECT
