"""Measurements: signed batches in (HTTP, MQTT), readings out of the lake.

Device data is authenticated by the device's signature, not by the transport
(ARCHITECTURE.md decision 3): a head-end system (the instrument's manufacturer or an
operator) forwards batches with its own token over HTTP, the MQTT broker authenticates its
clients, and the intake trusts neither: every batch is checked on its own
(:mod:`metrocloud.ingest.intake`).

The node runs one :class:`~metrocloud.ingest.Intake` (its own database connections, commits
synced to disk) and, in the one process that holds the lake's writer lock, one
:class:`~metrocloud.ingest.LakeFlusher`, the lake's maintenance (compaction of closed days,
retention, vacuum: :class:`~metrocloud.services._lake_maintenance.LakeMaintenance`) and,
when the node has a broker (setting ``mqtt``), the MQTT subscriber (:class:`MqttService`,
docs/ingest.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

from metrocloud.domain.errors import Conflict, InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.formats.ocmf import read_values
from metrocloud.ingest import Intake, IntakeLimits, LakeFlusher, Outcome
from metrocloud.ingest.mqtt import TRANSPORT, MqttIntake, parse_broker_url
from metrocloud.ingest.ocmf import OcmfImport, import_values
from metrocloud.lake import Lake
from metrocloud.services._lake_maintenance import (
    LakeMaintenance,
    compact_each,
    compactable,
    first_open_day,
)
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.services.streaming import StreamMonitor, StreamWorker
from metrocloud.store.database import Database

__all__ = [
    "SENDERS",
    "LakeMaintenance",
    "LakeService",
    "MqttService",
    "compact_each",
    "compactable",
    "first_open_day",
    "flush_lake",
    "import_ocmf",
    "intake",
    "lake_service",
    "mqtt_client_id",
    "mqtt_service",
    "start_lake",
    "start_mqtt",
    "stop_lake",
    "stop_mqtt",
    "submit_batches",
]

log = logging.getLogger(__name__)

#: who may forward devices' batches over HTTP (head-end systems)
SENDERS = (PartyRole.MANUFACTURER, PartyRole.OPERATOR)
#: how long a stopping node lets the streaming monitor catch up (the rest stays queued)
_MONITOR_DRAIN_S = 10.0

_intakes: dict[int, Intake] = {}
_lakes: dict[int, LakeService] = {}
_mqtts: dict[int, MqttService] = {}
_lock = threading.Lock()


def intake(node: Node) -> Intake:
    """The node's intake (one per node object, created on first use)."""
    with _lock:
        found = _intakes.get(id(node))
        if found is None:
            s = node.settings
            found = Intake.open(
                s.database_url(),
                schema=s.db_schema,
                clock=node.now,
                limits=IntakeLimits(
                    max_skew_ms=s.intake_max_skew_s * 1000,
                    max_age_ms=s.intake_max_age_days * 86_400_000,
                ),
            )
            _intakes[id(node)] = found
        return found


def submit_batches(
    node: Node, actor: Actor | None, lines: Sequence[bytes], transport: str
) -> list[Outcome]:
    """Check and store signed batches; ``actor`` is the HTTP sender (None for MQTT)."""
    if actor is not None:
        require_role(actor, *SENDERS, action="forward devices' signed batches")
    if len(lines) > node.settings.intake_max_lines:
        raise InvalidInput(
            f"{len(lines)} batches in one request; at most {node.settings.intake_max_lines} "
            "(setting intake_max_lines)"
        )
    return intake(node).submit(lines, transport)


def import_ocmf(
    node: Node, actor: Actor | None, data: bytes, name: str, transport: str
) -> OcmfImport:
    """Import OCMF records (a bare record or a Transparenzsoftware XML container) as
    measurements of the registered EV charging instruments they name
    (:mod:`metrocloud.ingest.ocmf`); ``actor`` is the HTTP sender (None: the node's CLI)."""
    if actor is not None:
        require_role(actor, *SENDERS, action="import OCMF records")
    values = read_values(data, name)
    if not values:
        raise InvalidInput(f"{name}: the container holds no value")
    if len(values) > node.settings.intake_max_lines:
        raise InvalidInput(
            f"{name}: {len(values)} records in one import; at most "
            f"{node.settings.intake_max_lines} (setting intake_max_lines)"
        )
    return import_values(intake(node), values, transport)


def flush_lake(node: Node) -> int | None:
    """Move what the intake log holds into the lake now, in this process; None when another
    process (a running node) is the lake's writer: it flushes them within a second."""
    if lake_service(node) is not None:
        return None
    try:
        lake = Lake.open(node.settings.lake_path(), create=True)
    except Conflict:
        return None
    s = node.settings
    db = Database(s.database_url(), schema=s.db_schema, durable=True)
    try:
        monitor = StreamWorker(StreamMonitor(db, priority=False), lake)
        flushed = LakeFlusher(db, lake, on_committed=monitor.enqueue).flush_all()
        # what is due now, in this process; a segment waiting for a retry stays queued
        # for the node's monitor (docs/monitoring.md, "Streaming")
        monitor.run_pending()
        return flushed
    finally:
        db.dispose()
        lake.close()


class LakeService:
    """The node's lake: the writer (flusher, maintenance) when this process can take the
    lock."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.root = node.settings.lake_path()
        self.flusher: LakeFlusher | None = None
        #: streaming monitoring, in its own thread (set with the flusher)
        self.monitor: StreamWorker | None = None
        #: compaction, retention and vacuum, in its own thread (set with the flusher)
        self.maintenance: LakeMaintenance | None = None
        self._lake: Lake | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Flush in the background; if another process holds the lake's writer lock, keep
        trying to take it over (the holder may stop)."""
        self._thread = threading.Thread(target=self._run, name="lake-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._take():
                break
            self._stop.wait(2.0)

    def _take(self) -> bool:
        try:
            self._lake = Lake.open(self.root, create=True)
        except Conflict:  # another process is the writer; take over when it stops
            return False
        except Exception as exc:  # a lake that cannot be opened: say so, keep trying
            # (accepted batches wait in the intake log meanwhile; nothing is lost)
            log.error("lake writer: cannot open the lake at %s: %s", self.root, exc)
            return False
        # the flusher's plan and finish commits are synced like the intake's: a power loss
        # right after a lake write must not lose the plan (and write the segment twice)
        s = self.node.settings
        db = Database(s.database_url(), schema=s.db_schema, durable=True)
        # streaming monitoring: the flusher's hook only queues each committed segment; the
        # monitor's thread takes them in commit order, first what a previous run left
        # (docs/monitoring.md, "Streaming")
        self.monitor = StreamWorker(StreamMonitor(db, priority=False), self._lake)
        self.monitor.start()
        self.flusher = LakeFlusher(db, self._lake, on_committed=self.monitor.enqueue)
        self.flusher.start()
        # maintenance on the same writer handle: each partition it rewrites holds the
        # handle's lock, which the flusher's writes take, for that partition only
        self.maintenance = LakeMaintenance(
            self._lake,
            interval_s=s.lake_compact_interval_s,
            retention_days=s.lake_retention_days,
            clock=self.node.now,
        )
        self.maintenance.start()
        log.info("lake writer: flushing the intake into %s", self.root)
        return True

    @property
    def lake(self) -> Lake | None:
        """The writer handle, once this process holds the lake's writer lock."""
        return self._lake if self.flusher is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.maintenance is not None:  # after the partition it is compacting, if any
            self.maintenance.stop()
        if self.flusher is not None:
            with contextlib.suppress(Exception):  # left in the intake log: flushed next start
                self.flusher.stop()
            if self.monitor is not None:  # what it cannot take in now stays queued
                self.monitor.stop(drain=True, timeout_s=_MONITOR_DRAIN_S)
            self.flusher.db.dispose()
        if self._lake is not None:
            self._lake.close()


def start_lake(node: Node) -> LakeService:
    """Start the node's lake writer (see :class:`LakeService`); one per node object."""
    with _lock:
        service = _lakes.get(id(node))
        if service is None:
            service = _lakes[id(node)] = LakeService(node)
            service.start()
        return service


def stop_lake(node: Node) -> None:
    with _lock:
        service = _lakes.pop(id(node), None)
    if service is not None:
        service.stop()


def lake_service(node: Node) -> LakeService | None:
    return _lakes.get(id(node))


# -- MQTT: one subscriber per node, in the process that is the lake's writer -------------------


def mqtt_client_id(node: Node) -> str:
    """The node's fixed MQTT client id: it names the persistent session at the broker."""
    return f"metrocloud-intake-{node.node_id}"


class MqttService:
    """The node's MQTT subscriber (:class:`~metrocloud.ingest.mqtt.MqttIntake`).

    With ``serve --workers N`` only one process may own the subscription (one client id,
    one persistent session). The owner is the process holding the lake's writer lock (see
    :class:`LakeService`): every worker starts this service, and the one whose lake service
    takes the lock subscribes. When that process ends, its lock and broker connection go
    with it; the worker that takes the lock over resumes the same session, and the broker
    delivers what waited for it.
    """

    def __init__(self, node: Node, url: str) -> None:
        self.node = node
        self.broker = parse_broker_url(url)  # a bad URL fails here, with the reason
        self.subscriber: MqttIntake | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        lake = start_lake(self.node)  # the lake writer decides who subscribes
        self._thread = threading.Thread(
            target=self._run, args=(lake,), name="mqtt-owner", daemon=True
        )
        self._thread.start()

    def _run(self, lake: LakeService) -> None:
        while not self._stop.is_set():
            if lake.flusher is not None:  # this process is the lake's writer
                settings = self.node.settings
                subscriber = MqttIntake(
                    self.broker,
                    country=self.node.country,
                    submit=lambda lines: submit_batches(self.node, None, lines, TRANSPORT),
                    client_id=mqtt_client_id(self.node),
                    max_lines=min(1000, settings.intake_max_lines),
                )
                subscriber.start()
                self.subscriber = subscriber
                return
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.subscriber is not None:
            self.subscriber.stop()


def start_mqtt(node: Node, url: str) -> MqttService:
    """Subscribe the node to its devices' topics at the broker ``url`` (``mqtt://HOST:PORT``,
    docs/ingest.md) once this process is the lake's writer; one per node object."""
    with _lock:
        service = _mqtts.get(id(node))
        if service is None:
            service = MqttService(node, url)
            _mqtts[id(node)] = service
            starting = True
        else:
            starting = False
    if starting:
        service.start()  # outside _lock: it takes _lock again in start_lake
    return service


def stop_mqtt(node: Node) -> None:
    with _lock:
        service = _mqtts.pop(id(node), None)
    if service is not None:
        service.stop()


def mqtt_service(node: Node) -> MqttService | None:
    return _mqtts.get(id(node))
