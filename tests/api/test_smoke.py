from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import World


def test_certificate_issue_and_read(client: TestClient, world: World) -> None:
    body = {
        "number": "DE-M-26-0001",
        "holder_id": world.man1.id,
        "category": "MI-003",
        "model": "EM-340",
        "accuracy_class": "B",
        "software": [
            {"name": "FW", "version": "1.0", "algorithm": "sha256", "checksum": "ab" * 32}
        ],
    }
    r = client.post("/api/v1/certificates", json=body, headers=world.nb1.headers)
    assert r.status_code == 201, r.text
    cert = r.json()["certificate"]
    assert cert["status"] == "valid" and r.json()["leaf_index"] >= 0
    r = client.get(f"/api/v1/certificates/{cert['id']}", headers=world.man2.headers)
    assert r.status_code == 200 and r.json()["number"] == "DE-M-26-0001"
