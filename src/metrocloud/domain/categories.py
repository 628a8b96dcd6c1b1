"""Instrument categories: the MID annexes, NAWI and national categories."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CATEGORY_TITLES", "InstrumentCategory"]


class InstrumentCategory(StrEnum):
    """Legally controlled instrument categories.

    The MI codes are the instrument-specific annexes of the Measuring Instruments Directive
    2014/32/EU (Annexes III to XII); NAWI is Directive 2014/31/EU; ``DE-EV`` is EV charging
    equipment under German calibration law (MessEG/MessEV), the model for national categories.
    """

    MI_001 = "MI-001"
    MI_002 = "MI-002"
    MI_003 = "MI-003"
    MI_004 = "MI-004"
    MI_005 = "MI-005"
    MI_006 = "MI-006"
    MI_007 = "MI-007"
    MI_008 = "MI-008"
    MI_009 = "MI-009"
    MI_010 = "MI-010"
    NAWI = "NAWI"
    DE_EV = "DE-EV"

    @property
    def description(self) -> str:
        return CATEGORY_TITLES[self]

    @property
    def legal_basis(self) -> str:
        if self is InstrumentCategory.NAWI:
            return "Directive 2014/31/EU"
        if self is InstrumentCategory.DE_EV:
            return "MessEG/MessEV (DE), national"
        annex = {
            "MI-001": "III",
            "MI-002": "IV",
            "MI-003": "V",
            "MI-004": "VI",
            "MI-005": "VII",
            "MI-006": "VIII",
            "MI-007": "IX",
            "MI-008": "X",
            "MI-009": "XI",
            "MI-010": "XII",
        }[self.value]
        return f"Directive 2014/32/EU, Annex {annex} ({self.value})"


CATEGORY_TITLES: dict[InstrumentCategory, str] = {
    InstrumentCategory.MI_001: "water meters",
    InstrumentCategory.MI_002: "gas meters and volume conversion devices",
    InstrumentCategory.MI_003: "active electrical energy meters",
    InstrumentCategory.MI_004: "thermal energy meters",
    InstrumentCategory.MI_005: "measuring systems for the continuous and dynamic measurement "
    "of quantities of liquids other than water",
    InstrumentCategory.MI_006: "automatic weighing instruments",
    InstrumentCategory.MI_007: "taximeters",
    InstrumentCategory.MI_008: "material measures",
    InstrumentCategory.MI_009: "dimensional measuring instruments",
    InstrumentCategory.MI_010: "exhaust gas analysers",
    InstrumentCategory.NAWI: "non-automatic weighing instruments",
    InstrumentCategory.DE_EV: "electric vehicle charging equipment (national)",
}
