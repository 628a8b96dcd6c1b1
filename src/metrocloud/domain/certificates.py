"""EU-type examination certificates and their legal status transitions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from metrocloud.domain.errors import RuleViolation
from metrocloud.domain.types import InstrumentType

__all__ = [
    "DEFAULT_VALIDITY_YEARS",
    "Certificate",
    "CertificateAction",
    "CertificateStatus",
    "ConformityModule",
    "effective_status",
    "next_status",
]

#: MID Annex II, module B point 6: an EU-type examination certificate is valid for 10 years.
DEFAULT_VALIDITY_YEARS = 10


class CertificateStatus(StrEnum):
    VALID = "valid"
    SUSPENDED = "suspended"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class CertificateAction(StrEnum):
    ISSUE = "issue"
    REVISE = "revise"
    SUSPEND = "suspend"
    REINSTATE = "reinstate"
    WITHDRAW = "withdraw"
    EXPIRE = "expire"


class ConformityModule(StrEnum):
    """Conformity assessment modules of Decision 768/2008/EC used by the MID (Annex II)."""

    B = "B"
    D = "D"
    D1 = "D1"
    E = "E"
    E1 = "E1"
    F = "F"
    F1 = "F1"
    G = "G"
    H = "H"
    H1 = "H1"


_RULE = "MID 2014/32/EU Annex II module B, points 6 and 7"

# action -> (states it may start from, resulting state)
_TRANSITIONS: dict[CertificateAction, tuple[frozenset[CertificateStatus], CertificateStatus]] = {
    CertificateAction.REVISE: (frozenset({CertificateStatus.VALID}), CertificateStatus.VALID),
    CertificateAction.SUSPEND: (frozenset({CertificateStatus.VALID}), CertificateStatus.SUSPENDED),
    CertificateAction.REINSTATE: (
        frozenset({CertificateStatus.SUSPENDED}),
        CertificateStatus.VALID,
    ),
    CertificateAction.WITHDRAW: (
        frozenset({CertificateStatus.VALID, CertificateStatus.SUSPENDED}),
        CertificateStatus.WITHDRAWN,
    ),
    CertificateAction.EXPIRE: (
        frozenset({CertificateStatus.VALID, CertificateStatus.SUSPENDED}),
        CertificateStatus.EXPIRED,
    ),
}


def effective_status(status: str, valid_until: date, today: date) -> CertificateStatus:
    """The status on ``today``: a valid or suspended certificate past its date is expired."""
    current = CertificateStatus(status)
    if current in (CertificateStatus.VALID, CertificateStatus.SUSPENDED) and today > valid_until:
        return CertificateStatus.EXPIRED
    return current


def next_status(current: CertificateStatus, action: CertificateAction) -> CertificateStatus:
    """The status after ``action``, or :class:`RuleViolation` naming the rule."""
    if action is CertificateAction.ISSUE:
        raise RuleViolation("a certificate is issued once; use revise to change it", rule=_RULE)
    allowed, result = _TRANSITIONS[action]
    if current not in allowed:
        raise RuleViolation(
            f"cannot {action} a certificate that is {current}; {action} is allowed only from "
            f"{' or '.join(sorted(allowed))}",
            rule=_RULE,
        )
    return result


@dataclass(frozen=True, kw_only=True, slots=True)
class Certificate:
    """An EU-type examination certificate (module B) for one instrument type."""

    id: str
    number: str
    notified_body_id: str
    holder_id: str
    module: ConformityModule
    instrument_type: InstrumentType
    issued_on: date
    valid_until: date
    status: CertificateStatus = CertificateStatus.VALID
    revision: int = 0

    def __post_init__(self) -> None:
        if self.valid_until <= self.issued_on:
            raise RuleViolation(
                f"valid_until {self.valid_until} must be after issued_on {self.issued_on}",
                rule=_RULE,
            )

    def effective_status(self, today: date) -> CertificateStatus:
        """The status on ``today``: a valid or suspended certificate past its date is expired."""
        return effective_status(self.status, self.valid_until, today)

    def apply(self, action: CertificateAction) -> Certificate:
        status = next_status(self.status, action)
        revision = self.revision + 1 if action is CertificateAction.REVISE else self.revision
        return replace(self, status=status, revision=revision)

    def ensure_allows_registration(self, today: date) -> None:
        """Instruments may be placed under a certificate only while it is valid."""
        status = self.effective_status(today)
        if status is not CertificateStatus.VALID:
            raise RuleViolation(
                f"certificate {self.number} is {status}: no instrument may be registered under it",
                rule="MID 2014/32/EU Art. 8 and Annex II module B point 7",
            )
