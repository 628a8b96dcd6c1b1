"""Acceptance: ``metrocloud demo`` seeds a realistic node that passes its own checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from metrocloud.api.app import create_app
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings

from ._cli import run_cli

pytestmark = pytest.mark.e2e

ROLES = {"node_admin", "notified_body", "manufacturer", "operator", "authority"}


def _all(
    client: TestClient, path: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/api/v1{path}", params=query, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def _census(data_dir: Path, creds: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What the node holds, read in-process through the API with the demo's tokens."""
    node = Node.open(Settings(data_dir=data_dir, db=None, db_schema=None), create=False)
    try:
        with TestClient(create_app(node)) as client:
            bearer = {role: {"Authorization": f"Bearer {c['token']}"} for role, c in creds.items()}
            for role, c in creds.items():
                r = client.get("/api/v1/me", headers=bearer[role])
                assert r.status_code == 200, r.text
                assert (r.json()["role"], r.json()["party_id"]) == (role, c["party_id"])
            parties = _all(client, "/parties", bearer["node_admin"])
            certificates = _all(client, "/certificates", bearer["notified_body"])
            instruments = _all(client, "/instruments", bearer["authority"])
            head = client.get("/api/v1/ledger/head").json()
    finally:
        node.db.dispose()
    return {
        "roles": Counter(p["role"] for p in parties),
        "certificates": len(certificates),
        "categories": {c["category"] for c in certificates},
        "statuses": Counter(c["status"] for c in certificates),
        "instruments": len(instruments),
        "without_events": sum(1 for i in instruments if i["event_count"] == 0),
        "events": sum(i["event_count"] for i in instruments),
        "states": Counter(i["state"] for i in instruments),
        "with_device_keys": sum(1 for i in instruments if i["device_keys"]),
        "head": (head["tree_size"], head["root_hash"]),
    }


def test_demo_seeds_a_population_that_passes_audit_and_survives_a_rerun(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    seeded = run_cli("demo", "--no-serve", "--instruments", "300", data_dir=data_dir)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    creds_file = data_dir / "credentials.json"
    creds = json.loads(creds_file.read_text())
    assert set(creds) == ROLES
    for role, c in creds.items():
        assert set(c) == {"party_id", "token", "keys"}, (role, c)
        assert isinstance(c["party_id"], str) and isinstance(c["token"], str)
        assert c["party_id"] and c["token"]
        # the party's own key directory (metrocloud exchange --keys), its keys only
        keys = Path(c["keys"])
        assert keys == data_dir / "parties" / role
        assert {p.name for p in keys.iterdir()} >= {"passphrase", f"{c['party_id']}.key.pem"}
        assert all(p.name.startswith((c["party_id"], "passphrase")) for p in keys.iterdir())
    assert "confidential exchange: xch-" in seeded.stderr

    census = _census(data_dir, creds)
    roles = census["roles"]
    assert roles["notified_body"] >= 3, roles
    assert roles["manufacturer"] >= 10, roles
    assert roles["operator"] >= 5, roles
    assert roles["authority"] >= 2, roles
    assert census["certificates"] == 20
    assert len(census["categories"]) >= 5, census["categories"]
    # as documented in services/demo.py: one suspended and one withdrawn certificate
    assert census["statuses"] == {"valid": 18, "suspended": 1, "withdrawn": 1}
    assert census["instruments"] == 300
    assert census["without_events"] == 0
    assert census["events"] > 300
    assert census["with_device_keys"] == 300
    assert len(census["states"]) >= 3, census["states"]

    audit = run_cli("audit", data_dir=data_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit ok" in audit.stdout
    verify = run_cli("ledger", "verify", data_dir=data_dir)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"ledger ok: {census['head'][0]} entries" in verify.stdout

    # a second run on the same directory keeps the population and the credentials
    before = creds_file.read_bytes()
    rerun = run_cli("demo", "--no-serve", "--instruments", "300", data_dir=data_dir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert creds_file.read_bytes() == before
    assert _census(data_dir, creds) == census
