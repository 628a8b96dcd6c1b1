"""The grid's HTTP faces: node-to-node endpoints take node signatures only and sign their
answers; a party's look-up of a foreign instrument is routed home (docs/grid.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from metrocloud.api.app import create_app
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.signing import NONCE_HEADER, SIGNATURE_HEADER, sign_request, verify_response
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget

SQLITE = DbTarget("sqlite", None, None)
QUERY = "/api/v1/grid/queries/tree-head"


@pytest.fixture
def grid(tmp_path: Path) -> Grid:
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        yield g  # type: ignore[misc]


def _signed(g: Grid, body: bytes, target: str = QUERY) -> dict[str, str]:
    de, fr = g.nodes["DE"], g.nodes["FR"]
    return sign_request(
        de.key,
        sender=de.node_id,
        receiver=fr.node_id,
        method="POST",
        target=target,
        body=body,
        time=int(time.time()),
    )


def test_a_signed_node_request_is_answered_signed_and_cannot_be_replayed(grid: Grid) -> None:
    fr = grid.nodes["FR"]
    body = json.dumps({"from": []}).encode()
    headers = _signed(grid, body)
    with TestClient(create_app(fr), raise_server_exceptions=False) as c:
        r = c.post(QUERY, content=body, headers=headers)
        assert r.status_code == 200, r.text
        verify_response(
            r.headers[SIGNATURE_HEADER],
            fr.key.public_key,
            sender=fr.node_id,
            receiver=grid.nodes["DE"].node_id,
            nonce=headers[NONCE_HEADER],
            status=200,
            body=r.content,
        )
        assert r.json()["head"]["log_id"] == fr.node_id
        again = c.post(QUERY, content=body, headers=headers)
        assert again.status_code == 401 and "used before" in again.json()["detail"]
        tampered = c.post(QUERY, content=b'{"from": [1]}', headers=_signed(grid, body))
        assert tampered.status_code == 401 and "does not verify" in tampered.json()["detail"]
        # a refusal after authentication is signed too (the asker can trust the reason)
        bad = json.dumps({"pairs": [[5, 1]]}).encode()
        h = _signed(grid, bad)
        r = c.post(QUERY, content=bad, headers=h)
        assert r.status_code == 422 and r.headers[SIGNATURE_HEADER]
        assert r.headers["content-type"].startswith("application/problem+json")


def test_a_party_token_is_no_node_identity(grid: Grid) -> None:
    member = grid.admit("FR", "auth", PartyRole.AUTHORITY)
    with TestClient(create_app(grid.nodes["FR"]), raise_server_exceptions=False) as c:
        for path in ("/api/v1/grid/messages", QUERY):
            r = c.post(path, json={"messages": []}, headers=member.headers)
            assert r.status_code == 401, r.text
            assert "Metrocloud-Node" in r.json()["detail"]
            assert SIGNATURE_HEADER not in r.headers


def test_a_foreign_instrument_is_answered_by_its_home_node(grid: Grid) -> None:
    nb = grid.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
    man = grid.admit("FR", "man", PartyRole.MANUFACTURER)
    auth = grid.admit("DE", "auth", PartyRole.AUTHORITY)
    grid.sync(1)
    cert = grid.certificate("DE", nb, man, "DE-0001")
    grid.sync(1)
    (ins,) = grid.instruments("FR", man, cert, 1, "FR")
    de, fr = grid.nodes["DE"], grid.nodes["FR"]
    with TestClient(create_app(de), raise_server_exceptions=False) as c:
        r = c.get(f"/api/v1/instruments/{ins['id']}", headers=auth.headers)
        assert r.status_code == 200, r.text
        assert r.json()["home_node"] == fr.node_id and r.json()["serial"] == "FR00000"
        assert r.json()["device_keys"] and r.json()["certificate_id"] == cert["id"]
        # a refusal at home is a refusal here, with the home node's reason
        other = grid.admit("DE", "man_de", PartyRole.MANUFACTURER)
        r = c.get(f"/api/v1/instruments/{ins['id']}", headers=other.headers)
        assert r.status_code == 403 and fr.node_id in r.json()["detail"]
        grid.transport.down(grid.url("FR"))
        r = c.get(f"/api/v1/instruments/{ins['id']}", headers=auth.headers)
        assert r.status_code == 502 and r.json()["type"].endswith("/peer-unavailable")


def test_alerts_status_and_statistics_over_http(grid: Grid) -> None:
    auth = grid.admit("FR", "auth", PartyRole.AUTHORITY)
    admin = grid.admit("FR", "admin", PartyRole.NODE_ADMIN)
    nb = grid.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
    man = grid.admit("DE", "man", PartyRole.MANUFACTURER)
    cert = grid.certificate("DE", nb, man, "DE-0002")
    grid.sync(1)
    fr = grid.nodes["FR"]
    with TestClient(create_app(fr), raise_server_exceptions=False) as c:
        r = c.post(
            "/api/v1/grid/alerts",
            json={
                "subject_type": "certificate",
                "subject_id": cert["id"],
                "severity": "serious",
                "title": "seal can be lifted",
                "description": "found in two regions",
                "measures": ["inspect seals"],
            },
            headers=auth.headers,
        )
        assert r.status_code == 201, r.text
        alert = r.json()
        assert alert["kind"] == "market_surveillance" and alert["origin_node_id"] == fr.node_id
        r = c.post(
            "/api/v1/grid/alerts",
            json={
                **{k: alert[k] for k in ("subject_type", "subject_id", "title")},
                "severity": "catastrophic",
                "description": "d",
            },
            headers=auth.headers,
        )
        assert r.status_code == 422 and "severity" in r.json()["detail"]
        st = c.get("/api/v1/grid/status", headers=admin.headers).json()
        assert st["joined"] and [p["country"] for p in st["peers"]] == ["DE"]
        r = c.get(
            "/api/v1/grid/statistics/non-compliance-rate",
            params={"by": "category"},
            headers=auth.headers,
        )
        assert r.status_code == 200 and r.json()["complete"], r.text
        assert c.get("/api/v1/grid/statistics/unknown", headers=auth.headers).status_code == 422
    grid.sync(1)
    with TestClient(create_app(grid.nodes["DE"]), raise_server_exceptions=False) as c:
        items = c.get("/api/v1/grid/alerts", headers=man.headers).json()["items"]
        assert [a["id"] for a in items] == [alert["id"]]
