"""The FastAPI application of one node."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.types import Receive, Scope, Send

from metrocloud import __version__
from metrocloud.api import aas
from metrocloud.api.aas._fast import AasFastLane
from metrocloud.api.deps import BODY_MODELS
from metrocloud.api.problems import install_problem_handlers
from metrocloud.api.routes import (
    certificates,
    compliance,
    exchange,
    flags,
    forensics,
    grid,
    ingest,
    instruments,
    monitoring,
    parties,
    public,
    surveillance,
    verification,
)
from metrocloud.api.routes import measurements as readings
from metrocloud.api.schemas import Problem
from metrocloud.services import exchange_grid, federation, measurements
from metrocloud.services.node import Node

__all__ = ["API_PREFIX", "NodeApp", "create_app"]

API_PREFIX = "/api/v1"

_DESCRIPTION = """\
The REST API of a metrocloud node: one member state's core platform of the European Metrology
Cloud. Parties authenticate with `Authorization: Bearer <token>`; the node identity and the
transparency log are public. Errors are RFC 9457 `application/problem+json`. Every list
answers `{"items": [...], "next_cursor": ...}` and takes `limit` and `cursor`.
"""

_ERRORS = {
    "400": "Malformed JSON or a signature that does not verify",
    "401": "No valid bearer token",
    "403": "The party lacks the right",
    "404": "No such record",
    "409": "Conflict with an existing record or a legal rule",
    "422": "Invalid input",
}


def _telemetry_options() -> dict[str, Any]:
    """FastAPI's native OpenTelemetry (FastAPI >= 0.16x) looks up the global providers on
    every request, a few percent of a small request's time. A node whose environment
    configures no OpenTelemetry (no ``OTEL_*`` variable, docs/operations.md) switches it
    off; with one, FastAPI's defaults apply."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if any(name.startswith("OTEL_") for name in os.environ):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


class NodeApp(FastAPI):
    """The node's FastAPI application, with the AAS fast lane (if any) in front of the
    whole middleware stack: the lane's answers skip the error, telemetry and body-limit
    layers too (it raises nothing it does not handle; anything else it hands on)."""

    fast_lane: AasFastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_lane is not None:
            await self.fast_lane(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(node: Node, *, fast_lane: bool = True, background: bool = False) -> FastAPI:
    """The node's application; ``fast_lane=False`` sends every request through the framework
    (tests compare the two: :mod:`metrocloud.api.aas._fast`). ``background`` runs the
    node's background work while the app serves: the lake writer
    (:func:`metrocloud.services.measurements.start_lake`) and, when the node has an MQTT
    broker (setting ``mqtt``), the MQTT intake (``measurements.start_mqtt``)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        exchange_grid.connect(node)  # documents for parties on other nodes: through the grid
        if background:
            measurements.start_lake(node)
            if node.settings.mqtt:
                measurements.start_mqtt(node, node.settings.mqtt)
            federation.start_grid(node)  # outbox delivery and witnessing (docs/grid.md)
        try:
            yield
        finally:
            if background:
                federation.stop_grid(node)
                measurements.stop_mqtt(node)
                measurements.stop_lake(node)

    app = NodeApp(
        **_telemetry_options(),
        lifespan=lifespan,
        title="metrocloud node API",
        version=__version__,
        description=_DESCRIPTION,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.node = node
    install_problem_handlers(app)
    for r in (
        public.router,
        parties.router,
        certificates.router,
        compliance.router,
        instruments.router,
        ingest.router,
        flags.router,
        readings.router,
        forensics.router,
        monitoring.router,
        surveillance.router,
        verification.router,
        exchange.router,
        grid.router,
    ):
        app.include_router(r, prefix=API_PREFIX)
    app.include_router(ingest.metrics_router)

    app.include_router(aas.router, prefix=aas.AAS_PREFIX)
    aas.install_error_format(app, aas.AAS_PREFIX)  # AAS Part 2 Result bodies there
    if fast_lane:
        app.fast_lane = AasFastLane(functools.partial(FastAPI.__call__, app), node)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        _, defs = models_json_schema(
            [(m, "validation") for m in sorted(BODY_MODELS, key=lambda m: m.__name__)],
            ref_template="#/components/schemas/{model}",
        )
        for name, sub in defs.get("$defs", {}).items():
            comps.setdefault(name, sub)
        comps["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path in schema.get("paths", {}).values():
            for op in path.values():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for code, text in _ERRORS.items():
                    responses.setdefault(code, {"description": text, "content": ref})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
