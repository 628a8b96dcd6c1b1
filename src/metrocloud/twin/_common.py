"""Element groups that instrument and type submodels share: parties, software, categories."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from aas_core3 import types as aas

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.twin import _idta
from metrocloud.twin._elements import XS, boolean, collection, element_list, mc, mlp, prop, semantic

__all__ = [
    "approved_software",
    "category_title",
    "contact_information",
    "legal_basis",
    "party",
    "registered_at",
    "software_item",
    "software_of",
    "today",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def registered_at(record_id: str) -> datetime:
    """When the record was created: the 48-bit millisecond time its ULID starts with."""
    ms = 0
    for ch in record_id.rsplit("-", 1)[-1][:10]:
        ms = ms * 32 + _CROCKFORD.index(ch)
    return datetime.fromtimestamp(ms / 1000, UTC)


def category_title(code: str) -> str:
    try:
        return InstrumentCategory(code).description
    except ValueError:
        return code


def legal_basis(code: str) -> str | None:
    try:
        return InstrumentCategory(code).legal_basis
    except ValueError:
        return None


def party(short: str, concept: str, row: Any) -> aas.SubmodelElementCollection:
    """A party as a collection: its id on this node, its name, and a notified body's number."""
    return collection(
        short,
        mc(concept),
        [
            prop("PartyId", row.id, mc("PartyId")),
            prop("PartyName", row.name, mc("PartyName")),
            prop("NotifiedBodyNumber", row.nb_number, mc("NotifiedBodyNumber"))
            if row.nb_number
            else None,
        ],
    )


def contact_information(row: Any) -> aas.SubmodelElementCollection:
    """IDTA 02006-2-0 ContactInformation: what the registry knows, company and country.

    The registry holds no postal address; the template's street, zip code and city are
    left out rather than invented.
    """
    return collection(
        "ContactInformation",
        semantic(_idta.CONTACT_INFORMATION),
        [
            mlp("Company", row.name, semantic(_idta.COMPANY)),
            mlp("NationalCode", row.country, semantic(_idta.NATIONAL_CODE)),
        ],
    )


def software_of(text: str | None) -> Mapping[str, Any] | None:
    """The software identification stored as canonical JSON text on an instrument row."""
    return json.loads(text) if text else None


def software_item(
    short: str | None, sw: Mapping[str, Any], approved: bool | None = None
) -> aas.SubmodelElementCollection:
    return collection(
        short,
        mc("SoftwareItem"),
        [
            prop("SoftwareName", sw.get("name"), mc("SoftwareName")),
            prop("SoftwareVersion", sw.get("version"), mc("SoftwareVersion")),
            prop("ChecksumAlgorithm", sw.get("algorithm"), mc("ChecksumAlgorithm")),
            prop("Checksum", sw.get("checksum"), mc("Checksum")),
            None
            if approved is None
            else prop("Approved", boolean(approved), mc("SoftwareApproved"), XS.BOOLEAN),
        ],
    )


def approved_software(software: Sequence[Mapping[str, Any]]) -> aas.SubmodelElementList:
    """The software identifications a certificate approves, in the certificate's order."""
    return element_list(
        "ApprovedSoftware",
        mc("ApprovedSoftware"),
        mc("SoftwareItem"),
        [software_item(None, sw) for sw in software],
    )


def today() -> date:
    """The date statuses are rendered for (UTC): a certificate past its date reads expired."""
    return datetime.now(UTC).date()
