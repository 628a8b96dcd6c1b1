"""The forensic endpoints over HTTP: the timeline as JSON, the evidence bundle as a download
that verifies offline, and refusals as problem+json."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from metrocloud.api.app import API_PREFIX
from metrocloud.formats.evidence import verify_bundle
from tests._evidence import populate
from tests.conftest import World


def test_timeline_and_evidence_over_http(client: TestClient, world: World) -> None:
    case = populate(world)
    base = f"{API_PREFIX}/instruments/{case.instrument}"
    story = client.get(f"{base}/timeline", headers=world.op1.headers)
    assert story.status_code == 200, story.text
    body = story.json()
    assert body["instrument"]["id"] == case.instrument
    assert {e["type"] for e in body["entries"]} >= {"registered", "verification", "measurements"}

    bundle = client.get(f"{base}/evidence", headers=world.auth1.headers)
    assert bundle.status_code == 200, bundle.text
    assert bundle.headers["content-type"] == "application/zip"
    assert f'filename="evidence-{case.instrument}.zip"' in bundle.headers["content-disposition"]
    assert bundle.headers["metrocloud-bundle-sha256"] == hashlib.sha256(bundle.content).hexdigest()
    report = verify_bundle(bundle.content, trusted_key=world.node.key.public_key)
    assert report.ok, report.failure
    assert report.readings == case.readings

    windowed = client.get(
        f"{base}/evidence",
        params={"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"},
        headers=world.man1.headers,
    )
    assert windowed.status_code == 200
    assert verify_bundle(windowed.content).readings == 0

    refused = client.get(f"{base}/evidence", headers=world.nb1.headers)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    empty = client.get(
        f"{base}/timeline",
        params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        headers=world.auth1.headers,
    )
    assert empty.status_code == 422 and "must be after" in empty.json()["detail"]
