"""Pure data and rules: the vocabulary of ARCHITECTURE.md. No I/O."""

from metrocloud.domain.categories import CATEGORY_TITLES, InstrumentCategory
from metrocloud.domain.certificates import (
    DEFAULT_VALIDITY_YEARS,
    Certificate,
    CertificateAction,
    CertificateStatus,
    ConformityModule,
    next_status,
)
from metrocloud.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    MetrocloudError,
    NotFound,
    RuleViolation,
    Unauthenticated,
    VerificationError,
)
from metrocloud.domain.instruments import (
    EVENT_RULES,
    EventKind,
    EventRule,
    Instrument,
    LifeCycleState,
    apply_event,
    validate_nuts,
    validate_serial,
)
from metrocloud.domain.parties import (
    COUNTRY_CODES,
    Party,
    PartyRole,
    validate_country,
    validate_nb_number,
)
from metrocloud.domain.types import (
    ACCURACY_CLASSES,
    ChecksumAlgorithm,
    InstrumentType,
    SoftwareIdentification,
)

__all__ = [
    "ACCURACY_CLASSES",
    "CATEGORY_TITLES",
    "COUNTRY_CODES",
    "DEFAULT_VALIDITY_YEARS",
    "EVENT_RULES",
    "Certificate",
    "CertificateAction",
    "CertificateStatus",
    "ChecksumAlgorithm",
    "Conflict",
    "ConformityModule",
    "DomainError",
    "EventKind",
    "EventRule",
    "Forbidden",
    "Instrument",
    "InstrumentCategory",
    "InstrumentType",
    "InvalidInput",
    "LifeCycleState",
    "MetrocloudError",
    "NotFound",
    "Party",
    "PartyRole",
    "RuleViolation",
    "SoftwareIdentification",
    "Unauthenticated",
    "VerificationError",
    "apply_event",
    "next_status",
    "validate_country",
    "validate_nb_number",
    "validate_nuts",
    "validate_serial",
]
