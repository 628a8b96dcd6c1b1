"""Re-verification periods: how long a passed verification holds, per member state.

The table is national law; metrocloud ships Germany's (Mess- und Eichverordnung, MessEV,
§ 34 and Anlage 7, as amended by the third amending ordinance of 26 October 2021, BGBl. I
S. 4742) and uses it as the default for member states it has no table for. A node overrides
single categories with the setting ``verification_periods`` (``METROCLOUD_VERIFICATION_
PERIODS='{"MI-003": 16}'``); see docs/verification.md.

German rounding (MessEV § 34 (2)): a period of at least one year ends at the end of the
calendar year in which it ends arithmetically. Member states without that rule end it on the
same day ``years`` later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Final

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput

__all__ = ["DEFAULT_PERIODS", "PERIODS", "Period", "period_for", "verified_until"]

_C = InstrumentCategory
_MESSEV = "MessEV Anlage 7"
_DEFAULT_34 = "MessEV § 34 (1): two years unless Anlage 7 says otherwise"


@dataclass(frozen=True, kw_only=True, slots=True)
class Period:
    """One category's re-verification period and where it comes from."""

    years: int
    source: str


#: Germany: MessEV § 34 and Anlage 7 (the instrument kinds the categories stand for)
_DE: Final[Mapping[str, Period]] = MappingProxyType(
    {
        _C.MI_001: Period(years=6, source=f"{_MESSEV}: water meters (cold and warm) 6 years"),
        _C.MI_002: Period(years=8, source=f"{_MESSEV}: diaphragm (household) gas meters 8 years"),
        _C.MI_003: Period(
            years=8,
            source=f"{_MESSEV}: electronic electricity meters 8 years (induction meters 16)",
        ),
        _C.MI_004: Period(
            years=6,
            source=f"{_MESSEV}: heat meters 6 years (5 years before the 2021 amendment)",
        ),
        _C.MI_005: Period(years=2, source=f"{_DEFAULT_34}; fuel dispensers 2 years"),
        _C.MI_006: Period(years=2, source=_DEFAULT_34),
        _C.MI_007: Period(years=1, source=f"{_MESSEV}: taximeters 1 year"),
        _C.MI_008: Period(years=2, source=f"{_DEFAULT_34} (serving measures are unlimited)"),
        _C.MI_009: Period(years=2, source=_DEFAULT_34),
        _C.MI_010: Period(years=1, source=f"{_MESSEV}: exhaust gas analysers 1 year"),
        _C.NAWI: Period(years=2, source=f"{_DEFAULT_34}; scales below 3000 kg 2 years"),
        _C.DE_EV: Period(
            years=8, source=f"{_MESSEV}: electronic electricity meters (of the charger) 8 years"
        ),
    }
)

#: member state -> category -> period; states not listed use :data:`DEFAULT_PERIODS`
PERIODS: Final[Mapping[str, Mapping[str, Period]]] = MappingProxyType({"DE": _DE})
DEFAULT_PERIODS: Final = _DE
#: member states whose periods end with the calendar year (MessEV § 34 (2))
_END_OF_YEAR: Final = frozenset({"DE"})


def period_for(country: str, category: str, overrides: Mapping[str, int] | None = None) -> Period:
    """The period of ``category`` in ``country``; ``overrides`` (category -> years, the
    node setting) wins over the table."""
    if overrides and category in overrides:
        years = overrides[category]
        if type(years) is not int or not 1 <= years <= 50:
            raise InvalidInput(
                f"verification period of {category} must be 1 to 50 years, got {years!r} "
                "(setting verification_periods)"
            )
        return Period(years=years, source="node setting verification_periods")
    table = PERIODS.get(country, DEFAULT_PERIODS)
    period = table.get(category) or DEFAULT_PERIODS.get(category)
    if period is None:
        raise InvalidInput(f"no re-verification period for category {category!r}")
    return period


def verified_until(country: str, day: date, period: Period) -> date:
    """The last day a verification on ``day`` holds."""
    year = day.year + period.years
    if country in _END_OF_YEAR:
        return date(year, 12, 31)
    if day.month == 2 and day.day == 29:
        return date(year, 2, 28)
    return day.replace(year=year)
