"""Verified software download (WELMEC 7.2 D1-D4): every decision checked and recorded."""

from __future__ import annotations

import dataclasses
from datetime import date
from types import MappingProxyType

import pytest

from metrocloud.device import (
    DeviceEventKind,
    EventLog,
    EventLogFull,
    RefusalReason,
    SoftwarePackage,
    UpdateRefused,
    build_package,
    check_package,
    install_package,
)
from metrocloud.device.update import PACKAGE_DOMAIN, Approval
from metrocloud.domain.certificates import CertificateStatus
from metrocloud.domain.errors import InvalidInput
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey

from ._support import MANUFACTURER, Clock, approval, image, package

TODAY = date(2026, 1, 5)
INSTALLED = image()
NEW = image("1.1", b"measure_better()")
DEVICE_KEY = PrivateKey.generate()


def _install(pkg: SoftwarePackage, appr: Approval | None = None, log: EventLog | None = None):  # type: ignore[no-untyped-def]
    log = EventLog.in_memory(DEVICE_KEY, clock=Clock()) if log is None else log
    result = install_package(
        pkg,
        log=log,
        installed=INSTALLED,
        manufacturer_key=MANUFACTURER.public_key,
        approval=appr or approval(INSTALLED, NEW),
        today=TODAY,
    )
    return result, log


def test_a_signed_approved_intact_package_is_installed_and_recorded() -> None:
    result, log = _install(package())
    assert result.identification == NEW.identification
    (record,) = log.records
    assert record.kind is DeviceEventKind.SOFTWARE_UPDATED
    assert record.data["old"] == INSTALLED.identification.as_dict()
    assert record.data["new"] == NEW.identification.as_dict()
    assert record.data["manufacturer_key"] == MANUFACTURER.key_id


def test_manifest_is_canonical_and_signed_with_a_domain_prefix() -> None:
    pkg = package()
    manifest = pkg.manifest
    assert pkg.manifest_bytes == canonical_json(manifest)
    assert manifest["checksum"] == NEW.checksum and manifest["algorithm"] == "sha256"
    assert manifest["size"] == sum(len(m) for m in NEW.legally_relevant.values())
    assert manifest["modules"] == sorted(NEW.legally_relevant)
    MANUFACTURER.public_key.verify(pkg.signature, PACKAGE_DOMAIN + pkg.manifest_bytes)
    assert pkg.claimed == NEW.identification


def test_package_bytes_round_trip() -> None:
    pkg = package()
    assert SoftwarePackage.from_bytes(pkg.to_bytes()) == pkg
    with pytest.raises(InvalidInput):
        SoftwarePackage.from_bytes(b'{"format":"other"}')


def _refusal(pkg: SoftwarePackage, appr: Approval | None = None) -> tuple[UpdateRefused, EventLog]:
    log = EventLog.in_memory(DEVICE_KEY, clock=Clock())
    with pytest.raises(UpdateRefused) as caught:
        _install(pkg, appr, log)
    (record,) = log.records
    assert record.kind is DeviceEventKind.SOFTWARE_UPDATE_REFUSED
    assert record.data["reason"] == caught.value.reason
    assert record.data["installed"] == INSTALLED.identification.as_dict()
    assert caught.value.code == "software-update-refused"
    return caught.value, log


def test_refused_when_signed_by_another_key() -> None:
    forged = build_package(
        PrivateKey.generate(),
        name=NEW.name,
        version=NEW.version,
        legally_relevant=NEW.legally_relevant,
    )
    refusal, _ = _refusal(forged)
    assert refusal.reason is RefusalReason.SIGNATURE_INVALID and "D2" in (refusal.rule or "")


def test_refused_when_the_manifest_was_changed() -> None:
    pkg = package()
    changed = pkg.manifest_bytes.replace(b'"version":"1.1"', b'"version":"1.2"')
    refusal, _ = _refusal(dataclasses.replace(pkg, manifest_bytes=changed))
    assert refusal.reason is RefusalReason.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "modules",
    [
        {"metering.py": b"measure_evil()", "signing.py": b"sign()"},  # content swapped
        {"metering.py": b"measure_better()"},  # a module left out
        {"metering.py": b"measure_better()", "signing.py": b"sign()", "x.py": b""},  # added
    ],
)
def test_refused_when_modules_do_not_match_the_manifest(modules: dict[str, bytes]) -> None:
    pkg = dataclasses.replace(package(), legally_relevant=MappingProxyType(modules))
    refusal, log = _refusal(pkg)
    assert refusal.reason is RefusalReason.CHECKSUM_MISMATCH and "D3" in (refusal.rule or "")
    assert log.records[0].data["claimed"]["checksum"] == NEW.checksum


def test_other_modules_may_not_be_smuggled_in_under_a_new_name() -> None:
    pkg = dataclasses.replace(package(), other=MappingProxyType({"display.py": b"", "y": b""}))
    refusal, _ = _refusal(pkg)
    assert refusal.reason is RefusalReason.CHECKSUM_MISMATCH


def test_refused_when_not_approved() -> None:
    refusal, _ = _refusal(package(), approval(INSTALLED))
    assert refusal.reason is RefusalReason.NOT_APPROVED and "not among" in refusal.detail


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"status": CertificateStatus.SUSPENDED}, RefusalReason.CERTIFICATE_NOT_VALID),
        ({"status": CertificateStatus.WITHDRAWN}, RefusalReason.CERTIFICATE_NOT_VALID),
        ({"status": CertificateStatus.EXPIRED}, RefusalReason.CERTIFICATE_EXPIRED),
        ({"valid_until": date(2026, 1, 4)}, RefusalReason.CERTIFICATE_EXPIRED),
    ],
)
def test_refused_unless_the_certificate_is_valid_today(
    overrides: dict[str, object], reason: RefusalReason
) -> None:
    refusal, _ = _refusal(package(), approval(INSTALLED, NEW, **overrides))
    assert refusal.reason is reason


def test_last_day_of_validity_still_counts() -> None:
    result, _ = _install(package(), approval(INSTALLED, NEW, valid_until=TODAY))
    assert result.identification == NEW.identification


def test_only_sha256_identifications_are_installed() -> None:
    manifest = {**package().manifest, "algorithm": "crc32", "checksum": "0" * 8}
    manifest_bytes = canonical_json(manifest)
    pkg = dataclasses.replace(
        package(),
        manifest_bytes=manifest_bytes,
        signature=MANUFACTURER.sign(PACKAGE_DOMAIN + manifest_bytes),
    )
    refusal, _ = _refusal(pkg)
    assert refusal.reason is RefusalReason.ALGORITHM_UNSUPPORTED


def test_a_signed_but_malformed_manifest_is_refused() -> None:
    manifest_bytes = b'{"format":"metrocloud software package v1"}'
    pkg = dataclasses.replace(
        package(),
        manifest_bytes=manifest_bytes,
        signature=MANUFACTURER.sign(PACKAGE_DOMAIN + manifest_bytes),
    )
    refusal, log = _refusal(pkg)
    assert refusal.reason is RefusalReason.MANIFEST_INVALID
    assert log.records[0].data["claimed"] is None


def test_no_decision_without_room_in_the_log() -> None:
    log = EventLog.in_memory(DEVICE_KEY, capacity=1, clock=Clock())
    log.append(DeviceEventKind.POWER_FAILURE)
    with pytest.raises(EventLogFull):
        _install(package(), log=log)
    assert len(log) == 1


def test_check_package_is_pure() -> None:
    image_ = check_package(
        package(),
        manufacturer_key=MANUFACTURER.public_key,
        approval=approval(INSTALLED, NEW),
        today=TODAY,
    )
    assert image_.identification == NEW.identification


def test_approval_round_trips_and_comes_from_a_certificate_shape() -> None:
    appr = approval(INSTALLED, NEW)
    assert Approval.from_dict(appr.as_dict()) == appr
    with pytest.raises(InvalidInput):
        Approval.from_dict({"certificate": "x"})
