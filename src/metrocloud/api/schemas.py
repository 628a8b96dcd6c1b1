"""Wire schemas: what JSON enters and leaves the API (pydantic, one variant per use)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateStatus, ConformityModule
from metrocloud.domain.instruments import EventKind, LifeCycleState
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import ChecksumAlgorithm

__all__ = [
    "MAX_BATCH",
    "AccessLogOut",
    "CertificateChangeIn",
    "CertificateIn",
    "CertificateOut",
    "CertificateRecorded",
    "CertificateRevisionIn",
    "ConsistencyProofOut",
    "DeclarationIn",
    "DeclarationOut",
    "DeviceKeyOut",
    "EntryOut",
    "EventIn",
    "EventOut",
    "EventRecorded",
    "GrantIn",
    "GrantOut",
    "HistoryOut",
    "InclusionProofOut",
    "InstrumentIn",
    "InstrumentOut",
    "InstrumentRef",
    "InstrumentsIn",
    "InstrumentsRegistered",
    "MeOut",
    "NodeOut",
    "Page",
    "PartyCreated",
    "PartyIn",
    "PartyOut",
    "Problem",
    "PublicVerifyIn",
    "PublicVerifyOut",
    "ReadingOut",
    "Recorded",
    "SoftwareIdIn",
    "TokenIn",
    "TokenInfo",
    "TokenOut",
    "TokenRequest",
    "TreeHeadOut",
    "VerifiedInstrumentOut",
]

T = TypeVar("T")

_SERIAL = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"
_NUTS = r"^[A-Z]{2}[0-9A-Z]{0,3}$"
_ID = r"^[a-z]{3}-[A-Z]{2}-[0-9A-HJKMNP-TV-Z]{26}$"
MAX_BATCH = 10_000


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class NodeOut(Out):
    node_id: str
    name: str
    country: str
    algorithm: str
    key_id: str
    public_key: str = Field(description="PEM SubjectPublicKeyInfo of the node key.")
    log_id: str
    version: str


class SoftwareIdIn(In):
    name: str = Field(min_length=1, max_length=100, examples=["EMH-LRS"])
    version: str = Field(min_length=1, max_length=50, examples=["2.1.4"])
    algorithm: ChecksumAlgorithm = Field(examples=["sha256"])
    checksum: str = Field(
        pattern=r"^[0-9a-f]{4,128}$",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )


class PartyIn(In):
    name: str = Field(min_length=1, max_length=200, examples=["PTB Braunschweig"])
    role: PartyRole
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", examples=["DE"])
    nb_number: str | None = Field(default=None, pattern=r"^[0-9]{4}$", examples=["0102"])
    public_key: str | None = Field(
        default=None,
        max_length=4000,
        description="PEM or base64 DER SubjectPublicKeyInfo "
        "(Ed25519 or ECDSA P-256) of the party's own key.",
    )


class PartyOut(Out):
    id: str
    name: str
    role: PartyRole
    country: str
    nb_number: str | None
    public_key: str | None
    key_id: str | None
    admitted_at: str
    leaf_index: int


class PartyCreated(PartyOut):
    pass


class TokenIn(In):
    label: str = Field(default="", max_length=200)


class TokenOut(Out):
    token_id: str
    party_id: str
    token: str = Field(description="The bearer token. Shown once; the node keeps only a hash.")
    expires_at: str


class TokenInfo(Out):
    token_id: str
    party_id: str
    label: str
    issued_at: str
    expires_at: str | None
    revoked_at: str | None


class TokenRequest(In):
    party_id: str = Field(max_length=40)
    timestamp: str = Field(max_length=40, examples=["2026-11-24T10:00:00.000Z"])
    key_id: str = Field(max_length=64)
    signature: str = Field(
        max_length=400,
        description="base64 signature by the party key over "
        "`metrocloud-token-request-v1\\0` + party_id + timestamp",
    )


class CertificateIn(In):
    number: str = Field(min_length=1, max_length=80, examples=["DE-M-22-0001"])
    holder_id: str = Field(pattern=_ID, description="The manufacturer the certificate is for.")
    module: ConformityModule = ConformityModule.B
    category: InstrumentCategory
    model: str = Field(min_length=1, max_length=200, examples=["EM-340 D"])
    accuracy_class: str = Field(min_length=1, max_length=16, examples=["B"])
    software: list[SoftwareIdIn] = Field(min_length=1, max_length=100)
    rated_conditions: dict[str, str] = Field(
        default_factory=dict, max_length=50, examples=[{"temperature": "-25 °C .. +55 °C"}]
    )
    issued_on: date | None = None
    valid_until: date | None = None


class CertificateOut(Out):
    id: str
    number: str
    notified_body_id: str
    holder_id: str
    module: ConformityModule
    category: InstrumentCategory
    model: str
    accuracy_class: str
    software: list[dict[str, str]]
    rated_conditions: dict[str, str]
    issued_on: date
    valid_until: date
    status: CertificateStatus
    revision: int
    leaf_index: int


class Recorded(Out):
    leaf_index: int = Field(description="Index of the statement in the transparency log.")


class CertificateRecorded(Recorded):
    certificate: CertificateOut


class CertificateChangeIn(In):
    reason: str = Field(min_length=1, max_length=2000)


class CertificateRevisionIn(CertificateChangeIn):
    model: str | None = Field(default=None, min_length=1, max_length=200)
    accuracy_class: str | None = Field(default=None, min_length=1, max_length=16)
    software: list[SoftwareIdIn] | None = Field(default=None, min_length=1, max_length=100)
    rated_conditions: dict[str, str] | None = Field(default=None, max_length=50)
    valid_until: date | None = None


class HistoryOut(Out):
    seq: int
    action: str
    status: CertificateStatus
    revision: int
    reason: str
    at: str
    leaf_index: int


class InstrumentIn(In):
    serial: str = Field(pattern=_SERIAL, examples=["1EMH0012345678"])
    certificate_id: str = Field(pattern=_ID)
    device_keys: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Device public keys: PEM or base64 DER SPKI.",
    )
    region: str | None = Field(default=None, pattern=_NUTS, examples=["DE91"])
    software: SoftwareIdIn | None = Field(
        default=None,
        description="Installed legally relevant software; default the newest approved one.",
    )


class InstrumentsIn(In):
    instruments: list[InstrumentIn] = Field(min_length=1, max_length=MAX_BATCH)


class InstrumentRef(Out):
    id: str
    serial: str
    leaf_index: int


class InstrumentsRegistered(Recorded):
    instruments: list[InstrumentRef]


class DeviceKeyOut(Out):
    key_id: str
    algorithm: str
    public_key: str
    revoked: bool


class InstrumentOut(Out):
    id: str
    serial: str
    manufacturer_id: str
    certificate_id: str
    category: InstrumentCategory
    state: LifeCycleState
    operator_id: str | None
    region: str | None
    verified_until: date | None
    software: dict[str, str] | None
    event_count: int
    registered_leaf: int
    leaf_index: int
    device_keys: list[DeviceKeyOut]
    home_node: str | None = Field(
        default=None,
        description="The node the instrument is homed on (GET of one instrument; an instrument "
        "of another member state is answered by its home node, docs/grid.md#look-up).",
    )


class EventIn(In):
    kind: EventKind
    occurred_at: datetime | None = Field(
        default=None, description="When it happened (RFC 3339); default: now."
    )
    details: dict[str, Any] = Field(default_factory=dict, examples=[{"region": "DE21"}])


class EventRecorded(Out):
    id: str
    instrument_id: str
    kind: EventKind
    occurred_at: str
    state_after: LifeCycleState
    leaf_index: int


class EventOut(Out):
    id: str
    instrument_id: str
    seq: int
    kind: EventKind
    occurred_at: str
    recorded_by: str
    details: dict[str, Any]
    state_after: LifeCycleState
    leaf_index: int


class DeclarationIn(In):
    certificate_id: str = Field(pattern=_ID)
    module: ConformityModule = Field(examples=["D"])
    instrument_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    declared_on: date | None = None
    document_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class DeclarationOut(Out):
    id: str
    certificate_id: str
    manufacturer_id: str
    module: ConformityModule
    instrument_ids: list[str]
    declared_on: date
    document_sha256: str | None
    leaf_index: int


class GrantIn(In):
    grantee_id: str = Field(pattern=_ID)
    instrument_id: str | None = Field(
        default=None, pattern=_ID, description="One instrument; null: all of yours."
    )


class GrantOut(Out):
    id: str
    owner_id: str
    grantee_id: str
    instrument_id: str | None
    created_at: str
    revoked_at: str | None


class AccessLogOut(Out):
    id: int
    at: str
    reader_id: str
    reader_role: PartyRole
    action: str
    resource_type: str
    resource_id: str
    via_grant: bool


class MeOut(Out):
    party_id: str
    role: PartyRole
    country: str
    token_id: str | None


class TreeHeadOut(Out):
    tree_size: int
    root_hash: str = Field(description="hex SHA-256")
    timestamp: int = Field(description="milliseconds since the Unix epoch")
    signature: str = Field(
        description="base64 signature by the node key over "
        "`metrocloud-tree-head-v1\\0` + JCS({log_id, tree_size, root_hash, "
        "timestamp})"
    )
    log_id: str
    key_id: str


class EntryOut(Out):
    index: int
    entry: str = Field(description="base64 of the exact leaf bytes (a signed statement)")
    leaf_hash: str = Field(description="hex SHA-256(0x00 || entry)")


class InclusionProofOut(Out):
    leaf_index: int
    tree_size: int
    audit_path: list[str]


class ConsistencyProofOut(Out):
    first: int
    second: int
    proof: list[str]


class PublicVerifyIn(In):
    ocmf: str | None = Field(
        default=None,
        description="One OCMF record: `OCMF|{payload}|{signature}`, the payload exactly as signed.",
        examples=['OCMF|{"FV":"1.0","MS":"1EMH0012345678","RD":[...]}|{"SD":"3045..."}'],
    )
    xml: str | None = Field(
        default=None,
        description="Instead of `ocmf`: a Transparenzsoftware XML container with exactly one "
        "`<value>` (its `<publicKey>` is used when `public_key` is not given).",
    )
    public_key: str | None = Field(
        default=None,
        max_length=4000,
        description="The meter's public key: DER SubjectPublicKeyInfo as hex or base64. Without "
        "it, the device keys registered on this node for the record's meter serial (MS) are used.",
    )

    @model_validator(mode="after")
    def _one_record(self) -> PublicVerifyIn:
        if (self.ocmf is None) == (self.xml is None):
            raise ValueError("give exactly one of 'ocmf' (an OCMF string) and 'xml' (a container)")
        return self


class ReadingOut(Out):
    time: str | None = Field(description="TM as written")
    transaction: str | None = Field(description="TX")
    value: str | None = Field(description="RV as written")
    unit: str | None = Field(description="RU")
    obis: str | None = Field(description="RI")
    status: str | None = Field(description="ST")


class VerifiedInstrumentOut(Out):
    id: str
    serial: str
    category: InstrumentCategory
    certificate_id: str
    certificate_status: CertificateStatus = Field(description="As of today (expired included).")
    certificate_valid: bool


class PublicVerifyOut(Out):
    verdict: Literal["valid", "invalid", "error"] = Field(
        description="valid; invalid (the signature or a rule of the record does not hold); "
        "error (cannot be checked: no key, unsupported algorithm, unusable key)"
    )
    reason: str | None = Field(
        description="null when valid; else every reason, `; `-separated, each with its rule."
    )
    algorithm: str | None = Field(description="SA as verified (default filled in)")
    meter_serial: str | None = Field(description="MS of the record")
    readings: list[ReadingOut]
    key_source: Literal["request", "registry"] | None = Field(
        description="request: the key sent (says nothing about whose key it is); registry: "
        "the device keys registered here for the meter serial; null: no key."
    )
    instrument: VerifiedInstrumentOut | None = Field(
        description="The instrument registered here under the meter serial (public facts only)."
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    rule: str | None = None
    errors: list[dict[str, Any]] | None = None
