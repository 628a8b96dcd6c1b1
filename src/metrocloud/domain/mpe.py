"""Maximum permissible errors (MPE) of the MID instrument annexes, each citing its point.

Covered (values in percent of the indicated quantity; see docs/mpe.md for the sources):

- MI-001 water meters, Annex III points 5 and 6. The MID itself states one set of MPEs
  (2 %/3 % upper zone, 5 % lower zone), which is accuracy class 2 of OIML R 49-1:2013 /
  EN ISO 4064-1. Accuracy class 1 is not a class of the MID; its values come from
  OIML R 49-1:2013 and the rule cites that.
- MI-002 gas meters, Annex IV Part I point 2.1 Table 2: classes 1.5 and 1.0. Class 0.5 is
  not a class of the MID; its values come from OIML R 137-1&2:2012 and the rule cites that.
- MI-003 active electrical energy meters, Annex V point 3 Table 2: classes A, B, C by
  current range and operating temperature (single-phase meters; polyphase meters with
  balanced loads).
- MI-005 measuring systems for liquids other than water, Annex VII point 2.1 Table 2:
  line A (measuring system) and line B (meter), quantities of 2 litres or more.

In-service limits: member states may let instruments in use err by more than the MPE of
placing on the market. :data:`IN_SERVICE_FACTOR` holds that factor per member state; it is
configuration with a documented default of 1, not part of the MID.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import validate_country

__all__ = [
    "IN_SERVICE_FACTOR",
    "MPE_CLASSES",
    "Line",
    "MpeRule",
    "Zone",
    "in_service_factor",
    "mpe",
    "within_mpe",
    "zone_of",
]

Number = Decimal | int | float | str
_E = TypeVar("_E", bound=StrEnum)


class Zone(StrEnum):
    """Lower and upper flow-rate (MI-001, MI-002) or current (MI-003) range.

    MI-001: lower Q1 <= Q < Q2, upper Q2 <= Q <= Q4; MI-002: lower Qmin <= Q < Qt, upper
    Qt <= Q <= Qmax; MI-003: lower Imin <= I < Itr, upper Itr <= I <= Imax.
    """

    LOWER = "lower"
    UPPER = "upper"


class Line(StrEnum):
    """MI-005 Table 2: line A applies to the complete measuring system, line B to the meter."""

    A = "A"
    B = "B"


@dataclass(frozen=True, slots=True, kw_only=True)
class MpeRule:
    """One MPE: +-``limit_percent`` of the indicated quantity under ``condition``."""

    category: InstrumentCategory
    accuracy_class: str
    condition: str
    limit_percent: Decimal
    citation: str

    def limit(self, factor: Number = 1) -> Decimal:
        """The limit times an in-service ``factor`` (1 at placing on the market)."""
        return self.limit_percent * _factor(factor)


_D = Decimal

_MI001 = "MID 2014/32/EU Annex III (MI-001)"
_R49 = "OIML R 49-1:2013 (EN ISO 4064-1) accuracy class 1; not a class of MID Annex III"
_MI002 = "MID 2014/32/EU Annex IV (MI-002) Part I point 2.1, Table 2"
_R137 = "OIML R 137-1&2:2012 accuracy class 0.5; not a class of MID Annex IV"
_MI003 = "MID 2014/32/EU Annex V (MI-003) point 3, Table 2"
_MI005 = "MID 2014/32/EU Annex VII (MI-005) point 2.1, Table 2"

# MI-001: class -> (lower zone, upper zone <= 30 degC, upper zone > 30 degC, citation)
_WATER: Mapping[str, tuple[Decimal, Decimal, Decimal, str]] = MappingProxyType(
    {
        "1": (_D(3), _D(1), _D(2), _R49),
        "2": (_D(5), _D(2), _D(3), _MI001),
    }
)
_WATER_POINT = {Zone.LOWER: "point 6", Zone.UPPER: "point 5"}

# MI-002 Table 2: class -> (Qmin <= Q < Qt, Qt <= Q <= Qmax, citation)
_GAS: Mapping[str, tuple[Decimal, Decimal, str]] = MappingProxyType(
    {
        "1.5": (_D(3), _D("1.5"), _MI002),
        "1.0": (_D(2), _D(1), _MI002),
        "0.5": (_D(1), _D("0.5"), _R137),
    }
)

# MI-003 Table 2, operating temperature bands from the tightest: (label, closed intervals)
_BANDS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("+5 °C ... +30 °C", ((5, 30),)),
    ("-10 °C ... +5 °C or +30 °C ... +40 °C", ((-10, 5), (30, 40))),
    ("-25 °C ... -10 °C or +40 °C ... +55 °C", ((-25, -10), (40, 55))),
    ("-40 °C ... -25 °C or +55 °C ... +70 °C", ((-40, -25), (55, 70))),
)
# MI-003 Table 2: (zone, class) -> MPE per temperature band, in the order of _BANDS
_ELECTRICITY: Mapping[tuple[Zone, str], tuple[Decimal, Decimal, Decimal, Decimal]] = (
    MappingProxyType(
        {
            (Zone.LOWER, "A"): (_D("3.5"), _D(5), _D(7), _D(9)),
            (Zone.LOWER, "B"): (_D(2), _D("2.5"), _D("3.5"), _D(4)),
            (Zone.LOWER, "C"): (_D(1), _D("1.3"), _D("1.7"), _D(2)),
            (Zone.UPPER, "A"): (_D("3.5"), _D("4.5"), _D(7), _D(9)),
            (Zone.UPPER, "B"): (_D(2), _D("2.5"), _D("3.5"), _D(4)),
            (Zone.UPPER, "C"): (_D("0.7"), _D(1), _D("1.3"), _D("1.5")),
        }
    )
)

# MI-005 Table 2: class -> (line A, line B)
_LIQUIDS: Mapping[str, tuple[Decimal, Decimal]] = MappingProxyType(
    {
        "0.3": (_D("0.3"), _D("0.2")),
        "0.5": (_D("0.5"), _D("0.3")),
        "1.0": (_D("1.0"), _D("0.6")),
        "1.5": (_D("1.5"), _D("1.0")),
        "2.5": (_D("2.5"), _D("1.5")),
    }
)

#: Accuracy classes with an MPE table here, per category.
MPE_CLASSES: Mapping[InstrumentCategory, tuple[str, ...]] = MappingProxyType(
    {
        InstrumentCategory.MI_001: tuple(_WATER),
        InstrumentCategory.MI_002: tuple(_GAS),
        InstrumentCategory.MI_003: ("A", "B", "C"),
        InstrumentCategory.MI_005: tuple(_LIQUIDS),
    }
)

_ZONE_TEXT = {
    InstrumentCategory.MI_001: {Zone.LOWER: "Q1 <= Q < Q2", Zone.UPPER: "Q2 <= Q <= Q4"},
    InstrumentCategory.MI_002: {Zone.LOWER: "Qmin <= Q < Qt", Zone.UPPER: "Qt <= Q <= Qmax"},
    InstrumentCategory.MI_003: {Zone.LOWER: "Imin <= I < Itr", Zone.UPPER: "Itr <= I <= Imax"},
}

#: In-service MPE factor per member state (configuration; a state not listed has 1).
#: DE: Mess- und Eichverordnung (MessEV) § 22: the Verkehrsfehlergrenzen (limits in use) are
#: twice the error limits of conformity assessment and verification unless stated otherwise;
#: category-specific exceptions are not modelled here.
IN_SERVICE_FACTOR: Mapping[str, Decimal] = MappingProxyType({"DE": Decimal(2)})


# --- input checks -------------------------------------------------------------------------


def _invalid(message: str, *, rule: str) -> InvalidInput:
    """InvalidInput whose message also names the rule (the CLI prints only the message)."""
    return InvalidInput(f"{message} [{rule}]", rule=rule)


def _decimal(value: Number, what: str, rule: str) -> Decimal:
    if isinstance(value, bool):
        raise _invalid(f"{what} must be a number, got {value!r}", rule=rule)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise _invalid(f"{what} must be a number, got {value!r}", rule=rule) from None
    if not number.is_finite():
        raise _invalid(f"{what} must be a finite number, got {value!r}", rule=rule)
    return number


def _factor(factor: Number) -> Decimal:
    value = _decimal(factor, "the in-service factor", "metrocloud in-service MPE factor")
    if value <= 0:
        raise _invalid(
            f"the in-service factor must be positive, got {factor!r}",
            rule="metrocloud in-service MPE factor",
        )
    return value


def _category(category: InstrumentCategory | str) -> InstrumentCategory:
    supported = ", ".join(MPE_CLASSES)
    try:
        cat = InstrumentCategory(category)
    except ValueError:
        cat = None
    if cat not in MPE_CLASSES:
        raise _invalid(
            f"MPE tables exist for categories {supported}, got {category!r}",
            rule="MID 2014/32/EU Annexes III, IV, V, VII",
        )
    assert cat is not None
    return cat


def _choice(kind: type[_E], value: _E | str | None, what: str, rule: str) -> _E:
    allowed = ", ".join(m.value for m in kind)
    if value is None:
        raise _invalid(f"{what} is required here: one of {allowed}", rule=rule)
    try:
        return kind(value)
    except ValueError:
        raise _invalid(f"{what} must be one of {allowed}, got {value!r}", rule=rule) from None


def _not_applicable(name: str, value: object, rule: str) -> None:
    if value is not None:
        raise _invalid(f"{name} is not a condition of this MPE table, got {value!r}", rule=rule)


_CLASS_RULE = {
    InstrumentCategory.MI_001: f"{_MI001} points 5 and 6; OIML R 49-1:2013",
    InstrumentCategory.MI_002: f"{_MI002}; OIML R 137-1&2:2012",
    InstrumentCategory.MI_003: _MI003,
    InstrumentCategory.MI_005: _MI005,
}


# --- the rules ----------------------------------------------------------------------------


def mpe(
    category: InstrumentCategory | str,
    accuracy_class: str,
    *,
    zone: Zone | str | None = None,
    temperature: Number | None = None,
    line: Line | str | None = None,
) -> MpeRule:
    """The MPE of an instrument of ``category`` and ``accuracy_class`` under conditions.

    - MI-001: ``zone``; ``temperature`` (water, °C) is needed in the upper zone.
    - MI-002: ``zone``.
    - MI-003: ``zone`` (current range) and ``temperature`` (operating, °C, -40 to +70).
    - MI-005: ``line`` (A measuring system, B meter).

    Raises :class:`InvalidInput` naming the allowed values and the annex point for an
    unknown class, zone, line, a missing or out-of-table temperature, or a condition that
    does not apply to the category.
    """
    cat = _category(category)
    classes = MPE_CLASSES[cat]
    if accuracy_class not in classes:
        raise _invalid(
            f"accuracy class of {cat.value} must be one of {', '.join(classes)}, "
            f"got {accuracy_class!r}",
            rule=_CLASS_RULE[cat],
        )
    if cat is InstrumentCategory.MI_005:
        _not_applicable("zone", zone, _MI005)
        _not_applicable("temperature", temperature, _MI005)
        return _liquids(accuracy_class, _choice(Line, line, "line", _MI005))
    _not_applicable("line", line, _CLASS_RULE[cat])
    if cat is InstrumentCategory.MI_001:
        return _water(accuracy_class, _choice(Zone, zone, "zone", _MI001), temperature)
    if cat is InstrumentCategory.MI_002:
        _not_applicable("temperature", temperature, _MI002)
        return _gas(accuracy_class, _choice(Zone, zone, "zone", _MI002))
    return _electricity(accuracy_class, _choice(Zone, zone, "zone", _MI003), temperature)


def _water(accuracy_class: str, zone: Zone, temperature: Number | None) -> MpeRule:
    lower, upper_cold, upper_warm, source = _WATER[accuracy_class]
    citation = f"{_MI001} {_WATER_POINT[zone]}" if source == _MI001 else source
    flow = _ZONE_TEXT[InstrumentCategory.MI_001][zone]
    if zone is Zone.LOWER:
        limit, condition = lower, f"{flow}, any water temperature"
    else:
        if temperature is None:
            raise _invalid(
                "the water temperature (°C) is required in the upper zone: the MPE is "
                "different at <= 30 °C and > 30 °C",
                rule=citation,
            )
        warm = _decimal(temperature, "the water temperature", citation) > 30
        limit = upper_warm if warm else upper_cold
        condition = f"{flow}, water temperature {'> 30' if warm else '<= 30'} °C"
    return MpeRule(
        category=InstrumentCategory.MI_001,
        accuracy_class=accuracy_class,
        condition=condition,
        limit_percent=limit,
        citation=citation,
    )


def _gas(accuracy_class: str, zone: Zone) -> MpeRule:
    lower, upper, citation = _GAS[accuracy_class]
    return MpeRule(
        category=InstrumentCategory.MI_002,
        accuracy_class=accuracy_class,
        condition=_ZONE_TEXT[InstrumentCategory.MI_002][zone],
        limit_percent=lower if zone is Zone.LOWER else upper,
        citation=citation,
    )


def _band(temperature: Number | None) -> int:
    """Index of the tightest MI-003 temperature band holding ``temperature``.

    Table 2 names each boundary (+5, +30, ...) in two bands; both apply there, so the
    tighter MPE binds.
    """
    if temperature is None:
        raise _invalid(
            "the operating temperature (°C) is required for MI-003: Table 2 depends on it",
            rule=_MI003,
        )
    t = _decimal(temperature, "the operating temperature", _MI003)
    for index, (_, intervals) in enumerate(_BANDS):
        if any(low <= t <= high for low, high in intervals):
            return index
    raise _invalid(
        f"Table 2 covers operating temperatures from -40 °C to +70 °C, got {temperature} °C",
        rule=_MI003,
    )


def _electricity(accuracy_class: str, zone: Zone, temperature: Number | None) -> MpeRule:
    band = _band(temperature)
    current = _ZONE_TEXT[InstrumentCategory.MI_003][zone]
    return MpeRule(
        category=InstrumentCategory.MI_003,
        accuracy_class=accuracy_class,
        condition=f"{current}, operating temperature {_BANDS[band][0]}",
        limit_percent=_ELECTRICITY[zone, accuracy_class][band],
        citation=_MI003,
    )


def _liquids(accuracy_class: str, line: Line) -> MpeRule:
    system, meter = _LIQUIDS[accuracy_class]
    what = "measuring system" if line is Line.A else "meter"
    return MpeRule(
        category=InstrumentCategory.MI_005,
        accuracy_class=accuracy_class,
        condition=f"line {line.value} ({what}), quantities >= 2 L",
        limit_percent=system if line is Line.A else meter,
        citation=_MI005,
    )


def zone_of(value: Number, *, minimum: Number, transitional: Number, maximum: Number) -> Zone:
    """The zone of a flow rate or current: [minimum, transitional) or [transitional, maximum].

    For MI-001 pass Q1, Q2, Q4; for MI-002 Qmin, Qt, Qmax; for MI-003 Imin, Itr, Imax.
    """
    rule = "MID 2014/32/EU Annexes III, IV, V (definitions)"
    v = _decimal(value, "the flow rate or current", rule)
    low = _decimal(minimum, "the minimum", rule)
    mid = _decimal(transitional, "the transitional value", rule)
    high = _decimal(maximum, "the maximum", rule)
    if not low < mid <= high:
        raise _invalid(
            f"need minimum < transitional <= maximum, got {low}, {mid}, {high}", rule=rule
        )
    if not low <= v <= high:
        raise _invalid(
            f"{v} lies outside the rated range {low} ... {high}: no MPE applies there",
            rule=rule,
        )
    return Zone.LOWER if v < mid else Zone.UPPER


def within_mpe(error_percent: Number, rule: MpeRule, factor: Number = 1) -> bool:
    """True when |error| <= MPE x ``factor`` (an error equal to the limit is permitted)."""
    error = _decimal(error_percent, "the error (percent)", rule.citation)
    return abs(error) <= rule.limit(factor)


def in_service_factor(country: str) -> Decimal:
    """The in-service MPE factor of a member state from :data:`IN_SERVICE_FACTOR` (default 1)."""
    return IN_SERVICE_FACTOR.get(validate_country(country), Decimal(1))
