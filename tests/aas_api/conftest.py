"""A small population for the AAS API: two types, instruments of two manufacturers, history."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from metrocloud.domain.certificates import ConformityModule
from metrocloud.domain.instruments import EventKind
from metrocloud.services import declarations as decl
from metrocloud.services import instruments as inst
from metrocloud.services.events import EventDraft, record_events
from metrocloud.services.node import Node
from metrocloud.trust.keys import PrivateKey
from tests.conftest import Member, World

AAS = "/aas/api/v3.0"
SHELL = "https://metrocloud.eu/ids/aas/"
SUBMODEL = "https://metrocloud.eu/ids/sm/"
ASSET = "https://metrocloud.eu/ids/asset/"


def b64(identifier: str, *, pad: bool = False) -> str:
    raw = base64.urlsafe_b64encode(identifier.encode()).decode()
    return raw if pad else raw.rstrip("=")


def asset_ids(*links: dict[str, str]) -> list[tuple[str, str]]:
    """``assetIds`` query pairs, one base64url SpecificAssetId each."""
    return [("assetIds", b64(json.dumps(link))) for link in links]


def register(world: World, man: Member, cert: dict[str, Any], serials: list[str]) -> list[str]:
    drafts = [
        inst.InstrumentDraft(
            serial=s,
            certificate_id=cert["id"],
            region="DE21",
            device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
        )
        for s in serials
    ]
    refs, _ = inst.register_instruments(world.node, man.actor, drafts)
    return [r["id"] for r in refs]


@dataclass
class Pop:
    """Type A (nb1 -> man1) with a0 a1 a2; type B (nb2 -> man2) with b0 b1.

    a0 is placed on the market, put into service by op1, verified by auth1 and covered by a
    module D declaration; nothing else has a history.
    """

    world: World
    client: TestClient
    cert_a: dict[str, Any]
    cert_b: dict[str, Any]
    a: list[str]
    b: list[str]
    #: SQL sent to the database while the test runs, with its parameters
    statements: list[str] = field(default_factory=list)
    #: the thread that sent each statement (the read-ahead's are not a request's)
    threads: list[str] = field(default_factory=list)
    parameters: list[Any] = field(default_factory=list)

    @property
    def node(self) -> Node:
        return self.world.node

    def get(self, path: str, who: str = "auth1", **kw: Any) -> Any:
        headers = self.world.members[who].headers if who != "anon" else {}
        return self.client.get(AAS + path, headers={**headers, **kw.pop("headers", {})}, **kw)

    def ok(self, path: str, who: str = "auth1", **kw: Any) -> Any:
        r = self.get(path, who, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def walk(self, path: str, who: str = "auth1", limit: int = 100, **params: Any) -> list[Any]:
        """Every item of a paged AAS list, following the cursors to the end."""
        out: list[Any] = []
        cursor = None
        for _ in range(10_000):
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            page = self.ok(path, who, params=query)
            assert set(page) == {"paging_metadata", "result"}
            out += page["result"]
            cursor = page["paging_metadata"].get("cursor")
            if cursor is None:
                return out
        raise AssertionError("cursor never ended")


@pytest.fixture
def pop(world: World, client: TestClient) -> Iterator[Pop]:
    w = world
    cert_a = w.certificate(w.nb1, w.man1)
    cert_b = w.certificate(w.nb2, w.man2)
    a = register(w, w.man1, cert_a, ["SN-01.A/7", "SN000002", "SN000003"])
    b = register(w, w.man2, cert_b, ["B-1", "B-2"])
    decl.declare_conformity(
        w.node,
        w.man1.actor,
        certificate_id=cert_a["id"],
        instrument_ids=[a[0]],
        module=ConformityModule.D,
    )
    record_events(
        w.node, w.man1.actor, [EventDraft(instrument_id=a[0], kind=EventKind.PLACED_ON_MARKET)]
    )
    record_events(
        w.node,
        w.op1.actor,
        [
            EventDraft(
                instrument_id=a[0], kind=EventKind.PUT_INTO_SERVICE, details={"region": "DE30"}
            )
        ],
    )
    record_events(
        w.node,
        w.auth1.actor,
        [
            EventDraft(
                instrument_id=a[0],
                kind=EventKind.VERIFIED,
                details={"verified_until": "2031-12-31"},
            )
        ],
    )
    p = Pop(w, client, cert_a, cert_b, a, b)

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        p.statements.append(statement)
        p.parameters.append(parameters)
        p.threads.append(threading.current_thread().name)

    event.listen(w.node.db.engine, "before_cursor_execute", count)
    yield p
    event.remove(w.node.db.engine, "before_cursor_execute", count)
