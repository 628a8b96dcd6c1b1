"""Helpers of the device tests: keys, a settable clock, software images, an approval."""

from __future__ import annotations

from datetime import UTC, date, datetime

from metrocloud.device import Approval, SoftwareImage, SoftwarePackage, build_package
from metrocloud.domain.certificates import CertificateStatus
from metrocloud.trust.keys import PrivateKey

INSTRUMENT = "ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6"
PASSPHRASE = b"device test passphrase"
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
MANUFACTURER = PrivateKey.generate()


class Clock:
    """A settable clock (the device's time source in tests)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def image(version: str = "1.0", code: bytes = b"measure()", ui: bytes = b"show()") -> SoftwareImage:
    return SoftwareImage(
        name="reference-meter",
        version=version,
        legally_relevant={"metering.py": code, "signing.py": b"sign()"},
        other={"display.py": ui},
    )


def package(version: str = "1.1", code: bytes = b"measure_better()") -> SoftwarePackage:
    new = image(version, code)
    return build_package(
        MANUFACTURER,
        name=new.name,
        version=new.version,
        legally_relevant=new.legally_relevant,
        other=new.other,
    )


def approval(*images: SoftwareImage, **overrides: object) -> Approval:
    fields: dict[str, object] = {
        "certificate": "DE-M-26-0001",
        "status": CertificateStatus.VALID,
        "valid_until": date(2035, 12, 31),
        "software": tuple(i.identification for i in images),
    }
    fields.update(overrides)
    return Approval(**fields)  # type: ignore[arg-type]
