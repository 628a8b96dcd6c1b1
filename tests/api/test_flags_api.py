"""GET /api/v1/instruments/{id}/flags: what the intake flagged, to the instrument's readers."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.test_ingest_api import NDJSON, URL, _meter
from tests.conftest import World

FLAGS = "/api/v1/instruments/{}/flags"


def test_flags_list_counter_gaps_and_unapproved_software_with_paging(
    world: World, client: TestClient
) -> None:
    meter = _meter(world)
    first = meter.batch()
    meter.batch()  # lost on the way
    late = meter.batch()
    foreign_sw = meter.batch(software="cd" * 32)
    body = b"\n".join([first.wire(), late.wire(), foreign_sw.wire()])
    r = client.post(URL, content=body, headers={**world.man1.headers, **NDJSON})
    assert [o["status"] for o in r.json()["outcomes"]] == ["accepted", "accepted", "rejected"]

    url = FLAGS.format(meter.instrument)
    r = client.get(url, headers=world.man1.headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(f["instrument_id"], f["kind"]) for f in items] == [
        (meter.instrument, "counter-gap"),
        (meter.instrument, "unapproved-software"),
    ]
    assert "1 batch(es) missing" in items[0]["detail"]
    assert "cd" * 32 in items[1]["detail"]
    assert items[0]["at"].endswith("Z")

    page1 = client.get(url, params={"limit": 1}, headers=world.man1.headers).json()
    page2 = client.get(
        url, params={"limit": 1, "cursor": page1["next_cursor"]}, headers=world.man1.headers
    ).json()
    assert [f["id"] for f in page1["items"] + page2["items"]] == [f["id"] for f in items]
    assert page2["next_cursor"] is None

    only = client.get(url, params={"kind": "unapproved-software"}, headers=world.man1.headers)
    assert [f["kind"] for f in only.json()["items"]] == ["unapproved-software"]
    bad = client.get(url, params={"kind": "bogus"}, headers=world.man1.headers)
    assert bad.status_code == 422


def test_a_foreign_read_of_flags_is_in_the_owners_access_log(
    world: World, client: TestClient
) -> None:
    meter = _meter(world)
    url = FLAGS.format(meter.instrument)
    assert client.get(url, headers=world.auth1.headers).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert client.get(url, headers=world.man2.headers).status_code == 403
    log = client.get("/api/v1/access-log", headers=world.man1.headers).json()["items"]
    assert [(e["reader_id"], e["action"], e["resource_id"]) for e in log] == [
        (world.auth1.id, "flags.read", meter.instrument)
    ]
    missing = client.get(
        FLAGS.format("ins-DE-00000000000000000000000000"), headers=world.man1.headers
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
