"""The reference device end to end: provisioning, signed readings, events, updates, restart."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from metrocloud.device import (
    Device,
    DeviceEventKind,
    EventLogFull,
    RefusalReason,
    StatusFlag,
    UpdateRefused,
)
from metrocloud.domain.certificates import CertificateStatus
from metrocloud.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RuleViolation,
    VerificationError,
)
from metrocloud.formats.batches import GENESIS_PREV, open_batch
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

from ._support import INSTRUMENT, MANUFACTURER, NOW, PASSPHRASE, Clock, approval, image, package

Provision = Callable[..., Device]


def _open(device: Device, clock: Clock | None = None) -> Device:
    return Device.open(device.directory, passphrase=PASSPHRASE, clock=clock or Clock())


def _verify(device: Device, line: bytes):  # type: ignore[no-untyped-def]
    return open_batch(line, lambda key_id: device.public_key)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_batches_are_signed_chained_and_carry_the_software(
    provision: Provision, algorithm: str
) -> None:
    device = provision(algorithm=KeyAlgorithm(algorithm))
    first = _verify(device, device.read_batch(96).wire())
    second = _verify(device, device.read_one().wire())
    assert (first.counter, first.prev, len(first)) == (1, GENESIS_PREV, 96)
    assert (second.counter, second.prev, len(second)) == (2, first.digest, 1)
    assert first.instrument == INSTRUMENT and first.key == device.key_id
    assert first.software == device.software.checksum == image().checksum
    assert (first.quantity, first.unit) == ("1-0:1.8.0", "kWh")
    assert second.t[0] == first.t[-1] + 15 * 60_000
    assert second.value[0] >= first.value[-1]


def test_restart_continues_counter_chain_and_register(provision: Provision) -> None:
    device = provision()
    last = _verify(device, device.read_batch(10).wire())
    again = _open(device)
    assert again.counter == 1 and again.key_id == device.key_id
    following = _verify(again, again.read_batch(5).wire())
    assert (following.counter, following.prev) == (2, last.digest)
    assert following.t[0] == last.t[-1] + 15 * 60_000

    # the same readings as a device that never restarted
    twin = provision(directory=device.directory.parent / "twin")
    whole = twin.read_batch(15).parse()
    assert whole.value == last.value + following.value


def test_no_method_exposes_the_private_key(provision: Provision) -> None:
    device = provision()
    public_names = [n for n in dir(device) if not n.startswith("_")]
    for name in public_names:
        value = getattr(device, name)
        assert not isinstance(value, PrivateKey), name
    pem = (device.directory / "keys" / "device.key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert "key_id" in repr(device) and "PRIVATE" not in repr(device)


def test_provisioning_is_recorded_and_refuses_unapproved_software(provision: Provision) -> None:
    device = provision()
    (record,) = device.events
    assert record.kind is DeviceEventKind.PROVISIONED
    assert record.data["software"] == image().identification.as_dict()
    assert record.data["key"] == device.key_id
    with pytest.raises(Conflict):
        provision()
    with pytest.raises(RuleViolation, match="cannot provision"):
        provision(directory=device.directory.parent / "x", approval=approval(image("9")))
    with pytest.raises(InvalidInput, match="instrument id"):
        provision(directory=device.directory.parent / "y", instrument="bad id")


def test_open_needs_a_provisioned_directory_and_the_passphrase(
    provision: Provision, tmp_path: Path
) -> None:
    with pytest.raises(NotFound):
        Device.open(tmp_path / "nothing", passphrase=PASSPHRASE)
    device = provision()
    with pytest.raises(VerificationError, match="wrong passphrase"):
        Device.open(device.directory, passphrase=b"wrong passphrase")


def test_parameter_change_is_recorded_flagged_and_survives_restart(provision: Provision) -> None:
    device = provision()
    device.read_batch(2)
    record = device.set_parameter("interval_minutes", 5)
    assert record is not None and dict(record.data) == {
        "name": "interval_minutes",
        "old": 15,
        "new": 5,
    }
    assert device.set_parameter("interval_minutes", 5) is None  # no change, no record
    batch = device.read_batch(3).parse()
    assert batch.status[0] & StatusFlag.PARAMETER_CHANGED and batch.status[1:] == [0, 0]
    assert batch.t[1] - batch.t[0] == 5 * 60_000
    again = _open(device)
    assert again.parameters["interval_minutes"] == 5
    nxt = again.read_batch(2).parse()
    assert nxt.t[1] - nxt.t[0] == 5 * 60_000 and nxt.status == [0, 0]
    for bad in (("interval_minutes", 0), ("interval_minutes", "5"), ("unknown", 1)):
        with pytest.raises(InvalidInput):
            device.set_parameter(*bad)


@pytest.mark.parametrize(
    ("kind", "flag"),
    [
        ("seal_broken", StatusFlag.SEAL_BROKEN),
        ("tamper_detected", StatusFlag.TAMPER_DETECTED),
        ("power_failure", StatusFlag.POWER_FAILURE),
        ("clock_set", StatusFlag.CLOCK_SET),
    ],
)
def test_detected_events_are_recorded_and_flag_the_next_reading(
    provision: Provision, kind: str, flag: StatusFlag
) -> None:
    device = provision()
    device.record_event(kind, {"source": "test"})
    assert device.events[-1].kind == kind
    assert device.read_one().parse().status == [int(flag)]
    assert device.read_one().parse().status == [0]


def test_pending_flags_survive_a_restart(provision: Provision) -> None:
    device = provision()
    device.read_one()
    device.record_event("tamper_detected")
    assert _open(device).read_one().parse().status == [int(StatusFlag.TAMPER_DETECTED)]


def test_operations_cannot_be_faked_through_record_event(provision: Provision) -> None:
    device = provision()
    for kind in ("software_updated", "parameter_changed", "provisioned", "nonsense"):
        with pytest.raises(InvalidInput):
            device.record_event(kind)
    assert len(device.events) == 1


def test_update_is_applied_recorded_and_survives_restart(provision: Provision) -> None:
    device = provision()
    new = device.apply_update(package())
    assert new == image("1.1", b"measure_better()").identification == device.software
    assert device.events[-1].kind is DeviceEventKind.SOFTWARE_UPDATED
    batch = device.read_one().parse()
    assert batch.software == new.checksum and batch.status == [int(StatusFlag.SOFTWARE_UPDATED)]
    assert _open(device).software == new
    assert not (device.directory / "software" / "staged.json").exists()


def test_refused_update_changes_nothing_but_the_log(provision: Provision) -> None:
    device = provision()
    before = device.software
    forged = package()
    forged = type(forged)(
        manifest_bytes=forged.manifest_bytes,
        signature=PrivateKey.generate().sign(b"x"),
        legally_relevant=forged.legally_relevant,
        other=forged.other,
    )
    with pytest.raises(UpdateRefused) as caught:
        device.apply_update(forged)
    assert caught.value.reason is RefusalReason.SIGNATURE_INVALID
    assert device.software == before == _open(device).software
    assert device.events[-1].kind is DeviceEventKind.SOFTWARE_UPDATE_REFUSED


def test_expired_certificate_refuses_updates(provision: Provision, clock: Clock) -> None:
    device = provision()
    clock.now = NOW + timedelta(days=365 * 11)
    with pytest.raises(UpdateRefused) as caught:
        device.apply_update(package())
    assert caught.value.reason is RefusalReason.CERTIFICATE_EXPIRED


def test_approval_update_is_recorded_and_used(provision: Provision) -> None:
    device = provision()
    device.update_approval(
        approval(image(), image("1.1", b"measure_better()"), status=CertificateStatus.SUSPENDED)
    )
    assert _open(device).approval.status is CertificateStatus.SUSPENDED
    with pytest.raises(UpdateRefused) as caught:
        device.apply_update(package())
    assert caught.value.reason is RefusalReason.CERTIFICATE_NOT_VALID


def test_software_changed_behind_the_logs_back_stops_the_device(provision: Provision) -> None:
    device = provision()
    installed = device.directory / "software" / "installed.json"
    installed.write_bytes(image("1.0", b"measure_evil()").to_json())
    with pytest.raises(VerificationError, match="unrecorded software"):
        _open(device)


def test_staged_update_is_completed_only_if_recorded(provision: Provision) -> None:
    device = provision()
    staged = device.directory / "software" / "staged.json"
    # crash after staging, before the record: the update did not happen
    staged.write_bytes(image("1.1", b"measure_better()").to_json())
    reopened = _open(device)
    assert reopened.software == image().identification and not staged.exists()
    # crash after the record, before putting it in effect: finish it
    reopened.apply_update(package())
    installed = device.directory / "software" / "installed.json"
    staged.write_bytes(installed.read_bytes())
    installed.write_bytes(image().to_json())
    assert _open(device).software == image("1.1", b"measure_better()").identification


def test_tampered_event_log_stops_the_device(provision: Provision) -> None:
    device = provision()
    device.set_parameter("interval_minutes", 5)
    path = device.directory / "events.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"new":5', b'"new":1'))
    with pytest.raises(VerificationError, match="broken at seq 2"):
        _open(device)


def test_full_event_log_stops_legally_relevant_operation(provision: Provision) -> None:
    device = provision(event_capacity=3)
    device.record_event("power_failure")
    device.record_event("clock_set")
    for operation in (
        lambda: device.read_batch(4),
        lambda: device.record_event("tamper_detected"),
        lambda: device.set_parameter("interval_minutes", 30),
        lambda: device.apply_update(package()),
    ):
        with pytest.raises(EventLogFull):
            operation()
    assert device.counter == 0 and device.parameters["interval_minutes"] == 15
    assert device.software == image().identification
    assert _open(device).counter == 0


def test_event_log_verifies_for_an_inspection(provision: Provision) -> None:
    device = provision()
    for kind in itertools.islice(itertools.cycle(["power_failure", "clock_set"]), 5):
        device.record_event(kind)
    check = device.verify_events()
    assert check.ok and check.valid_records == 6


def test_batch_size_limits(provision: Provision) -> None:
    device = provision()
    for n in (0, 10_001, 2.0):
        with pytest.raises(InvalidInput):
            device.read_batch(n)  # type: ignore[arg-type]
    assert device.counter == 0


def test_manufacturer_key_is_kept_from_provisioning(provision: Provision) -> None:
    device = provision()
    assert _open(device).manufacturer_key == MANUFACTURER.public_key
