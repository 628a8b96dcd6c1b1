"""Parties of the platform and their roles (ARCHITECTURE.md, "Who uses it")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from metrocloud.domain.errors import InvalidInput

__all__ = ["COUNTRY_CODES", "Party", "PartyRole", "validate_country", "validate_nb_number"]


class PartyRole(StrEnum):
    """What a party is on the platform; the role decides what it may do."""

    NODE_ADMIN = "node_admin"
    NOTIFIED_BODY = "notified_body"
    MANUFACTURER = "manufacturer"
    OPERATOR = "operator"
    AUTHORITY = "authority"


#: EU/EEA member states (ISO 3166-1 alpha-2; Greece as "EL" is accepted as an EU alias).
COUNTRY_CODES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "EL",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
        "CH",
    ]
)

_NB_NUMBER = re.compile(r"^[0-9]{4}$")


def validate_country(code: str) -> str:
    """Return ``code`` if it is a member-state code, else raise :class:`InvalidInput`."""
    if code not in COUNTRY_CODES:
        raise InvalidInput(
            f"country must be an EU/EEA ISO 3166-1 alpha-2 code, got {code!r}",
            rule="ISO 3166-1",
        )
    return code


def validate_nb_number(number: str | None, role: PartyRole) -> str | None:
    """A notified body carries its 4-digit NANDO number; no other party has one."""
    if role is PartyRole.NOTIFIED_BODY:
        if number is None or not _NB_NUMBER.match(number):
            raise InvalidInput(
                f"a notified body needs its 4-digit identification number, got {number!r}",
                rule="Regulation (EC) 765/2008, Art. R17; NANDO",
            )
        return number
    if number is not None:
        raise InvalidInput(f"only a notified body has a notified-body number, not a {role}")
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Party:
    """A legal person admitted to the node."""

    id: str
    name: str
    role: PartyRole
    country: str
    nb_number: str | None = None
    public_key: str | None = None  # base64 SPKI of the party's key

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidInput("party name must not be empty")
        validate_country(self.country)
        validate_nb_number(self.nb_number, self.role)
