"""Remote verification over HTTP: event-log upload, evaluate, sign locally, record, read."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from metrocloud.api.app import API_PREFIX
from metrocloud.device.eventlog import DeviceEventKind
from metrocloud.services import verification as ver
from metrocloud.services.node import Node
from tests.conftest import Member, World
from tests.services import _verification_fleet as vf

NDJSON = {"Content-Type": "application/x-ndjson"}


def _put(client: TestClient, member: Member, iid: str, body: bytes) -> Any:
    return client.put(
        f"{API_PREFIX}/instruments/{iid}/event-log",
        content=body,
        headers={**member.headers, **NDJSON},
    )


def test_event_log_upload_extend_rewrite_and_broken(
    client: TestClient, node: Node, world: World
) -> None:
    fleet = vf.register(world, world.certificate(world.nb1, world.man1), 1)
    iid = fleet.ids[0]
    log = vf.device_log(fleet.keys[iid])
    r = _put(client, world.op1, iid, vf.log_bytes(log))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "instrument_id": iid,
        "records": 2,
        "appended": 2,
        "head": log.head,
        "key_id": fleet.keys[iid].key_id,
    }
    log.append(DeviceEventKind.CLOCK_SET, {"by_s": 2})
    r = _put(client, world.man1, iid, vf.log_bytes(log))
    assert (r.status_code, r.json()["appended"], r.json()["records"]) == (200, 1, 3)
    # a different history signed by the device key: 409, the stored log stays
    other = vf.device_log(fleet.keys[iid])
    other.append(DeviceEventKind.SEAL_BROKEN, {})
    r = _put(client, world.man1, iid, vf.log_bytes(other))
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["type"].endswith("/event-log-rewritten")
    assert "append-only" in problem["detail"] and problem["rule"]
    # a record that fails its signature: 400, naming the seq and the check
    broken = vf.log_bytes(log).replace(b'"by_s":2', b'"by_s":9')
    log.append(DeviceEventKind.POWER_FAILURE, {})
    broken += log.records[-1].to_line()
    r = _put(client, world.man1, iid, broken)
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("/event-log-broken")
    assert "seq 3" in r.json()["detail"] and "signature" in r.json()["detail"]
    assert _put(client, world.man1, iid, vf.log_bytes(log, last=3)).json()["records"] == 3
    # the wrong media type and outsiders
    r = client.put(
        f"{API_PREFIX}/instruments/{iid}/event-log",
        content=vf.log_bytes(log),
        headers={**world.man1.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 415
    assert _put(client, world.man2, iid, vf.log_bytes(log)).status_code == 403
    assert _put(client, world.auth1, iid, vf.log_bytes(log)).status_code == 403


def test_evaluate_sign_locally_record_and_read(
    client: TestClient, node: Node, world: World
) -> None:
    fleet = vf.register(world, world.certificate(world.nb1, world.man1), 3)
    vf.upload_logs(fleet)
    bad = fleet.ids[2]
    r = client.post(
        f"{API_PREFIX}/instruments/{bad}/events",
        json={"kind": "tamper_detected"},
        headers=world.op1.headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"{API_PREFIX}/verifications/evaluate",
        json={"instrument_ids": fleet.ids},
        headers=world.auth1.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["passed"], body["failed"]) == (2, 1)
    results = body["results"]
    assert [x["instrument_id"] for x in results] == fleet.ids
    assert [f["code"] for c in results[2]["checks"] for f in c["findings"]] == ["tamper-detected"]
    # the authority signs what it got, with its own key, where its key is
    signed = [
        ver.sign_result(ver.VerificationResult.from_json(x), world.auth1.key).to_json()
        for x in results
    ]
    r = client.post(
        f"{API_PREFIX}/verifications", json={"results": signed}, headers=world.auth1.headers
    )
    assert r.status_code == 201, r.text
    assert [e["kind"] for e in r.json()["recorded"]] == [
        "verified",
        "verified",
        "verification_failed",
    ]
    r = client.get(f"{API_PREFIX}/instruments/{fleet.ids[0]}", headers=world.op1.headers)
    assert r.json()["verified_until"] == results[0]["verified_until"]
    r = client.get(f"{API_PREFIX}/instruments/{bad}/verifications", headers=world.man1.headers)
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]
    assert item["outcome"] == "fail" and "tamper_detected" in item["reason"]
    assert item["result"] == results[2] and item["signature"] == signed[2]["signature"]
    # a result someone altered in transit is refused, nothing recorded
    again = client.post(
        f"{API_PREFIX}/verifications/evaluate",
        json={"instrument_ids": fleet.ids[:1]},
        headers=world.auth1.headers,
    ).json()["results"][0]
    wire = ver.sign_result(ver.VerificationResult.from_json(again), world.auth1.key).to_json()
    wire["result"]["checks"][3]["evidence"]["why"] = "edited"
    r = client.post(
        f"{API_PREFIX}/verifications", json={"results": [wire]}, headers=world.auth1.headers
    )
    assert r.status_code == 400 and r.json()["type"].endswith("/verification-failed"), r.text
    # a malformed signed result is invalid input, naming its index
    r = client.post(
        f"{API_PREFIX}/verifications",
        json={"results": [{"result": again}]},
        headers=world.auth1.headers,
    )
    assert r.status_code == 422 and "results[0]" in r.json()["detail"], r.text


def test_only_authorities_evaluate_and_record(client: TestClient, world: World) -> None:
    for member in (world.man1, world.op1, world.nb1, world.admin):
        for path, body in (
            ("/verifications/evaluate", {"instrument_ids": ["ins-DE-00000000000000000000000000"]}),
            ("/verifications", {"results": [{}]}),
        ):
            r = client.post(f"{API_PREFIX}{path}", json=body, headers=member.headers)
            assert r.status_code == 403, (member.party["role"], path, r.text)
    r = client.post(
        f"{API_PREFIX}/verifications/evaluate",
        json={"instrument_ids": ["ins-DE-00000000000000000000000000"]},
        headers=world.auth1.headers,
    )
    assert r.status_code == 404
