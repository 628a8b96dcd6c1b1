"""MPE rules of MID Annexes III, IV, V and VII: every table cell, boundaries, the factor."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.mpe import (
    IN_SERVICE_FACTOR,
    Line,
    Zone,
    in_service_factor,
    mpe,
    within_mpe,
    zone_of,
)

# Values typed from the annex tables (see docs/mpe.md for the sources).

# MI-001: (class, zone, water temperature) -> MPE %, citation fragment
WATER = [
    ("2", "lower", None, "5", "Annex III (MI-001) point 6"),
    ("2", "lower", 60, "5", "Annex III (MI-001) point 6"),
    ("2", "upper", 20, "2", "Annex III (MI-001) point 5"),
    ("2", "upper", 50, "3", "Annex III (MI-001) point 5"),
    ("1", "lower", None, "3", "OIML R 49-1:2013"),
    ("1", "upper", 20, "1", "OIML R 49-1:2013"),
    ("1", "upper", 50, "2", "OIML R 49-1:2013"),
]

# MI-002 Table 2: class -> (Qmin <= Q < Qt, Qt <= Q <= Qmax, citation fragment)
GAS = {
    "1.5": ("3", "1.5", "Annex IV (MI-002) Part I point 2.1, Table 2"),
    "1.0": ("2", "1", "Annex IV (MI-002) Part I point 2.1, Table 2"),
    "0.5": ("1", "0.5", "OIML R 137-1&2:2012"),
}

# MI-003 Table 2: a temperature inside each band (tightest first) -> index of the band
BAND_TEMPERATURES = [(20, 0), (-5, 1), (35, 1), (-20, 2), (50, 2), (-30, 3), (60, 3)]
ELECTRICITY = {
    ("lower", "A"): ["3.5", "5", "7", "9"],
    ("lower", "B"): ["2", "2.5", "3.5", "4"],
    ("lower", "C"): ["1", "1.3", "1.7", "2"],
    ("upper", "A"): ["3.5", "4.5", "7", "9"],
    ("upper", "B"): ["2", "2.5", "3.5", "4"],
    ("upper", "C"): ["0.7", "1", "1.3", "1.5"],
}

# MI-005 Table 2: class -> (line A, line B)
LIQUIDS = {
    "0.3": ("0.3", "0.2"),
    "0.5": ("0.5", "0.3"),
    "1.0": ("1.0", "0.6"),
    "1.5": ("1.5", "1.0"),
    "2.5": ("2.5", "1.5"),
}


@pytest.mark.parametrize(("cls", "zone", "temperature", "limit", "citation"), WATER)
def test_water_meters(
    cls: str, zone: str, temperature: int | None, limit: str, citation: str
) -> None:
    rule = mpe(InstrumentCategory.MI_001, cls, zone=zone, temperature=temperature)
    assert rule.limit_percent == Decimal(limit)
    assert citation in rule.citation
    assert rule.category is InstrumentCategory.MI_001 and rule.accuracy_class == cls


@pytest.mark.parametrize(("cls", "cold", "warm"), [("2", "2", "3"), ("1", "1", "2")])
def test_water_temperature_boundary_is_30_degrees_inclusive(cls: str, cold: str, warm: str) -> None:
    assert mpe("MI-001", cls, zone="upper", temperature=30).limit_percent == Decimal(cold)
    assert mpe("MI-001", cls, zone="upper", temperature="30.0").limit_percent == Decimal(cold)
    assert mpe("MI-001", cls, zone="upper", temperature=30.01).limit_percent == Decimal(warm)
    assert "> 30 °C" in mpe("MI-001", cls, zone="upper", temperature=31).condition


def test_water_upper_zone_needs_the_temperature() -> None:
    with pytest.raises(InvalidInput, match="temperature") as info:
        mpe("MI-001", "2", zone=Zone.UPPER)
    assert info.value.rule is not None and "Annex III" in info.value.rule


@pytest.mark.parametrize("cls", sorted(GAS))
@pytest.mark.parametrize("zone", [Zone.LOWER, Zone.UPPER])
def test_gas_meters(cls: str, zone: Zone) -> None:
    lower, upper, citation = GAS[cls]
    rule = mpe("MI-002", cls, zone=zone)
    assert rule.limit_percent == Decimal(lower if zone is Zone.LOWER else upper)
    assert citation in rule.citation
    assert rule.condition == ("Qmin <= Q < Qt" if zone is Zone.LOWER else "Qt <= Q <= Qmax")


@pytest.mark.parametrize(("zone", "cls"), sorted(ELECTRICITY))
@pytest.mark.parametrize(("temperature", "band"), BAND_TEMPERATURES)
def test_electricity_meters(zone: str, cls: str, temperature: int, band: int) -> None:
    rule = mpe("MI-003", cls, zone=zone, temperature=temperature)
    assert rule.limit_percent == Decimal(ELECTRICITY[zone, cls][band])
    assert rule.citation == "MID 2014/32/EU Annex V (MI-003) point 3, Table 2"


@pytest.mark.parametrize(
    ("temperature", "band"),
    [
        (5, 0),
        (30, 0),
        ("4.9", 1),
        ("30.1", 1),
        (-10, 1),
        (40, 1),
        ("-10.1", 2),
        ("40.1", 2),
        (-25, 2),
        (55, 2),
        ("-25.1", 3),
        ("55.1", 3),
        (-40, 3),
        (70, 3),
    ],
)
def test_electricity_band_boundaries_take_the_tighter_mpe(temperature: object, band: int) -> None:
    rule = mpe("MI-003", "C", zone="upper", temperature=temperature)  # type: ignore[arg-type]
    assert rule.limit_percent == Decimal(ELECTRICITY["upper", "C"][band])


@pytest.mark.parametrize("temperature", ["-40.1", "70.1", -100, 1000])
def test_electricity_outside_the_table_is_invalid(temperature: object) -> None:
    with pytest.raises(InvalidInput, match="-40 °C to \\+70 °C") as info:
        mpe("MI-003", "A", zone="lower", temperature=temperature)  # type: ignore[arg-type]
    assert info.value.rule == "MID 2014/32/EU Annex V (MI-003) point 3, Table 2"


def test_electricity_needs_the_temperature() -> None:
    with pytest.raises(InvalidInput, match="temperature"):
        mpe("MI-003", "B", zone="upper")


@pytest.mark.parametrize("cls", sorted(LIQUIDS))
@pytest.mark.parametrize("line", [Line.A, Line.B])
def test_liquid_measuring_systems(cls: str, line: Line) -> None:
    rule = mpe("MI-005", cls, line=line)
    system, meter = LIQUIDS[cls]
    assert rule.limit_percent == Decimal(system if line is Line.A else meter)
    assert rule.citation == "MID 2014/32/EU Annex VII (MI-005) point 2.1, Table 2"


# --- invalid input names the allowed values and the annex point ----------------------------


@pytest.mark.parametrize(
    ("category", "cls", "allowed", "annex"),
    [
        ("MI-001", "3", "1, 2", "Annex III"),
        ("MI-002", "1", "1.5, 1.0, 0.5", "Annex IV"),
        ("MI-003", "D", "A, B, C", "Annex V"),
        ("MI-005", "0.2", "0.3, 0.5, 1.0, 1.5, 2.5", "Annex VII"),
    ],
)
def test_unknown_class(category: str, cls: str, allowed: str, annex: str) -> None:
    with pytest.raises(InvalidInput) as info:
        mpe(category, cls, zone="upper", temperature=20, line="A")
    assert allowed in str(info.value) and annex in str(info.value)
    assert info.value.rule is not None and annex in info.value.rule


@pytest.mark.parametrize(
    ("category", "cls", "temperature"),
    [("MI-001", "2", 20), ("MI-002", "1.0", None), ("MI-003", "A", 20)],
)
@pytest.mark.parametrize("zone", ["middle", None, "LOWER"])
def test_unknown_or_missing_zone(
    category: str, cls: str, temperature: int | None, zone: str | None
) -> None:
    with pytest.raises(InvalidInput) as info:
        mpe(category, cls, zone=zone, temperature=temperature)
    assert "lower, upper" in str(info.value)
    assert info.value.rule is not None and "Annex" in info.value.rule


@pytest.mark.parametrize("line", ["C", None])
def test_unknown_or_missing_line(line: str | None) -> None:
    with pytest.raises(InvalidInput, match="A, B") as info:
        mpe("MI-005", "0.5", line=line)
    assert info.value.rule is not None and "Annex VII" in info.value.rule


@pytest.mark.parametrize(
    "kwargs",
    [
        {"category": "MI-005", "zone": "upper", "line": "A"},
        {"category": "MI-005", "temperature": 20, "line": "A"},
        {"category": "MI-002", "zone": "upper", "temperature": 20},
        {"category": "MI-001", "zone": "upper", "temperature": 20, "line": "A"},
    ],
)
def test_conditions_that_do_not_apply_are_refused(kwargs: dict[str, object]) -> None:
    cls = {"MI-005": "0.5", "MI-002": "1.0", "MI-001": "2"}[str(kwargs["category"])]
    with pytest.raises(InvalidInput, match="not a condition"):
        mpe(accuracy_class=cls, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("category", ["MI-004", "MI-010", "NAWI", "nonsense"])
def test_categories_without_a_table(category: str) -> None:
    with pytest.raises(InvalidInput, match="MI-001, MI-002, MI-003, MI-005"):
        mpe(category, "1", zone="upper")


@pytest.mark.parametrize("temperature", ["warm", "nan", True])
def test_temperature_must_be_a_number(temperature: object) -> None:
    with pytest.raises(InvalidInput, match="temperature"):
        mpe("MI-001", "2", zone="upper", temperature=temperature)  # type: ignore[arg-type]


# --- within_mpe and the in-service factor -------------------------------------------------


def test_error_equal_to_the_mpe_is_within_it() -> None:
    rule = mpe("MI-002", "1.5", zone="upper")  # 1.5 %
    assert within_mpe("1.5", rule) and within_mpe("-1.5", rule)
    assert within_mpe(1.5, rule) and within_mpe(Decimal("1.50"), rule)
    assert not within_mpe("1.5001", rule) and not within_mpe(-1.51, rule)


def test_in_service_factor_doubles_the_limit_in_germany() -> None:
    rule = mpe("MI-003", "B", zone="upper", temperature=20)  # 2 %
    assert in_service_factor("DE") == 2 == IN_SERVICE_FACTOR["DE"]
    assert not within_mpe("3.9", rule)
    assert within_mpe("3.9", rule, factor=in_service_factor("DE"))
    assert within_mpe("4", rule, factor=in_service_factor("DE"))
    assert not within_mpe("4.01", rule, factor=in_service_factor("DE"))
    assert rule.limit(in_service_factor("DE")) == Decimal(4)


@pytest.mark.parametrize("country", ["FR", "AT", "NL"])
def test_other_member_states_default_to_factor_1(country: str) -> None:
    assert in_service_factor(country) == 1


@pytest.mark.parametrize("country", ["XX", "de", "US"])
def test_in_service_factor_of_an_unknown_country_is_invalid(country: str) -> None:
    with pytest.raises(InvalidInput):
        in_service_factor(country)


@pytest.mark.parametrize("factor", [0, -1, "x", "inf"])
def test_bad_factor_is_invalid(factor: object) -> None:
    with pytest.raises(InvalidInput, match="factor"):
        within_mpe(0, mpe("MI-005", "0.3", line="A"), factor=factor)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", ["abc", "NaN", "-inf", False])
def test_error_must_be_a_finite_number(error: object) -> None:
    with pytest.raises(InvalidInput, match="error"):
        within_mpe(error, mpe("MI-005", "0.3", line="A"))  # type: ignore[arg-type]


@given(
    error=st.decimals(min_value=-20, max_value=20, allow_nan=False, places=3),
    factor=st.decimals(min_value=1, max_value=3, allow_nan=False, places=2),
    cls=st.sampled_from(sorted(LIQUIDS)),
    line=st.sampled_from([Line.A, Line.B]),
)
def test_within_mpe_is_symmetric_and_a_larger_factor_never_hurts(
    error: Decimal, factor: Decimal, cls: str, line: Line
) -> None:
    rule = mpe("MI-005", cls, line=line)
    assert within_mpe(error, rule) == within_mpe(-error, rule)
    assert within_mpe(error, rule, factor) == (abs(error) <= rule.limit_percent * factor)
    if within_mpe(error, rule):
        assert within_mpe(error, rule, factor)


# --- zones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "zone"),
    [("0.025", Zone.LOWER), ("0.0399", Zone.LOWER), ("0.04", Zone.UPPER), ("3.125", Zone.UPPER)],
)
def test_zone_of_a_flow_rate(value: str, zone: Zone) -> None:
    # a water meter with Q1 = 0.025, Q2 = 0.04, Q4 = 3.125 m3/h
    assert zone_of(value, minimum="0.025", transitional="0.04", maximum="3.125") is zone


@pytest.mark.parametrize("value", ["0.0249", "3.1251"])
def test_outside_the_rated_range_no_mpe_applies(value: str) -> None:
    with pytest.raises(InvalidInput, match="outside the rated range"):
        zone_of(value, minimum="0.025", transitional="0.04", maximum="3.125")


def test_zone_limits_must_be_ordered() -> None:
    with pytest.raises(InvalidInput, match="minimum < transitional <= maximum"):
        zone_of(1, minimum=2, transitional=1, maximum=3)


def test_zone_of_feeds_mpe() -> None:
    zone = zone_of(5, minimum="0.25", transitional=10, maximum=80)  # current in A
    assert mpe("MI-003", "A", zone=zone, temperature=23).limit_percent == Decimal("3.5")
