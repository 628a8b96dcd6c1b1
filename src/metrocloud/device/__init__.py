"""The reference metrological IoT device (after WELMEC Guide 7.2, extensions L, T, S, D).

A library: a simulated energy meter that signs its readings as "metrocloud signed batch
v1" batches, keeps a signed hash-chained event log, identifies its legally relevant
software and installs only verified, approved software packages. See docs/device.md.
"""

from metrocloud.device.device import (
    DEFAULT_PARAMETERS,
    DEVICE_FORMAT,
    PARAMETER_RANGES,
    Device,
    StatusFlag,
)
from metrocloud.device.eventlog import (
    DEFAULT_CAPACITY,
    EVENT_DOMAIN,
    ChainCheck,
    DeviceEventKind,
    EventLog,
    EventLogFull,
    EventRecord,
    load_records,
    parse_record,
    verify_chain,
)
from metrocloud.device.register import ENERGY_QUANTITY, ENERGY_UNIT, EnergyRegister, Readings
from metrocloud.device.signer import BatchSigner, SignerUnusable
from metrocloud.device.software import (
    SoftwareImage,
    identify,
    reference_software,
    software_checksum,
)
from metrocloud.device.update import (
    PACKAGE_DOMAIN,
    Approval,
    RefusalReason,
    SoftwarePackage,
    UpdateRefused,
    build_package,
    check_package,
    install_package,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_PARAMETERS",
    "DEVICE_FORMAT",
    "ENERGY_QUANTITY",
    "ENERGY_UNIT",
    "EVENT_DOMAIN",
    "PACKAGE_DOMAIN",
    "PARAMETER_RANGES",
    "Approval",
    "BatchSigner",
    "ChainCheck",
    "Device",
    "DeviceEventKind",
    "EnergyRegister",
    "EventLog",
    "EventLogFull",
    "EventRecord",
    "Readings",
    "RefusalReason",
    "SignerUnusable",
    "SoftwareImage",
    "SoftwarePackage",
    "StatusFlag",
    "UpdateRefused",
    "build_package",
    "check_package",
    "identify",
    "install_package",
    "load_records",
    "parse_record",
    "reference_software",
    "software_checksum",
    "verify_chain",
]
