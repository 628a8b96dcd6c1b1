"""The six submodels of an instrument shell, rendered from an :class:`InstrumentView`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from aas_core3 import types as aas

from metrocloud.domain.certificates import effective_status
from metrocloud.domain.instruments import EventKind
from metrocloud.twin import _idta
from metrocloud.twin._common import (
    approved_software,
    category_title,
    contact_information,
    party,
    registered_at,
    software_item,
    software_of,
    today,
)
from metrocloud.twin._elements import (
    XS,
    boolean,
    collection,
    element_list,
    mc,
    mlp,
    model_ref,
    prop,
    semantic,
    submodel,
    xs_date,
)
from metrocloud.twin.ids import asset_id, submodel_id
from metrocloud.twin.views import InstrumentView

__all__ = ["MEASUREMENTS_PATH", "RENDERERS"]

#: where the node serves an instrument's signed measurements (from the lake)
MEASUREMENTS_PATH = "/api/v1/instruments/{id}/measurements"

_VERIFICATION_KINDS = (EventKind.VERIFIED.value, EventKind.VERIFICATION_FAILED.value)


def _nameplate(v: InstrumentView, _base_url: str) -> aas.Submodel:
    """IDTA 02006-2-0 Digital Nameplate, plus metrocloud's category, class and region.

    YearOfConstruction (mandatory in the template) is the year the manufacturer registered
    the instrument on the node, the registry's record of its production.
    """
    i, c, man = v.instrument, v.certificate, v.manufacturer
    sw = software_of(i.software)
    return submodel(
        i.id,
        "Nameplate",
        semantic(_idta.NAMEPLATE),
        [
            prop("URIOfTheProduct", asset_id(i.id), semantic(_idta.URI_OF_THE_PRODUCT)),
            mlp("ManufacturerName", man.name, semantic(_idta.MANUFACTURER_NAME)),
            mlp(
                "ManufacturerProductDesignation",
                c.model,
                semantic(_idta.MANUFACTURER_PRODUCT_DESIGNATION),
            ),
            contact_information(man),
            mlp(
                "ManufacturerProductFamily",
                category_title(c.category),
                semantic(_idta.MANUFACTURER_PRODUCT_FAMILY),
            ),
            prop("SerialNumber", i.serial, semantic(_idta.SERIAL_NUMBER)),
            prop(
                "YearOfConstruction",
                str(registered_at(i.id).year),
                semantic(_idta.YEAR_OF_CONSTRUCTION),
            ),
            mlp("SoftwareVersion", str(sw["version"]), semantic(_idta.SOFTWARE_VERSION))
            if sw and sw.get("version")
            else None,
            prop("InstrumentCategory", i.category, mc("InstrumentCategory")),
            prop("AccuracyClass", c.accuracy_class, mc("AccuracyClass")),
            prop("Region", i.region, mc("Region")),
        ],
        "Digital nameplate (IDTA 02006-2-0) of the instrument",
    )


def _conformity(v: InstrumentView, _base_url: str) -> aas.Submodel:
    i, c = v.instrument, v.certificate
    return submodel(
        i.id,
        "Conformity",
        mc("Conformity"),
        [
            aas.ReferenceElement(
                id_short="Certificate",
                semantic_id=mc("CertificateReference"),
                value=model_ref(aas.KeyTypes.SUBMODEL, submodel_id(c.id, "Certificate")),
            ),
            prop("CertificateNumber", c.number, mc("CertificateNumber")),
            prop("CertificateModule", c.module, mc("ConformityModule")),
            prop(
                "CertificateStatus",
                effective_status(c.status, c.valid_until, today()),
                mc("CertificateStatus"),
            ),
            prop("CertificateValidUntil", xs_date(c.valid_until), mc("ValidUntil"), XS.DATE),
            party("NotifiedBody", "NotifiedBody", v.notified_body),
            element_list(
                "Declarations",
                mc("Declarations"),
                mc("Declaration"),
                [
                    collection(
                        None,
                        mc("Declaration"),
                        [
                            prop("DeclarationId", d.id, mc("DeclarationId")),
                            prop("Module", d.module, mc("ConformityModule")),
                            prop("DeclaredOn", xs_date(d.declared_on), mc("DeclaredOn"), XS.DATE),
                            prop("DocumentSha256", d.document_sha256, mc("DocumentSha256"))
                            if d.document_sha256
                            else None,
                            prop("LeafIndex", d.leaf_index, mc("LedgerLeafIndex"), XS.LONG),
                        ],
                    )
                    for d in v.declarations
                ],
            ),
        ],
        "EU-type examination certificate and declarations of conformity of the instrument",
    )


def _software(v: InstrumentView, _base_url: str) -> aas.Submodel:
    i, c = v.instrument, v.certificate
    sw = software_of(i.software)
    approved = list(c.software)
    return submodel(
        i.id,
        "SoftwareIdentification",
        mc("SoftwareIdentification"),
        [
            software_item("InstalledSoftware", sw, approved=dict(sw) in approved)
            if sw is not None
            else None,
            approved_software(approved),
        ],
        "Legally relevant software identification (WELMEC 7.2 S1): installed and approved",
    )


def _party_or_id(v: InstrumentView, short: str, party_id: str) -> aas.SubmodelElementCollection:
    row = v.parties.get(party_id)
    if row is not None:
        return party(short, "Authority", row)
    return collection(short, mc("Authority"), [prop("PartyId", party_id, mc("PartyId"))])


def _verification(v: InstrumentView, _base_url: str) -> aas.Submodel:
    i = v.instrument
    last = next((e for e in reversed(v.events) if e.kind in _VERIFICATION_KINDS), None)
    last_smc = None
    if last is not None:
        details = last.details or {}
        passed = last.kind == EventKind.VERIFIED.value
        last_smc = collection(
            "LastVerification",
            mc("LastVerification"),
            [
                prop("Result", "passed" if passed else "failed", mc("VerificationResult")),
                prop("OccurredAt", last.occurred_at, mc("OccurredAt"), XS.DATE_TIME),
                _party_or_id(v, "Authority", last.recorded_by),
                prop(
                    "VerifiedUntil",
                    _iso_date(details.get("verified_until")),
                    mc("VerifiedUntil"),
                    XS.DATE,
                )
                if passed
                else None,
                prop("Reason", str(details["reason"]), mc("Reason"))
                if details.get("reason")
                else None,
                prop("LeafIndex", last.leaf_index, mc("LedgerLeafIndex"), XS.LONG),
            ],
        )
    return submodel(
        i.id,
        "Verification",
        mc("Verification"),
        [
            prop("State", i.state, mc("LifeCycleState")),
            prop("VerifiedUntil", xs_date(i.verified_until), mc("VerifiedUntil"), XS.DATE),
            last_smc,
        ],
        "Verification status: state, verified-until date, last result and its authority",
    )


def _iso_date(value: Any) -> str | None:
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        return None


#: event details with an element of their own; every other detail goes to OtherDetails
_KNOWN_DETAILS = frozenset({"region", "verified_until", "reason", "note", "software", "approved"})


def _details(details: Mapping[str, Any]) -> list[aas.SubmodelElement | None]:
    out: list[aas.SubmodelElement | None] = []
    rest = {k: v for k, v in details.items() if k not in _KNOWN_DETAILS}
    if isinstance(details.get("region"), str):
        out.append(prop("Region", details["region"], mc("Region")))
    until = _iso_date(details["verified_until"]) if "verified_until" in details else None
    if until is not None:
        out.append(prop("VerifiedUntil", until, mc("VerifiedUntil"), XS.DATE))
    elif "verified_until" in details:
        rest["verified_until"] = details["verified_until"]
    for key, short, concept in (("reason", "Reason", "Reason"), ("note", "Note", "Note")):
        if key in details:
            out.append(prop(short, str(details[key]), mc(concept)))
    sw = details.get("software")
    if isinstance(sw, Mapping):
        approved = details.get("approved")
        out.append(software_item("Software", sw, approved if isinstance(approved, bool) else None))
    elif sw is not None:
        rest["software"] = sw
    if rest:
        text = json.dumps(rest, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        out.append(prop("OtherDetails", text, mc("OtherDetails")))
    return out


def _event(e: Any) -> aas.SubmodelElementCollection:
    return collection(
        None,
        mc("LifeCycleEvent"),
        [
            prop("EventId", e.id, mc("EventId")),
            prop("Sequence", e.seq, mc("EventSequence"), XS.INT),
            prop("Kind", e.kind, mc("EventKind")),
            prop("OccurredAt", e.occurred_at, mc("OccurredAt"), XS.DATE_TIME),
            prop("RecordedBy", e.recorded_by, mc("RecordedBy")),
            prop("StateAfter", e.state_after, mc("StateAfter")),
            prop("LeafIndex", e.leaf_index, mc("LedgerLeafIndex"), XS.LONG),
            *_details(e.details or {}),
        ],
    )


def _life_cycle(v: InstrumentView, _base_url: str) -> aas.Submodel:
    i = v.instrument
    return submodel(
        i.id,
        "LifeCycle",
        mc("LifeCycle"),
        [
            prop("State", i.state, mc("LifeCycleState")),
            prop("EventCount", len(v.events), mc("EventCount"), XS.INT),
            prop("RegisteredLeafIndex", i.registered_leaf, mc("LedgerLeafIndex"), XS.LONG),
            element_list(
                "Events", mc("Events"), mc("LifeCycleEvent"), [_event(e) for e in v.events]
            ),
        ],
        "Life-cycle events, each with the transparency-log leaf that records it",
    )


def _time_series(v: InstrumentView, base_url: str) -> aas.Submodel:
    """IDTA 02008-1-1 Time Series: one LinkedSegment at the node's measurements endpoint.

    The endpoint serves the readings from the metrological data lake (keyset pages by
    quantity and time, ``start``/``end``/``quantity`` filters; the instrument's readers, with
    the access log). The series grows as the device sends: the segment is ``in progress``.
    """
    i = v.instrument
    endpoint = base_url.rstrip("/") + MEASUREMENTS_PATH.format(id=i.id)
    ts = semantic
    return submodel(
        i.id,
        "TimeSeries",
        ts(_idta.TS),
        [
            collection(
                "Metadata",
                ts(_idta.TS_METADATA),
                [
                    mlp("Name", f"Signed measurements of {i.serial}", ts(_idta.TS_METADATA_NAME)),
                    mlp(
                        "Description",
                        "Readings signed by the instrument's device key: time, quantity code "
                        "(such as an OBIS code), value, unit and status",
                        ts(_idta.TS_METADATA_DESCRIPTION),
                    ),
                    collection(
                        "Record",
                        ts(_idta.TS_RECORD),
                        [
                            prop("Time", None, ts(_idta.TS_UTC_TIME), XS.DATE_TIME),
                            prop("QuantityCode", None, mc("QuantityCode")),
                            prop("Value", None, mc("MeasuredValue"), XS.DOUBLE),
                            prop("Unit", None, mc("MeasurementUnit")),
                            prop("Status", None, mc("MeasurementStatus")),
                        ],
                    ),
                ],
            ),
            collection(
                "Segments",
                ts(_idta.TS_SEGMENTS),
                [
                    collection(
                        "LinkedSegment",
                        ts(_idta.TS_LINKED_SEGMENT),
                        [
                            mlp("Name", "Signed measurements", ts(_idta.TS_SEGMENT_NAME)),
                            mlp(
                                "Description",
                                "GET with a bearer token (the instrument's readers): pages of "
                                "{t, quantity, value, unit, status, batch_counter} from the "
                                "node's metrological data lake; query start, end, quantity",
                                ts(_idta.TS_SEGMENT_DESCRIPTION),
                            ),
                            prop("State", "in progress", ts(_idta.TS_STATE)),
                            prop("Endpoint", endpoint, ts(_idta.TS_ENDPOINT)),
                            prop("Query", None, ts(_idta.TS_QUERY)),
                        ],
                    )
                ],
            ),
            prop("MeasurementsAvailable", boolean(True), mc("MeasurementsAvailable"), XS.BOOLEAN),
        ],
        "Time series (IDTA 02008-1-1) of the instrument's signed measurements",
    )


#: submodel name -> renderer(view, base url)
RENDERERS: dict[str, Callable[[InstrumentView, str], aas.Submodel]] = {
    "Nameplate": _nameplate,
    "Conformity": _conformity,
    "SoftwareIdentification": _software,
    "Verification": _verification,
    "LifeCycle": _life_cycle,
    "TimeSeries": _time_series,
}
