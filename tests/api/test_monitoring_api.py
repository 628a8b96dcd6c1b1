"""GET /api/v1/monitoring/alerts and GET /api/v1/maintenance/plan: detect and plan over the
node's lake, cut to what the caller may read, foreign reads in the owners' access log; the
streaming monitor's queue for the node admin (GET /api/v1/monitoring/stream-queue, POST
.../{segment}/retry): pages, states, problems with what was found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from metrocloud.domain.instruments import EventKind
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services import events as ev
from metrocloud.services._streaming_queue import add_queued, record_failure
from metrocloud.services.fleet import estimate_json
from metrocloud.services.maintenance import plan_maintenance
from metrocloud.services.streaming import stream_backlog
from tests._monitoring import DAY0, give_results
from tests.conftest import Member, World

ALERTS = "/api/v1/monitoring/alerts"
PLAN = "/api/v1/maintenance/plan"


@dataclass
class Setup:
    a: list[str]  # man1's instruments, operated by op1 (nb1's certificate)
    b: list[str]  # man2's, operated by op2 (nb2's)


def _side(world: World, nb: Member, man: Member, op: Member, prefix: str) -> list[str]:
    cert = world.certificate(nb, man)
    ids = [r["id"] for r in world.instruments(man, cert, 2, prefix=prefix)]
    for actor, kind in ((man, EventKind.PLACED_ON_MARKET), (op, EventKind.PUT_INTO_SERVICE)):
        ev.record_events(
            world.node, actor.actor, [ev.EventDraft(instrument_id=i, kind=kind) for i in ids]
        )
    return ids


@pytest.fixture
def setup(world: World) -> Setup:
    a = _side(world, world.nb1, world.man1, world.op1, "A")
    b = _side(world, world.nb2, world.man2, world.op2, "B")
    for ins in (a[0], b[0], b[1]):
        give_results(world.node, world.auth1.actor, ins, "MI-003")
    return Setup(a, b)


def _get(client: TestClient, url: str, who: Member, **params: Any) -> dict[str, Any]:
    r = client.get(url, params=params, headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _instruments(page: dict[str, Any]) -> list[str]:
    return [item["instrument"] for item in page["items"]]


def test_alerts_are_cut_to_what_the_caller_may_read(
    world: World, client: TestClient, setup: Setup
) -> None:
    everything = _get(client, ALERTS, world.auth1)["items"]
    # each: the broken seal (registry) and the drift of its register (lake)
    assert [(a["instrument"], a["kind"]) for a in everything] == [
        (i, kind) for i in sorted([setup.a[0], *setup.b]) for kind in ("drift", "seal_broken")
    ]
    seal = everything[1]
    assert seal["severity"] == "critical" and seal["evidence"] == {"event": "seal_broken"}
    drift = everything[0]
    assert drift["at"].endswith("Z") and drift["evidence"]["days"] >= 5
    assert _instruments(_get(client, ALERTS, world.man1)) == [setup.a[0]] * 2
    assert _instruments(_get(client, ALERTS, world.op1)) == [setup.a[0]] * 2
    assert _instruments(_get(client, ALERTS, world.nb1)) == [setup.a[0]] * 2  # its certificate
    assert set(_instruments(_get(client, ALERTS, world.man2))) == set(setup.b)
    assert client.get(ALERTS, headers=world.admin.headers).status_code == 403
    # one instrument: the caller's own, or refused
    one = _instruments(_get(client, ALERTS, world.man2, instrument=setup.b[1]))
    assert one == [setup.b[1]] * 2
    assert _get(client, ALERTS, world.man1, instrument=setup.a[1])["items"] == []
    r = client.get(ALERTS, params={"instrument": setup.b[0]}, headers=world.man1.headers)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


def test_alerts_page_by_instrument_and_kind_and_take_a_window(
    world: World, client: TestClient, setup: Setup
) -> None:
    whole = _get(client, ALERTS, world.auth1)["items"]
    assert len(whole) == 6
    pages = [_get(client, ALERTS, world.auth1, limit=4)]
    while pages[-1]["next_cursor"]:
        pages.append(_get(client, ALERTS, world.auth1, limit=4, cursor=pages[-1]["next_cursor"]))
    assert [len(p["items"]) for p in pages] == [4, 2]
    assert [a for p in pages for a in p["items"]] == whole
    # the seals were broken now; a window that ends before finds none of them
    before = _get(client, ALERTS, world.auth1, to=DAY0.isoformat())
    assert before["items"] == []
    bad = client.get(ALERTS, params={"cursor": "bm90LW1pbmU"}, headers=world.auth1.headers)
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    late = (DAY0 + timedelta(days=3)).isoformat()
    backwards = client.get(
        ALERTS, params={"from": late, "to": DAY0.isoformat()}, headers=world.auth1.headers
    )
    assert backwards.status_code == 422 and "before start" in backwards.json()["detail"]


def test_the_plan_is_the_services_plan_cut_to_the_caller(
    world: World, client: TestClient, setup: Setup
) -> None:
    with DuckDBEngine(Lake.open(world.node.settings.lake_path()), threads=1) as engine:
        want = {e.instrument: estimate_json(e) for e in plan_maintenance(world.node, engine)}
    assert set(want) == {setup.a[0], setup.b[0], setup.b[1]}
    got = _get(client, PLAN, world.auth1)["items"]
    assert got == [want[i] for i in sorted(want)]
    estimate = got[0]
    assert estimate["days"] >= 5 and estimate["drift_percent_per_year"] > 50  # 0.25 %/day
    assert estimate["drift_low"] <= estimate["drift_percent_per_year"] <= estimate["drift_high"]
    assert estimate["predicted_crossing"].endswith("Z")
    assert estimate["recommended_reverification"] is not None
    assert _instruments(_get(client, PLAN, world.op1)) == [setup.a[0]]
    assert _instruments(_get(client, PLAN, world.man2, instrument=setup.b[0])) == [setup.b[0]]
    r = client.get(PLAN, params={"instrument": setup.a[0]}, headers=world.op2.headers)
    assert r.status_code == 403
    assert client.get(PLAN, headers=world.admin.headers).status_code == 403
    # a window of three days holds too few daily errors for an estimate
    short = _get(client, PLAN, world.auth1, to=(DAY0 + timedelta(days=3)).isoformat())
    assert short["items"] == []


def _log(client: TestClient, owner: Member) -> set[tuple[str, str, str]]:
    items = _get(client, "/api/v1/access-log", owner, limit=1000)["items"]
    return {(e["reader_id"], e["action"], e["resource_id"]) for e in items}


def test_foreign_reads_are_in_the_owners_access_log(
    world: World, client: TestClient, setup: Setup
) -> None:
    _get(client, ALERTS, world.auth1)
    _get(client, PLAN, world.nb1)
    _get(client, ALERTS, world.man1)  # its own: not logged
    man1, op2 = _log(client, world.man1), _log(client, world.op2)
    assert (world.auth1.id, "alerts.read", setup.a[0]) in man1
    assert (world.nb1.id, "maintenance.read", setup.a[0]) in man1
    assert {(world.auth1.id, "alerts.read", i) for i in setup.b} <= op2
    assert not any(reader == world.man1.id for reader, _, _ in man1)
    # only what was answered is logged: nb1 read nothing of side B
    assert not any(reader == world.nb1.id for reader, _, _ in op2)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01T00:00:00+14:00"},  # before the first representable UTC time
        {"to": "9999-12-31T23:59:59-14:00"},
        {"to": "0001-01-01T00:00:00"},
        {"from": "2026-03-01T00:00:00", "to": "2026-02-28T00:00:00"},
    ],
)
@pytest.mark.parametrize("url", [ALERTS, PLAN])
def test_windows_out_of_range_are_invalid_input(
    world: World, client: TestClient, url: str, params: dict[str, str]
) -> None:
    r = client.get(url, params=params, headers=world.auth1.headers)
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/invalid-input")


# -- the streaming monitor's queue (node admin) -------------------------------------------------

QUEUE = "/api/v1/monitoring/stream-queue"


def _queue(world: World) -> None:
    """Three segments owed: one waiting for its next try, one poisoned, one new."""
    with world.node.db.write() as conn:
        for s in ("intake-1-4", "intake-5-8", "intake-9-9"):
            add_queued(conn, s, readings=4, at="2026-03-02T00:00:00.000Z")
        record_failure(conn, "intake-1-4", attempts=2, error="OperationalError: locked",
                       next_try_at="2026-03-02T00:00:03.000Z", poisoned_at=None)  # fmt: skip
        record_failure(conn, "intake-5-8", attempts=8, error="SegmentUnavailable: gone",
                       next_try_at=None, poisoned_at="2026-03-02T00:02:00.000Z")  # fmt: skip


def test_the_node_admin_reads_the_streaming_queue_in_pages(
    world: World, client: TestClient
) -> None:
    _queue(world)
    whole = _get(client, QUEUE, world.admin)
    assert [(q["segment"], q["state"], q["attempts"]) for q in whole["items"]] == [
        ("intake-1-4", "pending", 2), ("intake-5-8", "poisoned", 8), ("intake-9-9", "pending", 0)
    ]  # fmt: skip
    assert whole["items"][1] == {
        "segment": "intake-5-8", "state": "poisoned", "position": whole["items"][1]["position"],
        "committed_at": "2026-03-02T00:00:00.000Z", "readings": 4, "attempts": 8,
        "next_try_at": None, "error": "SegmentUnavailable: gone",
        "poisoned_at": "2026-03-02T00:02:00.000Z",
    }  # fmt: skip
    first = _get(client, QUEUE, world.admin, limit=2)
    rest = _get(client, QUEUE, world.admin, limit=2, cursor=first["next_cursor"])
    assert first["items"] + rest["items"] == whole["items"] and rest["next_cursor"] is None
    poisoned = _get(client, QUEUE, world.admin, state="poisoned")["items"]
    assert [q["segment"] for q in poisoned] == ["intake-5-8"]
    for who in (world.auth1, world.man1, world.op1, world.nb1):
        r = client.get(QUEUE, headers=who.headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    bad = client.get(QUEUE, params={"state": "stuck"}, headers=world.admin.headers)
    assert bad.status_code == 422


def _retry(client: TestClient, who: Member, segment: str, **kw: Any) -> Any:
    return client.post(f"{QUEUE}/{segment}/retry", headers=who.headers, **kw)


def test_a_poisoned_segment_is_put_back_and_the_rest_refused_with_a_problem(
    world: World, client: TestClient
) -> None:
    _queue(world)
    r = _retry(client, world.admin, "intake-5-8", json={"reason": "lake restored from backup"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["attempts"], body["poisoned_at"]) == ("pending", 0, None)
    assert body["error"] == "SegmentUnavailable: gone"  # the last error, until the next try
    assert stream_backlog(world.node).poisoned == ()
    for segment, status, code, detail in (
        ("intake-5-8", 409, "stream-segment-not-poisoned", "is not poisoned: it is queued"),
        ("intake-1-4", 409, "stream-segment-not-poisoned", "2 failed tries so far"),
        ("intake-7-7", 404, "stream-segment-unknown", "not in the streaming queue"),
    ):
        r = _retry(client, world.admin, segment)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/" + code) and detail in r.json()["detail"]
    _queue_poison(world, "intake-9-9")
    r = _retry(client, world.auth1, "intake-9-9")
    assert r.status_code == 403 and stream_backlog(world.node).poisoned[0].segment == "intake-9-9"
    r = _retry(client, world.admin, "intake-9-9", content=b"{not json")
    assert r.status_code == 400 and r.json()["type"].endswith("/malformed-json")
    assert _retry(client, world.admin, "intake-9-9").status_code == 200  # no body: fine


def _queue_poison(world: World, segment: str) -> None:
    with world.node.db.write() as conn:
        record_failure(conn, segment, attempts=8, error="RuntimeError: x", next_try_at=None,
                       poisoned_at="2026-03-02T00:05:00.000Z")  # fmt: skip
