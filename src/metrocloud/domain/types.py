"""Instrument types and their legally relevant software identification."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.errors import InvalidInput

__all__ = ["ACCURACY_CLASSES", "ChecksumAlgorithm", "InstrumentType", "SoftwareIdentification"]


class ChecksumAlgorithm(StrEnum):
    """Algorithms accepted for the legally relevant software checksum (WELMEC 7.2, S1)."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"
    CRC16 = "crc16"
    CRC32 = "crc32"


_HEX_LENGTH = {
    ChecksumAlgorithm.SHA256: 64,
    ChecksumAlgorithm.SHA384: 96,
    ChecksumAlgorithm.SHA512: 128,
    ChecksumAlgorithm.CRC16: 4,
    ChecksumAlgorithm.CRC32: 8,
}
_HEX = re.compile(r"^[0-9a-f]+$")

#: Accuracy classes per category, as named in the MID annexes and 2014/31/EU.
ACCURACY_CLASSES: dict[InstrumentCategory, frozenset[str]] = {
    InstrumentCategory.MI_001: frozenset({"1", "2"}),
    InstrumentCategory.MI_002: frozenset({"0.5", "1.0", "1.5"}),
    InstrumentCategory.MI_003: frozenset({"A", "B", "C"}),
    InstrumentCategory.MI_004: frozenset({"1", "2", "3"}),
    InstrumentCategory.MI_005: frozenset({"0.3", "0.5", "1.0", "1.5", "2.5"}),
    InstrumentCategory.MI_006: frozenset(
        {"0.2", "0.5", "1", "2", "XI", "XII", "XIII", "XIIII", "Y(I)", "Y(II)", "Y(a)", "Y(b)"}
    ),
    InstrumentCategory.MI_007: frozenset({"-"}),
    InstrumentCategory.MI_008: frozenset({"I", "II", "III", "D"}),
    InstrumentCategory.MI_009: frozenset({"I", "II", "III", "-"}),
    InstrumentCategory.MI_010: frozenset({"0", "I"}),
    InstrumentCategory.NAWI: frozenset({"I", "II", "III", "IIII"}),
    InstrumentCategory.DE_EV: frozenset({"A", "B", "C"}),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class SoftwareIdentification:
    """Legally relevant software identification (WELMEC Guide 7.2, requirement S1)."""

    name: str
    version: str
    algorithm: ChecksumAlgorithm
    checksum: str

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise InvalidInput(
                "software identification needs a name and a version", rule="WELMEC 7.2 S1"
            )
        expected = _HEX_LENGTH[self.algorithm]
        if len(self.checksum) != expected or not _HEX.match(self.checksum):
            raise InvalidInput(
                f"software checksum for {self.algorithm} must be {expected} lowercase hex "
                f"characters, got {len(self.checksum)} characters",
                rule="WELMEC 7.2 S1",
            )

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "algorithm": str(self.algorithm),
            "checksum": self.checksum,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentType:
    """A manufacturer's model, as examined by a notified body."""

    manufacturer_id: str
    model: str
    category: InstrumentCategory
    accuracy_class: str
    software: tuple[SoftwareIdentification, ...]
    rated_conditions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InvalidInput("instrument type needs a model designation")
        allowed = ACCURACY_CLASSES[self.category]
        if self.accuracy_class not in allowed:
            raise InvalidInput(
                f"accuracy class {self.accuracy_class!r} does not exist for {self.category}; "
                f"expected one of {sorted(allowed)}",
                rule=self.category.legal_basis,
            )
        if not self.software:
            raise InvalidInput(
                "an instrument type lists at least one approved legally "
                "relevant software identification",
                rule="WELMEC 7.2 S1",
            )

    def approves(self, software: SoftwareIdentification) -> bool:
        return software in self.software
