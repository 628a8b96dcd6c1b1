"""metrocloud's own semantic ids and their ConceptDescriptions (IEC 61360 data).

Every semantic id under :data:`metrocloud.twin.ids.SEMANTICS` that a shell or submodel uses
is one of :data:`CONCEPTS` and has a ConceptDescription here. Where a published dictionary
already defines a concept (ECLASS IRDIs in the IDTA Digital Nameplate, the IDTA Time Series
template), the mapping uses that id instead and no ConceptDescription of ours exists for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from aas_core3 import types as aas

from metrocloud.twin.ids import SEMANTICS

__all__ = ["CONCEPTS", "IEC61360", "Concept", "concept_descriptions", "semantic_id"]

#: the IEC 61360 data specification template, as AAS Part 3a v3.0 constraint AASc-3a-050 names it
IEC61360 = "https://admin-shell.io/DataSpecificationTemplates/DataSpecificationIec61360/3"

_T = aas.DataTypeIEC61360


@dataclass(frozen=True, slots=True)
class Concept:
    """One metrocloud concept: its name (the last segment of its id) and IEC 61360 data."""

    name: str
    preferred_name: str
    definition: str
    data_type: aas.DataTypeIEC61360 | None = None  # None: a submodel, collection or list
    unit: str | None = None
    #: the concept that gives the unit, when it travels with each value instead of being fixed
    unit_concept: str | None = None

    @property
    def id(self) -> str:
        return SEMANTICS + self.name


_STRING, _DATE, _TIMESTAMP, _INT, _BOOL = (
    _T.STRING,
    _T.DATE,
    _T.TIMESTAMP,
    _T.INTEGER_COUNT,
    _T.BOOLEAN,
)

_ALL = (
    # submodels of metrocloud's own making
    Concept(
        "Conformity",
        "conformity",
        "The conformity of one instrument: the EU-type examination certificate of its type and "
        "the declarations of conformity covering it (MID 2014/32/EU Art. 14, Annex II).",
    ),
    Concept(
        "SoftwareIdentification",
        "legally relevant software identification",
        "Name, version and checksum of legally relevant software (WELMEC Guide 7.2, S1).",
    ),
    Concept(
        "Verification",
        "verification",
        "The verification status of an instrument in service: life-cycle state, verified-until "
        "date and the last verification result with the authority that recorded it.",
    ),
    Concept(
        "LifeCycle",
        "life cycle",
        "Every life-cycle event of an instrument, in the order of the registry, each with the "
        "index of the transparency-log leaf that records it (RFC 9162).",
    ),
    Concept(
        "TypeNameplate",
        "nameplate of an instrument type",
        "Manufacturer, type designation and category of an instrument type. Elements follow "
        "the IDTA 02006-2-0 Digital Nameplate where it defines them; serial number and year "
        "of construction do not apply to a type.",
    ),
    Concept(
        "Certificate",
        "EU-type examination certificate",
        "The EU-type examination certificate of an instrument type, issued by a notified body "
        "(MID 2014/32/EU Annex II module B).",
    ),
    # identification
    Concept(
        "ManufacturerId",
        "manufacturer id",
        "Identifier of the manufacturer as a party of the metrocloud node.",
        _STRING,
    ),
    Concept("PartyId", "party id", "Identifier of a party of the metrocloud node.", _STRING),
    Concept("PartyName", "party name", "Registered name of a party.", _STRING),
    Concept(
        "InstrumentCategory",
        "instrument category",
        "Legally controlled instrument category: MID annex code (MI-001 .. MI-010), NAWI "
        "(2014/31/EU) or a national category such as DE-EV.",
        _STRING,
    ),
    Concept(
        "LegalBasis",
        "legal basis",
        "Directive and annex (or national law) that govern the instrument category.",
        _STRING,
    ),
    Concept(
        "AccuracyClass",
        "accuracy class",
        "Accuracy class of the instrument type as named in the applicable MID annex or 2014/31/EU.",
        _STRING,
    ),
    Concept(
        "Region",
        "NUTS region",
        "Region of installation as a NUTS code (Regulation (EC) 1059/2003).",
        _STRING,
    ),
    # certificates and declarations
    Concept(
        "CertificateReference",
        "certificate reference",
        "Reference to the Certificate submodel of the instrument type's shell.",
        _T.IRI,
    ),
    Concept(
        "CertificateNumber",
        "certificate number",
        "Number of the EU-type examination certificate as issued by the notified body.",
        _STRING,
    ),
    Concept(
        "ConformityModule",
        "conformity assessment module",
        "Conformity assessment module of Decision 768/2008/EC as used by MID Annex II.",
        _STRING,
    ),
    Concept(
        "CertificateStatus",
        "certificate status",
        "Status recorded for the certificate: valid, suspended, withdrawn or expired.",
        _STRING,
    ),
    Concept("IssuedOn", "issued on", "Date of issue of the certificate.", _DATE),
    Concept(
        "ValidUntil",
        "valid until",
        "Last day of validity of the certificate (MID Annex II module B point 6).",
        _DATE,
    ),
    Concept(
        "CertificateRevision",
        "certificate revision",
        "Number of revisions of the certificate since its issue.",
        _INT,
    ),
    Concept(
        "NotifiedBody",
        "notified body",
        "The notified body that issued the certificate.",
    ),
    Concept(
        "NotifiedBodyNumber",
        "notified body number",
        "Four-digit identification number of the notified body (NANDO).",
        _STRING,
    ),
    Concept(
        "CertificateHolder",
        "certificate holder",
        "The manufacturer to whom the certificate is issued.",
    ),
    Concept(
        "RatedConditions",
        "rated operating conditions",
        "Rated operating conditions of the instrument type as stated in the certificate.",
    ),
    Concept("RatedCondition", "rated operating condition", "One rated operating condition."),
    Concept("ConditionName", "condition", "Name of a rated operating condition.", _STRING),
    Concept(
        "ConditionValue",
        "condition value",
        "Value or range of a rated operating condition.",
        _STRING,
    ),
    Concept(
        "CertificateHistory",
        "certificate history",
        "Every action on the certificate (issue, revise, suspend, reinstate, withdraw, expire).",
    ),
    Concept("CertificateChange", "certificate action", "One action on the certificate."),
    Concept(
        "CertificateAction",
        "action",
        "The action: issue, revise, suspend, reinstate, withdraw or expire.",
        _STRING,
    ),
    Concept("Reason", "reason", "Reason given for an action or an event.", _STRING),
    Concept("Note", "note", "Free-text note recorded with an event.", _STRING),
    Concept(
        "Declarations",
        "declarations of conformity",
        "Declarations of conformity that cover the instrument (MID Art. 14 and Annex XIII).",
    ),
    Concept("Declaration", "declaration of conformity", "One declaration of conformity."),
    Concept("DeclarationId", "declaration id", "Identifier of the declaration.", _STRING),
    Concept("DeclaredOn", "declared on", "Date of the declaration of conformity.", _DATE),
    Concept(
        "DocumentSha256",
        "document SHA-256",
        "SHA-256 of the signed declaration document, 64 lowercase hex characters.",
        _STRING,
    ),
    Concept(
        "LedgerLeafIndex",
        "transparency-log leaf index",
        "Index of the leaf of the node's transparency log (RFC 9162) holding the signed "
        "statement that recorded this fact; its inclusion proof is served by the node.",
        _INT,
    ),
    # software
    Concept(
        "InstalledSoftware",
        "installed software",
        "Legally relevant software identification installed on the instrument.",
    ),
    Concept(
        "ApprovedSoftware",
        "approved software",
        "Legally relevant software identifications approved by the certificate.",
    ),
    Concept(
        "SoftwareItem",
        "software identification",
        "One legally relevant software identification (WELMEC 7.2 S1).",
    ),
    Concept("SoftwareName", "software name", "Name of the legally relevant software.", _STRING),
    Concept("SoftwareVersion", "software version", "Version of the software.", _STRING),
    Concept(
        "ChecksumAlgorithm",
        "checksum algorithm",
        "Algorithm of the software checksum: sha256, sha384, sha512, crc16 or crc32.",
        _STRING,
    ),
    Concept("Checksum", "checksum", "Checksum of the software, lowercase hex.", _STRING),
    Concept(
        "SoftwareApproved",
        "software approved",
        "Whether the identification is one the certificate approves.",
        _BOOL,
    ),
    # verification and life cycle
    Concept(
        "LifeCycleState",
        "life-cycle state",
        "registered, placed_on_market, in_service, out_of_service or decommissioned.",
        _STRING,
    ),
    Concept(
        "VerifiedUntil",
        "verified until",
        "Last day of validity of the instrument's verification; empty if none holds.",
        _DATE,
    ),
    Concept(
        "LastVerification",
        "last verification",
        "The newest verified or verification_failed event of the instrument.",
    ),
    Concept("VerificationResult", "verification result", "passed or failed.", _STRING),
    Concept(
        "Authority",
        "authority",
        "The market surveillance or verification authority that recorded the result.",
    ),
    Concept(
        "Events",
        "life-cycle events",
        "Life-cycle events of the instrument, oldest first.",
    ),
    Concept("EventCount", "number of events", "Number of life-cycle events.", _INT),
    Concept("LifeCycleEvent", "life-cycle event", "One life-cycle event."),
    Concept("EventId", "event id", "Identifier of the event.", _STRING),
    Concept(
        "EventSequence",
        "sequence number",
        "Position of the event in the instrument's history.",
        _INT,
    ),
    Concept(
        "EventKind",
        "event kind",
        "Kind of life-cycle event (placed_on_market, put_into_service, verified, ...).",
        _STRING,
    ),
    Concept("OccurredAt", "occurred at", "When the event happened (UTC).", _TIMESTAMP),
    Concept("RecordedBy", "recorded by", "Party that recorded and signed the event.", _STRING),
    Concept("StateAfter", "state after", "Life-cycle state after the event.", _STRING),
    Concept(
        "OtherDetails",
        "other details",
        "Further details of the event as recorded, as JSON text.",
        _STRING,
    ),
    # time series (variables of the IDTA 02008 record)
    Concept(
        "MeasurementsAvailable",
        "measurements available",
        "Whether the node serves the instrument's signed measurements at the endpoint yet.",
        _BOOL,
    ),
    Concept(
        "QuantityCode",
        "quantity code",
        "Code of the measured quantity, such as an OBIS code (IEC 62056-6-1).",
        _STRING,
    ),
    Concept(
        "MeasuredValue",
        "measured value",
        "Value of a signed measurement, in the unit that the reading gives with it.",
        _T.REAL_MEASURE,
        unit_concept="MeasurementUnit",
    ),
    Concept("MeasurementUnit", "unit", "Unit of the measured value (UCUM).", _STRING),
    Concept(
        "MeasurementStatus", "status", "Status of the measurement as signed by the device.", _STRING
    ),
)

#: every metrocloud concept by name
CONCEPTS: dict[str, Concept] = {c.name: c for c in _ALL}


def semantic_id(name: str) -> str:
    """The semantic id of metrocloud concept ``name``; ``KeyError`` if there is no such concept."""
    return CONCEPTS[name].id


def _description(c: Concept) -> aas.ConceptDescription:
    content = aas.DataSpecificationIEC61360(
        preferred_name=[aas.LangStringPreferredNameTypeIEC61360("en", c.preferred_name)],
        definition=[aas.LangStringDefinitionTypeIEC61360("en", c.definition)],
        data_type=c.data_type,
        unit=c.unit,
        unit_id=aas.Reference(
            aas.ReferenceTypes.MODEL_REFERENCE,
            [aas.Key(aas.KeyTypes.CONCEPT_DESCRIPTION, SEMANTICS + c.unit_concept)],
        )
        if c.unit_concept
        else None,
    )
    spec = aas.EmbeddedDataSpecification(
        data_specification=aas.Reference(
            aas.ReferenceTypes.EXTERNAL_REFERENCE,
            [aas.Key(aas.KeyTypes.GLOBAL_REFERENCE, IEC61360)],
        ),
        data_specification_content=content,
    )
    return aas.ConceptDescription(
        id=c.id,
        id_short=c.name,
        description=[aas.LangStringTextType("en", c.definition)],
        embedded_data_specifications=[spec],
    )


@cache
def _descriptions() -> tuple[aas.ConceptDescription, ...]:
    return tuple(_description(c) for c in _ALL)


def concept_descriptions() -> list[aas.ConceptDescription]:
    """A ConceptDescription per metrocloud concept (fresh list; the objects are shared)."""
    return list(_descriptions())
