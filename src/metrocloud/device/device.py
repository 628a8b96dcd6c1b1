"""The reference metrological IoT device: a simulated energy meter that signs its readings.

A :class:`Device` ties the parts together:

* a device key (Ed25519 or ECDSA P-256) generated at provisioning and kept encrypted in a
  :class:`~metrocloud.trust.keys.KeyStore`; no method returns the key or its bytes
  (WELMEC 7.2 T5/L5: confidentiality of keys);
* an :class:`~metrocloud.device.register.EnergyRegister` (the sensor) and a
  :class:`~metrocloud.device.signer.BatchSigner` producing "metrocloud signed batch v1"
  batches that carry the installed software's checksum (T1-T4, L1-L4);
* the :class:`~metrocloud.device.eventlog.EventLog`, which is also the device's source of
  truth: parameters, approval and installed software identification are *replayed* from it
  on start, so no legally relevant state changes without a record (P7/U7, D4);
* verified software download (:mod:`metrocloud.device.update`, extension D).

State directory layout::

    device.json            instrument id, key id, event log capacity (written once)
    keys/device.key.pem    the device key, PKCS#8 encrypted with the passphrase (mode 0600)
    events.jsonl           the event log: one signed canonical JSON record per line
    signer.json            counter, prev and the register position of the last batch
    software/installed.json  the legally relevant (and other) modules in effect
    software/staged.json   an accepted update between its check and its record

A software package is staged, then recorded, then put into effect; on start a staged image
is promoted only if the log records it, and the installed modules must hash to the
identification the log names (P2/U2, P6/U6), else the device does not start.

The public methods are the protective interface (extension S, S3) through which other
software reaches the legally relevant part: readings come out signed, and parameters,
approval and software change only through logged operations.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import IntFlag
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from metrocloud._fs import fsync_directory, write_atomically
from metrocloud.device.eventlog import (
    DEFAULT_CAPACITY,
    ChainCheck,
    DeviceEventKind,
    EventLog,
    EventRecord,
)
from metrocloud.device.register import EnergyRegister
from metrocloud.device.signer import BatchSigner
from metrocloud.device.software import SoftwareImage
from metrocloud.device.update import Approval, SoftwarePackage, UpdateRefused, install_package
from metrocloud.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RuleViolation,
    VerificationError,
)
from metrocloud.domain.types import SoftwareIdentification
from metrocloud.formats.batches import INSTRUMENT_PATTERN, MAX_READINGS, SignedBatch
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, KeyStore, PublicKey

__all__ = ["DEFAULT_PARAMETERS", "DEVICE_FORMAT", "PARAMETER_RANGES", "Device", "StatusFlag"]

DEVICE_FORMAT = "metrocloud reference device v1"
KEY_NAME = "device"

#: legally relevant parameters of the reference meter and their defaults
DEFAULT_PARAMETERS: Mapping[str, int] = MappingProxyType({"interval_minutes": 15})
#: allowed values (inclusive ranges) of each parameter
PARAMETER_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType({"interval_minutes": (1, 1440)})

_RECORDABLE = frozenset(
    {
        DeviceEventKind.SEAL_BROKEN,
        DeviceEventKind.TAMPER_DETECTED,
        DeviceEventKind.POWER_FAILURE,
        DeviceEventKind.CLOCK_SET,
    }
)


class StatusFlag(IntFlag):
    """Bits of a reading's ``status``: set on the first reading after such an event."""

    POWER_FAILURE = 1
    CLOCK_SET = 2
    TAMPER_DETECTED = 4
    SEAL_BROKEN = 8
    PARAMETER_CHANGED = 16
    SOFTWARE_UPDATED = 32


_EVENT_FLAG = {
    DeviceEventKind.POWER_FAILURE: StatusFlag.POWER_FAILURE,
    DeviceEventKind.CLOCK_SET: StatusFlag.CLOCK_SET,
    DeviceEventKind.TAMPER_DETECTED: StatusFlag.TAMPER_DETECTED,
    DeviceEventKind.SEAL_BROKEN: StatusFlag.SEAL_BROKEN,
    DeviceEventKind.PARAMETER_CHANGED: StatusFlag.PARAMETER_CHANGED,
    DeviceEventKind.SOFTWARE_UPDATED: StatusFlag.SOFTWARE_UPDATED,
}


class Device:
    """A provisioned device with its state under one directory.

    Create with :meth:`provision`, reopen with :meth:`open`. All operations are serialized
    by one lock.
    """

    def __init__(
        self,
        *,
        directory: Path,
        instrument: str,
        signer: BatchSigner,
        log: EventLog,
        manufacturer_key: PublicKey,
        software: SoftwareImage,
        approval: Approval,
        parameters: Mapping[str, int],
        register: EnergyRegister,
        pending: int,
        clock: Callable[[], datetime],
    ) -> None:
        """Internal; use :meth:`provision` or :meth:`open`."""
        self._directory = directory
        self._instrument = instrument
        self._signer = signer
        self._log = log
        self._manufacturer_key = manufacturer_key
        self._software = software
        self._approval = approval
        self._parameters = dict(parameters)
        self._register = register
        self._pending = pending
        self._clock = clock
        self._lock = threading.RLock()

    # -- life cycle ----------------------------------------------------------------------

    @classmethod
    def provision(
        cls,
        directory: Path,
        *,
        instrument: str,
        manufacturer_key: PublicKey,
        software: SoftwareImage,
        approval: Approval,
        passphrase: bytes,
        algorithm: KeyAlgorithm = KeyAlgorithm.ED25519,
        seed: int = 0,
        start_ms: int | None = None,
        event_capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], datetime] | None = None,
    ) -> Device:
        """Set up a new device in ``directory``: key, event log, software, register.

        The installed ``software`` must be approved by ``approval`` today. The register
        starts at ``start_ms`` (default: now, rounded down to the reading interval) with
        0 kWh and a load profile drawn from ``seed``.
        """
        clock = clock or _now
        directory = Path(directory)
        if (directory / "device.json").exists():
            raise Conflict(f"{directory} holds a provisioned device already; use Device.open")
        if not isinstance(instrument, str) or INSTRUMENT_PATTERN.fullmatch(instrument) is None:
            raise InvalidInput(
                f"instrument id {instrument!r} must be 1-128 characters A-Z a-z 0-9 . _ : -"
            )
        try:
            approval.check(software.identification, clock().date())
        except UpdateRefused as exc:
            raise RuleViolation(
                f"cannot provision {instrument}: {exc.detail}", rule=exc.rule
            ) from None
        interval_ms = DEFAULT_PARAMETERS["interval_minutes"] * 60_000
        if start_ms is None:
            now_ms = int(clock().timestamp() * 1000)
            start_ms = now_ms - now_ms % interval_ms
        register = EnergyRegister(seed=seed, next_t=start_ms, interval_ms=interval_ms)

        (directory / "software").mkdir(parents=True, exist_ok=True)
        key = KeyStore(directory / "keys", passphrase).load_or_create(KEY_NAME, algorithm)
        write_atomically(directory / "software" / "installed.json", software.to_json())
        log = EventLog.open(directory / "events.jsonl", key, capacity=event_capacity, clock=clock)
        if len(log):
            raise Conflict(
                f"{directory / 'events.jsonl'} holds {len(log)} records of an earlier "
                "provisioning; an event log is never reset"
            )
        log.append(
            DeviceEventKind.PROVISIONED,
            {
                "instrument": instrument,
                "key": key.key_id,
                "algorithm": str(key.algorithm),
                "manufacturer_key": manufacturer_key.to_spki_b64(),
                "software": software.identification.as_dict(),
                "approval": approval.as_dict(),
                "parameters": dict(DEFAULT_PARAMETERS),
                "register": register.state(),
            },
        )
        write_atomically(
            directory / "device.json",
            canonical_json(
                {
                    "format": DEVICE_FORMAT,
                    "instrument": instrument,
                    "key": key.key_id,
                    "event_capacity": event_capacity,
                }
            ),
        )
        signer = BatchSigner.open(key, instrument=instrument, state_path=directory / "signer.json")
        return cls(
            directory=directory,
            instrument=instrument,
            signer=signer,
            log=log,
            manufacturer_key=manufacturer_key,
            software=software,
            approval=approval,
            parameters=DEFAULT_PARAMETERS,
            register=register,
            pending=0,
            clock=clock,
        )

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        passphrase: bytes,
        clock: Callable[[], datetime] | None = None,
    ) -> Device:
        """Reopen a provisioned device, verifying its event log and installed software."""
        clock = clock or _now
        directory = Path(directory)
        try:
            config = orjson.loads((directory / "device.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no provisioned device in {directory}") from None
        except orjson.JSONDecodeError:
            config = None
        if (
            type(config) is not dict
            or config.keys() != {"format", "instrument", "key", "event_capacity"}
            or config["format"] != DEVICE_FORMAT
        ):
            raise InvalidInput(f"{directory / 'device.json'} is not a {DEVICE_FORMAT!r} file")
        key = KeyStore(directory / "keys", passphrase).load(KEY_NAME)
        if key.key_id != config["key"]:
            raise VerificationError(
                f"the key in {directory / 'keys'} is {key.key_id}, the device was provisioned "
                f"with {config['key']}"
            )
        log = EventLog.open(
            directory / "events.jsonl", key, capacity=config["event_capacity"], clock=clock
        )
        state = _replay(log.records, instrument=config["instrument"], key_id=key.key_id)
        software = _load_software(directory / "software", state["software"])
        signer = BatchSigner.open(
            key, instrument=config["instrument"], state_path=directory / "signer.json"
        )
        cursor = signer.cursor
        register = EnergyRegister.from_state(dict(cursor.get("register", state["register"])))
        register = register.with_interval(state["parameters"]["interval_minutes"] * 60_000)
        pending = 0
        for record in log.records[int(cursor.get("events_seq", 1)) :]:
            pending |= _EVENT_FLAG.get(record.kind, 0)
        return cls(
            directory=directory,
            instrument=config["instrument"],
            signer=signer,
            log=log,
            manufacturer_key=state["manufacturer_key"],
            software=software,
            approval=state["approval"],
            parameters=state["parameters"],
            register=register,
            pending=pending,
            clock=clock,
        )

    # -- what the device shows ---------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def instrument(self) -> str:
        return self._instrument

    @property
    def public_key(self) -> PublicKey:
        """The device key's public half (the node registers it; batches name its id)."""
        return self._signer.public_key

    @property
    def key_id(self) -> str:
        return self._signer.public_key.key_id

    @property
    def manufacturer_key(self) -> PublicKey:
        return self._manufacturer_key

    @property
    def software(self) -> SoftwareIdentification:
        """The installed legally relevant software's identification (WELMEC 7.2 P2/U2)."""
        return self._software.identification

    @property
    def approval(self) -> Approval:
        return self._approval

    @property
    def parameters(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self._parameters))

    @property
    def register(self) -> EnergyRegister:
        return self._register

    @property
    def counter(self) -> int:
        """Counter of the last batch released (0 before the first)."""
        return self._signer.counter

    @property
    def events(self) -> tuple[EventRecord, ...]:
        return self._log.records

    @property
    def pending_status(self) -> StatusFlag:
        """Flags the next reading will carry."""
        return StatusFlag(self._pending)

    def verify_events(self) -> ChainCheck:
        """Re-read and verify the event log file (for an inspection, WELMEC 7.2 L6)."""
        return self._log.verify()

    # -- operations -------------------------------------------------------------------------

    def read_batch(self, n: int = 96) -> SignedBatch:
        """Take the next ``n`` readings of the register and sign them as one batch.

        The first reading carries the :class:`StatusFlag` bits of events recorded since the
        previous batch. Refused with :class:`~metrocloud.device.eventlog.EventLogFull` when
        the event log is full: the device could not record what it must, so it stops.
        """
        if type(n) is not int or not 1 <= n <= MAX_READINGS:
            raise InvalidInput(f"a batch holds 1 to {MAX_READINGS} readings, asked for {n!r}")
        with self._lock:
            self._log.ensure_room()
            readings, after = self._register.read(n)
            status = readings.status
            status[0] = int(status[0] | self._pending)
            batch = self._signer.sign(
                software=self._software.checksum,
                quantity=after.quantity,
                unit=after.unit,
                t=readings.t,
                value=readings.value,
                status=status,
                cursor={"register": after.state(), "events_seq": len(self._log)},
            )
            self._register = after
            self._pending = 0
            return batch

    def read_one(self) -> SignedBatch:
        """Sign the next single reading (signing one by one)."""
        return self.read_batch(1)

    def set_parameter(self, name: str, value: int) -> EventRecord | None:
        """Change a legally relevant parameter, recorded first (WELMEC 7.2 P7/U7).

        Returns the ``parameter_changed`` record, or None if ``value`` is the current one.
        """
        if name not in PARAMETER_RANGES:
            raise InvalidInput(
                f"unknown parameter {name!r}; the device has {', '.join(PARAMETER_RANGES)}"
            )
        low, high = PARAMETER_RANGES[name]
        if type(value) is not int or not low <= value <= high:
            raise InvalidInput(f"parameter {name} must be an integer from {low} to {high}")
        with self._lock:
            old = self._parameters[name]
            if old == value:
                return None
            record = self._log.append(
                DeviceEventKind.PARAMETER_CHANGED, {"name": name, "old": old, "new": value}
            )
            self._parameters[name] = value
            if name == "interval_minutes":
                self._register = self._register.with_interval(value * 60_000)
            self._pending |= StatusFlag.PARAMETER_CHANGED
            return record

    def update_approval(self, approval: Approval) -> EventRecord:
        """Take a new certificate state (revision, suspension, ...), recorded first."""
        with self._lock:
            record = self._log.append(
                DeviceEventKind.PARAMETER_CHANGED,
                {"name": "approval", "old": self._approval.as_dict(), "new": approval.as_dict()},
            )
            self._approval = approval
            self._pending |= StatusFlag.PARAMETER_CHANGED
            return record

    def record_event(
        self, kind: DeviceEventKind | str, data: Mapping[str, Any] | None = None
    ) -> EventRecord:
        """Record what the device's sensors detect: seal broken, tamper, power, clock set."""
        if kind not in _RECORDABLE:
            raise InvalidInput(
                f"record_event takes {', '.join(sorted(_RECORDABLE))}, not {kind!r}; the other "
                "kinds are recorded by the operations that cause them"
            )
        kind = DeviceEventKind(kind)
        with self._lock:
            record = self._log.append(kind, data)
            self._pending |= _EVENT_FLAG[kind]
            return record

    def apply_update(self, package: SoftwarePackage) -> SoftwareIdentification:
        """Install a software package if it passes every check (WELMEC 7.2 D1-D4).

        Raises :class:`~metrocloud.device.update.UpdateRefused` (recorded as
        ``software_update_refused``) or ``EventLogFull`` (nothing recorded, nothing changed).
        """
        software_dir = self._directory / "software"
        staged = software_dir / "staged.json"

        def stage(image: SoftwareImage) -> None:
            write_atomically(staged, image.to_json())

        with self._lock:
            image = install_package(
                package,
                log=self._log,
                installed=self._software,
                manufacturer_key=self._manufacturer_key,
                approval=self._approval,
                today=self._clock().date(),
                before_record=stage,
            )
            staged.replace(software_dir / "installed.json")
            fsync_directory(software_dir)
            self._software = image
            self._pending |= StatusFlag.SOFTWARE_UPDATED
            return image.identification

    def __repr__(self) -> str:
        return (
            f"Device(instrument={self._instrument!r}, key_id={self.key_id}, "
            f"software={self._software.identification.version}, counter={self.counter})"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _replay(records: tuple[EventRecord, ...], *, instrument: str, key_id: str) -> dict[str, Any]:
    """The legally relevant state the records establish (the log is the source of truth)."""
    if not records or records[0].kind is not DeviceEventKind.PROVISIONED:
        raise VerificationError(
            "the event log does not start with the provisioning record",
            rule="WELMEC 7.2 D4, P7/U7",
        )
    first = records[0].data
    if first.get("instrument") != instrument or first.get("key") != key_id:
        raise VerificationError(
            f"the event log was provisioned for {first.get('instrument')} with key "
            f"{first.get('key')}, not {instrument} with {key_id}",
            rule="WELMEC 7.2 L4",
        )
    state: dict[str, Any] = {
        "manufacturer_key": PublicKey.from_spki_b64(first["manufacturer_key"]),
        "software": first["software"],
        "approval": Approval.from_dict(first["approval"]),
        "parameters": dict(first["parameters"]),
        "register": first["register"],
    }
    for record in records[1:]:
        if record.kind is DeviceEventKind.SOFTWARE_UPDATED:
            state["software"] = record.data["new"]
        elif record.kind is DeviceEventKind.PARAMETER_CHANGED:
            name = record.data["name"]
            if name == "approval":
                state["approval"] = Approval.from_dict(record.data["new"])
            else:
                state["parameters"][name] = record.data["new"]
    return state


def _load_software(software_dir: Path, expected: Mapping[str, Any]) -> SoftwareImage:
    installed = software_dir / "installed.json"
    staged = software_dir / "staged.json"
    if staged.exists():
        image = SoftwareImage.from_json(staged.read_bytes())
        if image.identification.as_dict() == dict(expected):
            staged.replace(installed)  # the update was recorded: finish putting it in effect
            fsync_directory(software_dir)
        else:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()  # never recorded: the update did not happen
    image = SoftwareImage.from_json(installed.read_bytes())
    if image.identification.as_dict() != dict(expected):
        raise VerificationError(
            f"the installed legally relevant software computes to "
            f"{image.identification.checksum} ({image.identification.version}), but the event "
            f"log records {expected.get('checksum')} ({expected.get('version')}); the device "
            "does not start with unrecorded software",
            rule="WELMEC 7.2 P2/U2, P6/U6, D4",
        )
    return image
