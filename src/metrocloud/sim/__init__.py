"""A fleet simulator with ground truth (docs/sim.md).

Registers a fleet of simulated instruments on a node (five categories with realistic
consumption profiles), feeds their signed batches through the node's real intake into the
lake, and writes labels beside the data: each instrument's metrological drift, when it
crosses its in-service MPE, and every injected fault and manipulation. Deterministic for a
seed.
"""

from __future__ import annotations

from metrocloud.sim.labels import FAULT_TYPE, LABELS_FORMAT, LABELS_SCHEMA, labels_table
from metrocloud.sim.plan import (
    FAULT_KINDS,
    KINDS,
    TAMPER_KINDS,
    Fault,
    FleetPlan,
    InstrumentPlan,
    plan_fleet,
)
from metrocloud.sim.profiles import PROFILES, Profile
from metrocloud.sim.runner import SUMMARY_FORMAT, TRANSPORT, SimConfig, SimResult, run_simulation

__all__ = [
    "FAULT_KINDS",
    "FAULT_TYPE",
    "KINDS",
    "LABELS_FORMAT",
    "LABELS_SCHEMA",
    "PROFILES",
    "SUMMARY_FORMAT",
    "TAMPER_KINDS",
    "TRANSPORT",
    "Fault",
    "FleetPlan",
    "InstrumentPlan",
    "Profile",
    "SimConfig",
    "SimResult",
    "labels_table",
    "plan_fleet",
    "run_simulation",
]
