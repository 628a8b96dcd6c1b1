"""Fixtures of the device tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from metrocloud.device import Device
from metrocloud.trust.keys import KeyAlgorithm

from ._support import INSTRUMENT, MANUFACTURER, NOW, PASSPHRASE, Clock, approval, image


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provision(tmp_path: Path, clock: Clock) -> Callable[..., Device]:
    """Provision a device in a fresh directory; keyword arguments override the defaults."""

    def _provision(**overrides: object) -> Device:
        installed = image()
        fields: dict[str, object] = {
            "instrument": INSTRUMENT,
            "manufacturer_key": MANUFACTURER.public_key,
            "software": installed,
            "approval": approval(installed, image("1.1", b"measure_better()")),
            "passphrase": PASSPHRASE,
            "algorithm": KeyAlgorithm.ED25519,
            "seed": 42,
            "start_ms": int(NOW.timestamp() * 1000),
            "clock": clock,
        }
        fields.update(overrides)
        directory = Path(str(fields.pop("directory", tmp_path / "device")))
        return Device.provision(directory, **fields)  # type: ignore[arg-type]

    return _provision
