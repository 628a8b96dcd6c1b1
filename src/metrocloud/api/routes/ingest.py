"""Signed measurement batches over HTTP, and the node's metrics (Prometheus)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.domain.errors import InvalidInput
from metrocloud.formats.transparenz import MAX_BYTES
from metrocloud.ingest import REASONS
from metrocloud.lake.maintenance import category_stats
from metrocloud.services import measurements as svc
from metrocloud.services.node import Node
from metrocloud.services.streaming import StreamStats

router = APIRouter(route_class=GuardedRoute)
metrics_router = APIRouter()

#: most bytes in one POST /ingest/batches (10,000 batches of 96 readings fit)
MAX_BODY = 64 * 1024 * 1024
#: most bytes in one POST /ingest/ocmf (the Transparenzsoftware's own limit)
MAX_OCMF_BODY = MAX_BYTES
_registries: dict[int, CollectorRegistry] = {}
_MEDIA = ("application/x-ndjson", "application/jsonl", "text/plain")


class Outcome(BaseModel):
    status: str = Field(description="accepted, duplicate or rejected")
    reason: str | None = Field(None, description="why it was quarantined (rejected only)")
    detail: str | None = Field(None, description="the evidence for the reason")
    instrument: str | None = None
    counter: int | None = None
    readings: int = 0
    flags: list[str] = Field(default_factory=list, description="e.g. counter-gap")


class IngestResult(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    outcomes: list[Outcome]


@router.post(
    "/ingest/batches",
    response_model=IngestResult,
    operation_id="ingest_batches",
    tags=["measurements"],
    summary="Submit devices' signed measurement batches (one wire line each)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {"schema": {"type": "string", "description": "MCB1 wire lines, one a line"}}
                for m in _MEDIA
            },
        }
    },
)
@guard(*svc.SENDERS, action="forward devices' signed batches")
async def ingest_batches(request: Request, node: NodeDep, actor: CurrentActor) -> Response:
    """Each line a signed batch (``MCB1.<payload>.<signature>``, docs/device.md). The answer
    lists one outcome per line, in order, once all are durable: ``accepted``, ``duplicate``
    (an exact replay, stored once) or ``rejected`` with the reason it was quarantined for."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _MEDIA:
        raise HTTPException(
            415, f"send the batches as {_MEDIA[0]} (one MCB1 wire line per line), not {media!r}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"request body exceeds {MAX_BODY} bytes; send fewer batches")
    lines = [line for line in bytes(body).split(b"\n") if line.strip()]
    if not lines:
        raise InvalidInput("the request holds no batch: send one MCB1 wire line per line")
    outcomes = await run_in_threadpool(svc.submit_batches, node, actor, lines, "http")
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for o in outcomes:
        counts[o.status] += 1
    payload = {**counts, "outcomes": [o.as_dict() for o in outcomes]}
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


_OCMF_MEDIA = ("text/plain", "application/xml", "text/xml")


@router.post(
    "/ingest/ocmf",
    response_model=IngestResult,
    operation_id="ingest_ocmf",
    tags=["measurements"],
    summary="Import signed OCMF records of registered EV charging instruments",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {
                    "schema": {
                        "type": "string",
                        "description": "one OCMF record, or a Transparenzsoftware XML container",
                    }
                }
                for m in _OCMF_MEDIA
            },
        }
    },
)
@guard(*svc.SENDERS, action="import OCMF records")
async def ingest_ocmf(request: Request, node: NodeDep, actor: CurrentActor) -> Response:
    """One OCMF record (``text/plain``) or a Transparenzsoftware XML container of records
    (``application/xml``). Each record becomes measurements of the EV charging instrument
    registered under its meter serial, once proven by one of its device keys; the answer
    lists one outcome per record, in order, once all are durable (docs/ingest.md, "OCMF")."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _OCMF_MEDIA:
        raise HTTPException(
            415,
            f"send one OCMF record as text/plain or a container as application/xml, not {media!r}",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OCMF_BODY:
            raise HTTPException(413, f"request body exceeds {MAX_OCMF_BODY} bytes; split the file")
    result = await run_in_threadpool(
        svc.import_ocmf, node, actor, bytes(body), "request body", "http"
    )
    payload = {
        "accepted": result.accepted,
        "duplicate": result.duplicate,
        "rejected": result.rejected,
        "outcomes": [o.as_dict() for o in result.outcomes],
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


class _IntakeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        counts = svc.intake(self.node).counts
        worker = str(os.getpid())
        batches = CounterMetricFamily(
            "metrocloud_intake_batches",
            "Signed batches by outcome (accepted, duplicate, rejected) since this worker started",
            labels=["outcome", "worker"],
        )
        for outcome in ("accepted", "duplicate", "rejected"):
            batches.add_metric([outcome, worker], counts.batches.get(outcome, 0))
        yield batches
        readings = CounterMetricFamily(
            "metrocloud_intake_readings_accepted",
            "Readings in accepted batches since this worker started",
            labels=["worker"],
        )
        readings.add_metric([worker], counts.readings_accepted)
        yield readings
        rejected = CounterMetricFamily(
            "metrocloud_intake_quarantined",
            "Batches quarantined, by reason, since this worker started",
            labels=["reason", "worker"],
        )
        for reason in REASONS:
            rejected.add_metric([reason, worker], counts.rejected.get(reason, 0))
        yield rejected
        lake = svc.lake_service(self.node)
        flusher = lake.flusher if lake is not None else None
        flushed = GaugeMetricFamily(
            "metrocloud_lake_readings_flushed",
            "Readings this worker moved into the lake (0 unless it holds the lake writer lock)",
            labels=["worker"],
        )
        flushed.add_metric([worker], flusher.readings_flushed if flusher else 0)
        yield flushed
        yield from _lake_metrics(lake, worker)
        yield from _stream_metrics(lake, worker)
        yield from _mqtt_metrics(self.node, worker)


def _lake_metrics(service: svc.LakeService | None, worker: str) -> Iterator[Any]:
    """The lake's files (from the writer's own manifest, no disk read) and its maintenance,
    in the lake writer (zeros, and no category, in the other workers)."""
    lake = service.lake if service is not None else None
    stats = category_stats(lake.manifest) if lake is not None else []
    files = GaugeMetricFamily(
        "metrocloud_lake_files",
        "Live Parquet files of the lake, by category (compaction brings a closed day to one)",
        labels=["category", "worker"],
    )
    partitions = GaugeMetricFamily(
        "metrocloud_lake_partitions",
        "Day partitions of the lake, by category",
        labels=["category", "worker"],
    )
    for s in stats:
        files.add_metric([s.category, worker], s.files)
        partitions.add_metric([s.category, worker], s.partitions)
    yield files
    yield partitions
    widest = GaugeMetricFamily(
        "metrocloud_lake_files_per_partition_max",
        "Most files in one partition of the lake (today's grows until it closes)",
        labels=["worker"],
    )
    widest.add_metric([worker], max((s.files_per_partition_max for s in stats), default=0))
    yield widest
    m = service.maintenance if service is not None else None
    compactions = CounterMetricFamily(
        "metrocloud_lake_compactions",
        "Partition compactions of the lake maintenance in this worker, by outcome",
        labels=["outcome", "worker"],
    )
    compactions.add_metric(["done", worker], m.compactions if m else 0)
    compactions.add_metric(["failed", worker], m.compaction_failures if m else 0)
    yield compactions
    failures = CounterMetricFamily(
        "metrocloud_lake_maintenance_failures",
        "Failed retention and vacuum steps of the lake maintenance in this worker",
        labels=["worker"],
    )
    failures.add_metric([worker], m.failures if m else 0)
    yield failures


def _stream_metrics(lake: svc.LakeService | None, worker: str) -> Iterator[Any]:
    """The streaming monitor, in the lake writer (zeros in the other workers)."""
    flusher = lake.flusher if lake is not None else None
    monitor = lake.monitor if lake is not None else None
    s = monitor.stats() if monitor is not None else StreamStats()
    counters: tuple[tuple[str, str, float], ...] = (
        (
            "lake_hook_failures",
            "Committed segments whose on_committed hook failed",
            flusher.hook_failures if flusher else 0,
        ),
        (
            "stream_segments_observed",
            "Lake segments the streaming monitor took in",
            s.segments_observed,
        ),
        ("stream_readings_observed", "Readings the streaming monitor took in", s.readings_observed),
        ("stream_failures", "Failed tries of the streaming monitor (each retry)", s.failures),
        ("stream_segments_reread", "Segments the monitor read back from the lake", s.reread),
    )
    for name, help_text, value in counters:
        c = CounterMetricFamily(f"metrocloud_{name}", help_text, labels=["worker"])
        c.add_metric([worker], value)
        yield c
    gauges: tuple[tuple[str, str, float], ...] = (
        (
            "stream_backlog_segments",
            "Lake segments committed, not yet taken in by the streaming monitor (not poisoned)",
            s.backlog,
        ),
        ("stream_backlog_readings", "Readings of those segments", s.backlog_readings),
        (
            "stream_poisoned_segments",
            "Segments the streaming monitor gave up on after their last try",
            s.poisoned,
        ),
        ("stream_buffered_readings", "Readings held in memory to observe", s.buffered_readings),
        ("stream_lag_seconds", "Commit to observation of the last segment taken in", s.lag_s),
    )
    for name, help_text, value in gauges:
        g = GaugeMetricFamily(f"metrocloud_{name}", help_text, labels=["worker"])
        g.add_metric([worker], value)
        yield g


def _mqtt_metrics(node: Node, worker: str) -> Iterator[Any]:
    """The MQTT subscriber's state, in the worker that owns the subscription (zeros in the
    others, and when the node has no broker)."""
    service = svc.mqtt_service(node)
    sub = service.subscriber if service is not None else None
    gauges = (
        (
            "metrocloud_mqtt_connected",
            "1 while this worker's subscriber is connected to the broker",
            int(sub.connected) if sub else 0,
        ),
        (
            "metrocloud_mqtt_backlog",
            "MQTT messages received and not yet checked by the intake",
            sub.backlog if sub else 0,
        ),
    )
    for name, help_text, value in gauges:
        g = GaugeMetricFamily(name, help_text, labels=["worker"])
        g.add_metric([worker], value)
        yield g
    stats = sub.stats if sub else None
    counters = (
        (
            "metrocloud_mqtt_connections",
            "Connections to the broker made by this worker",
            stats.connections if stats else 0,
        ),
        (
            "metrocloud_mqtt_messages_received",
            "MQTT messages received by this worker",
            stats.received if stats else 0,
        ),
        (
            "metrocloud_mqtt_messages_acknowledged",
            "MQTT messages acknowledged to the broker once their batches were durable",
            stats.acknowledged if stats else 0,
        ),
        (
            "metrocloud_mqtt_messages_unacknowledged",
            "MQTT messages left unacknowledged (the broker redelivers them)",
            stats.unacknowledged if stats else 0,
        ),
    )
    for name, help_text, value in counters:
        c = CounterMetricFamily(name, help_text, labels=["worker"])
        c.add_metric([worker], value)
        yield c


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(node: NodeDep) -> Response:
    """Prometheus text format; counts only (no identifiers, no secrets)."""
    registry = _registries.get(id(node))
    if registry is None:
        registry = _registries[id(node)] = CollectorRegistry()
        registry.register(_IntakeCollector(node))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
