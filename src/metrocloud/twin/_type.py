"""The three submodels of an instrument-type shell, rendered from a :class:`TypeView`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aas_core3 import types as aas

from metrocloud.domain.certificates import effective_status
from metrocloud.twin import _idta
from metrocloud.twin._common import (
    approved_software,
    category_title,
    contact_information,
    legal_basis,
    party,
    today,
)
from metrocloud.twin._elements import (
    XS,
    collection,
    element_list,
    mc,
    mlp,
    prop,
    semantic,
    submodel,
    xs_date,
)
from metrocloud.twin.views import TypeView

__all__ = ["RENDERERS"]


def _nameplate(v: TypeView) -> aas.Submodel:
    """The type's nameplate: IDTA 02006-2-0 elements where they apply to a type.

    Its semantic id is metrocloud's ``TypeNameplate``, not the IDTA template's: the template
    makes serial number and year of construction mandatory, and a type has neither.
    """
    c = v.certificate
    return submodel(
        c.id,
        "Nameplate",
        mc("TypeNameplate"),
        [
            mlp("ManufacturerName", v.holder.name, semantic(_idta.MANUFACTURER_NAME)),
            mlp(
                "ManufacturerProductDesignation",
                c.model,
                semantic(_idta.MANUFACTURER_PRODUCT_DESIGNATION),
            ),
            contact_information(v.holder),
            mlp(
                "ManufacturerProductFamily",
                category_title(c.category),
                semantic(_idta.MANUFACTURER_PRODUCT_FAMILY),
            ),
            prop("InstrumentCategory", c.category, mc("InstrumentCategory")),
            prop("AccuracyClass", c.accuracy_class, mc("AccuracyClass")),
        ],
        "Nameplate of the instrument type: manufacturer, type designation and category",
    )


def _rated_conditions(conditions: Mapping[str, Any]) -> aas.SubmodelElementList:
    return element_list(
        "RatedConditions",
        mc("RatedConditions"),
        mc("RatedCondition"),
        [
            collection(
                None,
                mc("RatedCondition"),
                [
                    prop("Name", str(name), mc("ConditionName")),
                    prop("Value", str(value), mc("ConditionValue")),
                ],
            )
            for name, value in sorted(conditions.items())
        ],
    )


def _history(rows: tuple[Any, ...]) -> aas.SubmodelElementList:
    return element_list(
        "History",
        mc("CertificateHistory"),
        mc("CertificateChange"),
        [
            collection(
                None,
                mc("CertificateChange"),
                [
                    prop("Action", h.action, mc("CertificateAction")),
                    prop("Status", h.status, mc("CertificateStatus")),
                    prop("Revision", h.revision, mc("CertificateRevision"), XS.INT),
                    prop("Reason", h.reason, mc("Reason")) if h.reason else None,
                    prop("OccurredAt", h.at, mc("OccurredAt"), XS.DATE_TIME),
                    prop("LeafIndex", h.leaf_index, mc("LedgerLeafIndex"), XS.LONG),
                ],
            )
            for h in rows
        ],
    )


def _certificate(v: TypeView) -> aas.Submodel:
    c = v.certificate
    return submodel(
        c.id,
        "Certificate",
        mc("Certificate"),
        [
            prop("Number", c.number, mc("CertificateNumber")),
            party("NotifiedBody", "NotifiedBody", v.notified_body),
            party("Holder", "CertificateHolder", v.holder),
            prop("Module", c.module, mc("ConformityModule")),
            prop(
                "Status",
                effective_status(c.status, c.valid_until, today()),
                mc("CertificateStatus"),
            ),
            prop("IssuedOn", xs_date(c.issued_on), mc("IssuedOn"), XS.DATE),
            prop("ValidUntil", xs_date(c.valid_until), mc("ValidUntil"), XS.DATE),
            prop("Revision", c.revision, mc("CertificateRevision"), XS.INT),
            prop("InstrumentCategory", c.category, mc("InstrumentCategory")),
            prop("LegalBasis", legal_basis(c.category), mc("LegalBasis")),
            prop("AccuracyClass", c.accuracy_class, mc("AccuracyClass")),
            _rated_conditions(c.rated_conditions or {}),
            approved_software(list(c.software)),
            _history(v.history),
            prop("LeafIndex", c.leaf_index, mc("LedgerLeafIndex"), XS.LONG),
        ],
        "EU-type examination certificate (MID 2014/32/EU Annex II module B)",
    )


def _software(v: TypeView) -> aas.Submodel:
    c = v.certificate
    return submodel(
        c.id,
        "SoftwareIdentification",
        mc("SoftwareIdentification"),
        [approved_software(list(c.software))],
        "Legally relevant software identifications the certificate approves (WELMEC 7.2 S1)",
    )


#: submodel name -> renderer(view)
RENDERERS: dict[str, Callable[[TypeView], aas.Submodel]] = {
    "Nameplate": _nameplate,
    "Certificate": _certificate,
    "SoftwareIdentification": _software,
}
