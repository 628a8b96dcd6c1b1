"""POST /api/v1/ingest/batches and /metrics over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from metrocloud.services import instruments as inst
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World, software
from tests.ingest.test_intake import Meter

URL = "/api/v1/ingest/batches"
NDJSON = {"Content-Type": "application/x-ndjson"}


def _meter(world: World) -> Meter:
    cert = world.certificate(world.nb1, world.man1)
    key = PrivateKey.generate()
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial="H-1",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(key.public_key.to_spki_b64(),),
            )
        ],
    )
    return Meter(refs[0]["id"], key, software("1.0.0").checksum)


def _post(client: TestClient, world: World, who: str, body: bytes, **headers: str) -> Any:
    return client.post(
        URL, content=body, headers={**world.members[who].headers, **NDJSON, **headers}
    )


def test_batches_are_answered_line_by_line_and_counted_in_metrics(
    world: World, client: TestClient
) -> None:
    meter = _meter(world)
    good = [meter.batch(), meter.batch()]
    wrong_key = meter.batch(key=PrivateKey.generate())
    body = b"\n".join([good[0].wire(), wrong_key.wire(), b"", good[1].wire(), good[0].wire()])
    r = _post(client, world, "op1", body + b"\n")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (2, 1, 1)
    assert [o["status"] for o in answer["outcomes"]] == [
        "accepted",
        "rejected",
        "accepted",
        "duplicate",
    ]
    assert answer["outcomes"][1]["reason"] == "unknown-key"
    assert answer["outcomes"][0] == {
        "status": "accepted",
        "instrument": meter.instrument,
        "counter": 1,
        "readings": 4,
    }
    metrics = client.get("/metrics").text
    assert 'metrocloud_intake_batches_total{outcome="accepted"' in metrics
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("metrocloud_intake_quarantined_total") and 'reason="unknown-key"' in x
    )
    assert line.endswith(" 1.0")


def test_who_may_send_and_what_a_bad_request_gets(world: World, client: TestClient) -> None:
    meter = _meter(world)
    line = meter.batch().wire()
    assert client.post(URL, content=line, headers=NDJSON).status_code == 401
    for who in ("auth1", "nb1", "admin"):
        r = _post(client, world, who, line)
        assert r.status_code == 403, who
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post(URL, content=line, headers={**world.man1.headers, "Content-Type": "image/png"})
    assert r.status_code == 415 and "x-ndjson" in r.json()["detail"]
    r = _post(client, world, "man1", b"\n\n")
    assert r.status_code == 422 and "no batch" in r.json()["detail"]
    assert _post(client, world, "man1", line).json()["accepted"] == 1
