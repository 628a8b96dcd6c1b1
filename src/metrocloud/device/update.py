"""Verified software download (WELMEC 7.2 extension D).

A software package is a manifest, the modules, and the manufacturer's signature over the
manifest. The manifest (RFC 8785 canonical JSON) is::

    {"format": "metrocloud software package v1", "name": ..., "version": ...,
     "algorithm": "sha256", "checksum": "<hex64 over the legally relevant modules>",
     "size": <total bytes of the legally relevant modules>,
     "modules": ["<names of the legally relevant modules, sorted>"],
     "other": ["<names of the other modules, sorted>"]}

The signature is over ``PACKAGE_DOMAIN`` + the manifest bytes. A device installs a package
only if, in this order,

1. its event log has room to record the decision (else :class:`EventLogFull`, nothing is
   changed: an update that cannot be traced is not made, D4);
2. the signature verifies under the manufacturer key the device was provisioned with
   (D2: authentication of the downloaded software);
3. the checksum it computes itself over the delivered legally relevant modules, and their
   names and size, equal the manifest's (D3: integrity);
4. the certificate it holds is ``valid`` and not past its ``valid_until``, and the
   package's software identification is one the certificate approves (D1, P2/U2: only
   approved, identified software runs).

Each decision is recorded (D4: traceability): ``software_updated`` with the old and new
identification, or ``software_update_refused`` with the reason; a refusal then raises
:class:`UpdateRefused`. The other (not legally relevant) modules travel with the package
and are covered by the signature through their names only; their content is outside the
identification (extension S).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import orjson

from metrocloud.device.eventlog import DeviceEventKind, EventLog
from metrocloud.device.software import CHECKSUM_ALGORITHM, SoftwareImage
from metrocloud.domain.certificates import Certificate, CertificateStatus, effective_status
from metrocloud.domain.errors import InvalidInput, RuleViolation, VerificationError
from metrocloud.domain.types import ChecksumAlgorithm, SoftwareIdentification
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "PACKAGE_DOMAIN",
    "PACKAGE_FORMAT",
    "Approval",
    "RefusalReason",
    "SoftwarePackage",
    "UpdateRefused",
    "build_package",
    "check_package",
    "install_package",
]

PACKAGE_FORMAT = "metrocloud software package v1"
#: prefix of the bytes the manufacturer signs
PACKAGE_DOMAIN = b"metrocloud-software-package-v1\x00"


class RefusalReason(StrEnum):
    SIGNATURE_INVALID = "signature-invalid"
    MANIFEST_INVALID = "manifest-invalid"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    ALGORITHM_UNSUPPORTED = "algorithm-unsupported"
    CERTIFICATE_NOT_VALID = "certificate-not-valid"
    CERTIFICATE_EXPIRED = "certificate-expired"
    NOT_APPROVED = "not-approved"


_REASON_RULE = {
    RefusalReason.SIGNATURE_INVALID: "WELMEC 7.2 D2 (authentication of downloaded software)",
    RefusalReason.MANIFEST_INVALID: "WELMEC 7.2 D3 (integrity of downloaded software)",
    RefusalReason.CHECKSUM_MISMATCH: "WELMEC 7.2 D3 (integrity of downloaded software)",
    RefusalReason.ALGORITHM_UNSUPPORTED: "WELMEC 7.2 D3 (integrity of downloaded software)",
    RefusalReason.CERTIFICATE_NOT_VALID: "WELMEC 7.2 D1; MID 2014/32/EU Annex II module B",
    RefusalReason.CERTIFICATE_EXPIRED: "WELMEC 7.2 D1; MID 2014/32/EU Annex II module B",
    RefusalReason.NOT_APPROVED: "WELMEC 7.2 D1, P2/U2 (approved software identification)",
}


class UpdateRefused(RuleViolation):
    """The device refused a software package; :attr:`reason` says which check failed."""

    code = "software-update-refused"

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"software update refused ({reason}): {detail}", rule=_REASON_RULE[reason])
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """What the device takes from its type-examination certificate: status, validity, and
    the approved legally relevant software identifications."""

    certificate: str
    status: CertificateStatus
    valid_until: date
    software: tuple[SoftwareIdentification, ...]

    @classmethod
    def from_certificate(cls, certificate: Certificate) -> Approval:
        return cls(
            certificate=certificate.number,
            status=certificate.status,
            valid_until=certificate.valid_until,
            software=tuple(certificate.instrument_type.software),
        )

    def check(self, identification: SoftwareIdentification, today: date) -> None:
        """Raise :class:`UpdateRefused` unless ``identification`` may run on ``today``."""
        status = effective_status(self.status, self.valid_until, today)
        if status is CertificateStatus.EXPIRED:
            raise UpdateRefused(
                RefusalReason.CERTIFICATE_EXPIRED,
                f"certificate {self.certificate} expired (valid until {self.valid_until}, "
                f"today is {today})",
            )
        if status is not CertificateStatus.VALID:
            raise UpdateRefused(
                RefusalReason.CERTIFICATE_NOT_VALID,
                f"certificate {self.certificate} is {status}, not valid",
            )
        if identification not in self.software:
            raise UpdateRefused(
                RefusalReason.NOT_APPROVED,
                f"software {identification.name} {identification.version} "
                f"({identification.algorithm} {identification.checksum}) is not among the "
                f"{len(self.software)} identification(s) certificate {self.certificate} "
                "approves",
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "certificate": self.certificate,
            "status": str(self.status),
            "valid_until": self.valid_until.isoformat(),
            "software": [s.as_dict() for s in self.software],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Approval:
        try:
            return cls(
                certificate=str(raw["certificate"]),
                status=CertificateStatus(raw["status"]),
                valid_until=date.fromisoformat(raw["valid_until"]),
                software=tuple(
                    SoftwareIdentification(
                        name=s["name"],
                        version=s["version"],
                        algorithm=ChecksumAlgorithm(s["algorithm"]),
                        checksum=s["checksum"],
                    )
                    for s in raw["software"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"approval is malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class SoftwarePackage:
    """A signed software package as delivered (the manifest is kept as signed bytes)."""

    manifest_bytes: bytes
    signature: bytes
    legally_relevant: Mapping[str, bytes]
    other: Mapping[str, bytes]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest, parsed (not yet verified)."""
        return _parse_manifest(self.manifest_bytes)

    @property
    def claimed(self) -> SoftwareIdentification:
        """The identification the manifest claims (checked by :func:`check_package`)."""
        m = self.manifest
        return SoftwareIdentification(
            name=m["name"],
            version=m["version"],
            algorithm=ChecksumAlgorithm(m["algorithm"]),
            checksum=m["checksum"],
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON for delivery: manifest and modules in standard base64."""
        return canonical_json(
            {
                "format": PACKAGE_FORMAT,
                "manifest": base64.b64encode(self.manifest_bytes).decode("ascii"),
                "signature": base64.b64encode(self.signature).decode("ascii"),
                "legally_relevant": _b64_modules(self.legally_relevant),
                "other": _b64_modules(self.other),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SoftwarePackage:
        try:
            raw = orjson.loads(data)
            if type(raw) is not dict or raw.get("format") != PACKAGE_FORMAT:
                raise ValueError(f"not a {PACKAGE_FORMAT!r} object")
            return cls(
                manifest_bytes=base64.b64decode(raw["manifest"], validate=True),
                signature=base64.b64decode(raw["signature"], validate=True),
                legally_relevant=_unb64_modules(raw["legally_relevant"]),
                other=_unb64_modules(raw["other"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise InvalidInput(
                f"software package is malformed: {exc}", rule=PACKAGE_FORMAT
            ) from None


def build_package(
    manufacturer_key: PrivateKey,
    *,
    name: str,
    version: str,
    legally_relevant: Mapping[str, bytes],
    other: Mapping[str, bytes] | None = None,
) -> SoftwarePackage:
    """The manufacturer's side: identify the modules, write and sign the manifest."""
    image = SoftwareImage(
        name=name, version=version, legally_relevant=legally_relevant, other=other or {}
    )
    manifest_bytes = canonical_json(_manifest(image.identification, image))
    return SoftwarePackage(
        manifest_bytes=manifest_bytes,
        signature=manufacturer_key.sign(PACKAGE_DOMAIN + manifest_bytes),
        legally_relevant=image.legally_relevant,
        other=image.other,
    )


def check_package(
    package: SoftwarePackage,
    *,
    manufacturer_key: PublicKey,
    approval: Approval,
    today: date,
) -> SoftwareImage:
    """Checks 2-4 of the module docstring; the image to install, or :class:`UpdateRefused`."""
    try:
        manufacturer_key.verify(package.signature, PACKAGE_DOMAIN + package.manifest_bytes)
    except VerificationError:
        raise UpdateRefused(
            RefusalReason.SIGNATURE_INVALID,
            f"the manifest signature does not verify under the manufacturer key "
            f"{manufacturer_key.key_id}",
        ) from None
    try:
        manifest = package.manifest  # authentic from here on
    except InvalidInput as exc:
        raise UpdateRefused(RefusalReason.MANIFEST_INVALID, exc.message) from None
    if manifest["algorithm"] != CHECKSUM_ALGORITHM:
        raise UpdateRefused(
            RefusalReason.ALGORITHM_UNSUPPORTED,
            f"the manifest names checksum algorithm {manifest['algorithm']!r}; the device "
            f"computes {CHECKSUM_ALGORITHM}",
        )
    try:
        image = SoftwareImage(
            name=manifest["name"],
            version=manifest["version"],
            legally_relevant=package.legally_relevant,
            other=package.other,
        )
    except InvalidInput as exc:
        raise UpdateRefused(RefusalReason.MANIFEST_INVALID, exc.message) from None
    expected = _manifest(image.identification, image)
    if expected != manifest:
        differing = sorted(k for k in manifest if manifest[k] != expected.get(k))
        raise UpdateRefused(
            RefusalReason.CHECKSUM_MISMATCH,
            f"the delivered modules do not match the manifest ({', '.join(differing)} differ; "
            f"computed checksum {image.checksum}, manifest {manifest['checksum']})",
        )
    approval.check(image.identification, today)
    return image


def install_package(
    package: SoftwarePackage,
    *,
    log: EventLog,
    installed: SoftwareImage,
    manufacturer_key: PublicKey,
    approval: Approval,
    today: date,
    before_record: Callable[[SoftwareImage], None] | None = None,
) -> SoftwareImage:
    """Decide on ``package`` and record the decision in ``log``; the new image or a refusal.

    ``before_record`` is called with an accepted image before the ``software_updated``
    record is written (the reference device stages the image on disk there); if it raises,
    nothing is recorded and nothing changes. The caller then puts the image into effect,
    after its record exists, so an update is never in effect without its trace (D4).
    """
    log.ensure_room()
    try:
        image = check_package(
            package, manufacturer_key=manufacturer_key, approval=approval, today=today
        )
    except UpdateRefused as refusal:
        log.append(
            DeviceEventKind.SOFTWARE_UPDATE_REFUSED,
            {
                "reason": str(refusal.reason),
                "detail": refusal.detail,
                "claimed": _claimed_or_none(package),
                "installed": installed.identification.as_dict(),
            },
        )
        raise
    if before_record is not None:
        before_record(image)
    log.append(
        DeviceEventKind.SOFTWARE_UPDATED,
        {
            "old": installed.identification.as_dict(),
            "new": image.identification.as_dict(),
            "manufacturer_key": manufacturer_key.key_id,
            "certificate": approval.certificate,
        },
    )
    return image


def _manifest(identification: SoftwareIdentification, image: SoftwareImage) -> dict[str, Any]:
    return {
        "format": PACKAGE_FORMAT,
        "name": identification.name,
        "version": identification.version,
        "algorithm": str(identification.algorithm),
        "checksum": identification.checksum,
        "size": sum(len(data) for data in image.legally_relevant.values()),
        "modules": sorted(image.legally_relevant),
        "other": sorted(image.other),
    }


_MANIFEST_FIELDS = frozenset(
    {"format", "name", "version", "algorithm", "checksum", "size", "modules", "other"}
)


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"software manifest is not JSON: {exc}", rule=PACKAGE_FORMAT) from None
    if (
        type(raw) is not dict
        or raw.keys() != _MANIFEST_FIELDS
        or raw["format"] != PACKAGE_FORMAT
        or not all(type(raw[k]) is str for k in ("name", "version", "algorithm", "checksum"))
    ):
        raise InvalidInput(
            f"software manifest must be a {PACKAGE_FORMAT!r} object with exactly "
            f"{', '.join(sorted(_MANIFEST_FIELDS))}",
            rule=PACKAGE_FORMAT,
        )
    return raw


def _claimed_or_none(package: SoftwarePackage) -> dict[str, Any] | None:
    try:
        m = package.manifest
    except InvalidInput:
        return None
    return {k: m[k] for k in ("name", "version", "algorithm", "checksum")}


def _b64_modules(modules: Mapping[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(data).decode("ascii") for name, data in modules.items()}


def _unb64_modules(raw: Any) -> Mapping[str, bytes]:
    if type(raw) is not dict:
        raise ValueError("modules must be an object")
    return MappingProxyType(
        {name: base64.b64decode(text, validate=True) for name, text in raw.items()}
    )
