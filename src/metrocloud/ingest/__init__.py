"""Signed-measurement intake: HTTP batches and MQTT, checks in a fixed order, quarantine.

:class:`Intake` decides and durably stores each signed batch (or quarantines it with its
reason); :class:`LakeFlusher` moves accepted readings into the lake exactly once;
:mod:`metrocloud.ingest.mqtt` subscribes to the device topics. See docs/ingest.md.
"""

from __future__ import annotations

from metrocloud.ingest.flusher import LakeFlusher
from metrocloud.ingest.intake import REASONS, Intake, IntakeLimits, Outcome

__all__ = ["REASONS", "Intake", "IntakeLimits", "LakeFlusher", "Outcome"]
