from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from metrocloud.api.app import create_app
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


def test_certificate_status_filter_uses_the_effective_status(
    client: TestClient, world: World
) -> None:
    from datetime import date

    from metrocloud.domain.categories import InstrumentCategory
    from metrocloud.services import certificates as certs
    from tests.conftest import software

    def issue(number: str, valid_until: date) -> str:
        draft = certs.CertificateDraft(
            number=number,
            holder_id=world.man1.id,
            category=InstrumentCategory.MI_001,
            model="W",
            accuracy_class="2",
            software=(software(),),
            issued_on=date(2010, 1, 1),
            valid_until=valid_until,
        )
        return certs.issue_certificate(world.node, world.nb1.actor, draft)[0]["id"]

    old = issue("OLD-1", date(2020, 1, 1))
    new = issue("NEW-1", date(2099, 1, 1))

    def ids(status: str) -> set[str]:
        r = client.get(f"/api/v1/certificates?status={status}", headers=world.auth1.headers)
        assert r.status_code == 200
        return {c["id"] for c in r.json()["items"]}

    assert old in ids("expired") and old not in ids("valid")
    assert new in ids("valid") and new not in ids("expired")
    r = client.get(f"/api/v1/certificates/{old}", headers=world.auth1.headers)
    assert r.json()["status"] == "expired"


def test_fastapi_telemetry_is_off_unless_the_environment_configures_opentelemetry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's native OpenTelemetry looks up providers on every request: off when no
    OTEL_* variable is set, FastAPI's defaults (on) when one is."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    quiet = create_app(world.node)
    assert not quiet._native_telemetry.enabled()
    assert (quiet._telemetry["tracing"], quiet._telemetry["metrics"]) == (False, False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "metrocloud-node")
    configured = create_app(world.node)
    assert (configured._telemetry["tracing"], configured._telemetry["metrics"]) == (True, True)
