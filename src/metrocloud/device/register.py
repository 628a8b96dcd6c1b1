"""A simulated sensor: a cumulative active-energy register (OBIS 1-0:1.8.0, kWh).

Readings come every ``interval_ms`` (15 minutes by default). The power drawn in each
interval follows a household's daily load profile (a night base load, a morning and a
larger evening peak, in UTC hours) times a deterministic noise factor derived from the seed
and the reading's index, so the same seed always gives the same readings, however they are
split into batches and across restarts. The register counts whole watt-hours (an integer,
so no floating-point drift) and reports kWh with three decimals.

The register is an immutable value: :meth:`EnergyRegister.read` returns the readings and
the register after them, and the caller commits the new register only once the batch is
signed and persisted.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any

from metrocloud.domain.errors import InvalidInput

__all__ = ["ENERGY_QUANTITY", "ENERGY_UNIT", "EnergyRegister", "Readings"]

#: OBIS code of positive active energy, total (import)
ENERGY_QUANTITY = "1-0:1.8.0"
ENERGY_UNIT = "kWh"
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
_MAX_SAFE = 2**53 - 1
#: mean of the daily shape below over 24 h (each Gaussian peak integrates to width * sqrt(pi))
_SHAPE_MEAN = 0.55 + (0.9 * 1.2 + 1.6 * 1.8) * math.sqrt(math.pi) / 24


@dataclass(frozen=True, slots=True)
class Readings:
    """Columns of consecutive readings, as :func:`metrocloud.formats.batches.encode_batch` takes."""

    t: list[int]
    value: list[float]
    status: list[int]

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyRegister:
    """The register's state: next reading's time and index, energy so far, profile seed."""

    seed: int
    next_t: int
    interval_ms: int = 15 * 60 * 1000
    index: int = 0
    energy_wh: int = 0
    #: mean power of the profile, in watts (a household: about 400 W, 3,500 kWh a year)
    mean_w: int = 400
    quantity: str = ENERGY_QUANTITY
    unit: str = ENERGY_UNIT

    def __post_init__(self) -> None:
        for name in ("seed", "next_t", "interval_ms", "index", "energy_wh", "mean_w"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _MAX_SAFE:
                raise InvalidInput(
                    f"energy register {name} must be an integer from 0 to {_MAX_SAFE}, "
                    f"found {value!r}"
                )
        if self.interval_ms < 1000:
            raise InvalidInput(
                f"energy register interval must be at least 1000 ms, found {self.interval_ms}"
            )

    def power_w(self, t: int, index: int) -> float:
        """Mean power in the interval ending at ``t`` (deterministic in seed and index)."""
        hour = (t % _DAY_MS) / _HOUR_MS
        shape = (
            0.55
            + 0.9 * math.exp(-(((hour - 7.5) / 1.2) ** 2))
            + 1.6 * math.exp(-(((hour - 19.0) / 1.8) ** 2))
        )
        digest = hashlib.blake2b(f"{self.seed}:{index}".encode("ascii"), digest_size=8).digest()
        noise = 0.75 + 0.5 * int.from_bytes(digest, "big") / 2**64  # 0.75 .. 1.25
        return self.mean_w * shape / _SHAPE_MEAN * noise

    def read(self, n: int) -> tuple[Readings, EnergyRegister]:
        """The next ``n`` readings and the register after them (``self`` is unchanged)."""
        if type(n) is not int or n < 1:
            raise InvalidInput(f"number of readings must be an integer >= 1, found {n!r}")
        t_column: list[int] = []
        values: list[float] = []
        t, index, energy = self.next_t, self.index, self.energy_wh
        interval_h = self.interval_ms / _HOUR_MS
        for _ in range(n):
            if index > 0:
                energy += round(self.power_w(t, index) * interval_h)
            t_column.append(t)
            values.append(energy / 1000)
            t += self.interval_ms
            index += 1
        after = replace(self, next_t=t, index=index, energy_wh=energy)
        return Readings(t=t_column, value=values, status=[0] * n), after

    def with_interval(self, interval_ms: int) -> EnergyRegister:
        """The register continuing with another reading interval (a parameter change)."""
        return replace(self, interval_ms=interval_ms)

    def state(self) -> dict[str, Any]:
        """JSON-able state (see :meth:`from_state`)."""
        return {
            "seed": self.seed,
            "next_t": self.next_t,
            "interval_ms": self.interval_ms,
            "index": self.index,
            "energy_wh": self.energy_wh,
            "mean_w": self.mean_w,
            "quantity": self.quantity,
            "unit": self.unit,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EnergyRegister:
        try:
            return cls(**state)
        except TypeError as exc:
            raise InvalidInput(f"energy register state is malformed: {exc}") from None
