"""The durable outbox: committed with its fact, retried with backoff while a peer is down,
delivered in order and applied exactly once (docs/grid.md#outbox)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.errors import Conflict
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.outbox import FAILED, PENDING, backoff_ms
from metrocloud.grid.peers import peer
from metrocloud.services import certificates as certs
from metrocloud.services import federation as fed
from metrocloud.services import parties as pty
from metrocloud.store.schema import grid_inbox, grid_outbox, grid_replicated
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget, Member


@given(
    attempts=st.integers(1, 40),
    base=st.floats(0.01, 10),
    cap=st.floats(0.01, 600),
    r=st.floats(0, 1),
)
def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(
    attempts: int, base: float, cap: float, r: float
) -> None:
    ceiling = min(cap, base * 2 ** (attempts - 1))
    d = backoff_ms(attempts, base_s=base, max_s=cap, rng=lambda: r)
    assert int(500 * ceiling) - 1 <= d <= int(1000 * ceiling)
    if base * 2**attempts <= cap:  # below the cap, the next ceiling doubles
        assert backoff_ms(attempts + 1, base_s=base, max_s=cap, rng=lambda: r) >= d


def _outbox(g: Grid, country: str, status: str, kind: str = "grid.replicate") -> list[Any]:
    """The node's outbox rows of ``kind`` (witnessing adds cosignature messages of its own)."""
    with g.nodes[country].db.read() as conn:
        q = select(grid_outbox).where(grid_outbox.c.status == status)
        if kind:
            q = q.where(grid_outbox.c.kind == kind)
        return list(conn.execute(q.order_by(grid_outbox.c.id)))


def _setup(g: Grid) -> tuple[Member, Member]:
    nb = g.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
    man = g.admit("DE", "man", PartyRole.MANUFACTURER)
    g.sync(1)
    return nb, man


def test_nothing_is_lost_while_a_peer_is_down_and_order_is_kept(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        nb, man = _setup(g)
        g.transport.down(g.url("FR"))
        cert = g.certificate("DE", nb, man, "DE-0001")
        certs.change_certificate(
            g.nodes["DE"],
            nb.actor,
            cert["id"],
            CertificateAction.SUSPEND,
            reason="audit",
        )
        for _ in range(3):
            report = fed.sync(g.nodes["DE"])
            assert report["delivered"] == 0 and report["retried"] == 1
        assert len(_outbox(g, "DE", PENDING)) == 2  # the issue and the suspension
        waiting = _outbox(g, "DE", PENDING, kind="")
        assert waiting[0].attempts == 3 and "no node answers" in waiting[0].last_error
        assert all(w.attempts == 0 for w in waiting[1:])  # they wait behind it: FIFO per peer
        status = fed.grid_status(g.nodes["DE"])["peers"][0]
        assert status["outbox"]["pending"] == len(waiting) and status["last_error"]
        with pytest.raises(Exception, match="does not exist"):
            certs.get_certificate(g.nodes["FR"], cert["id"])
        g.transport.down(g.url("FR"), False)
        assert fed.sync(g.nodes["DE"])["delivered"] == len(waiting)
        fr = certs.get_certificate(g.nodes["FR"], cert["id"])
        assert fr["status"] == "suspended" and fr["number"] == "DE-0001"
        assert _outbox(g, "DE", PENDING) == []


def test_a_redelivered_message_is_applied_once(tmp_path: Path, db_target: DbTarget) -> None:
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        nb, man = _setup(g)
        g.certificate("DE", nb, man, "DE-0002")
        (msg,) = _outbox(g, "DE", PENDING)
        fr, de = g.nodes["FR"], g.nodes["DE"]
        with fr.db.read() as conn:
            sender = peer(conn, de.node_id)
            before = fr.log.tree_size(conn)
        body = {
            "messages": [
                {
                    "message_id": msg.message_id,
                    "kind": msg.kind,
                    "payload": json.loads(msg.payload),
                }
            ]
        }
        first = fed.receive_messages(fr, sender, body)
        again = fed.receive_messages(fr, sender, body)  # the sender never saw the first answer
        assert first["results"][0]["status"] == "applied"
        assert again["results"][0]["status"] == "duplicate"
        assert again["results"][0]["result"] == first["results"][0]["result"]
        with fr.db.read() as conn:
            assert fr.log.tree_size(conn) == before + first["results"][0]["result"]["applied"]
            inbox = select(func.count()).where(grid_inbox.c.message_id == msg.message_id)
            assert conn.execute(inbox).scalar_one() == 1
            kinds = conn.execute(select(grid_replicated.c.kind)).scalars().all()
        assert sorted(kinds).count("certificate.issued") == 1
        # the worker's own delivery of the same message is a duplicate too: nothing changes
        fed.sync(de)
        assert _outbox(g, "DE", PENDING) == []
        with fr.db.read() as conn:
            assert fr.log.tree_size(conn) == before + first["results"][0]["result"]["applied"]


def test_a_rolled_back_fact_queues_no_message(tmp_path: Path, db_target: DbTarget) -> None:
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        nb, man = _setup(g)
        g.certificate("DE", nb, man, "DE-0003")
        queued = len(_outbox(g, "DE", PENDING))
        with pytest.raises(Conflict):
            g.certificate("DE", nb, man, "DE-0003")  # number taken
        assert len(_outbox(g, "DE", PENDING)) == queued


def test_a_refused_message_is_set_aside_and_the_next_ones_flow(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        nb, man = _setup(g)
        fed.send_to_node(g.nodes["DE"], "FR", "no.such-kind", {"x": 1})
        cert = g.certificate("DE", nb, man, "DE-0004")
        fed.sync(g.nodes["DE"])
        (failed,) = _outbox(g, "DE", FAILED, kind="")
        assert failed.kind == "no.such-kind" and "handles no messages" in failed.last_error
        fed.sync(g.nodes["DE"])
        assert certs.get_certificate(g.nodes["FR"], cert["id"])["status"] == "valid"
        assert fed.grid_status(g.nodes["DE"])["peers"][0]["outbox"]["failed"] == 1
        assert _outbox(g, "DE", PENDING) == []


_ECHOED: list[tuple[str, dict[str, object]]] = []


def _echo(node: Any, conn: Any, sender: Any, payload: Any) -> dict[str, bool]:
    _ECHOED.append((sender.node_id, dict(payload)))
    return {"stored": True}


def test_send_to_node_hands_the_payload_to_the_registered_handler(
    tmp_path: Path, db_target: DbTarget
) -> None:
    got = _ECHOED
    got.clear()
    fed.on_message("test.echo", _echo)
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        de = g.nodes["DE"]
        with de.db.write() as conn:  # in the caller's transaction
            mid = fed.send_to_node(de, "FR", "test.echo", {"doc": "ciphertext"}, conn=conn)
        fed.sync(de)
        fed.sync(de)
        assert got == [(de.node_id, {"doc": "ciphertext"})]
        with g.nodes["FR"].db.read() as conn:
            row = conn.execute(select(grid_inbox).where(grid_inbox.c.message_id == mid)).one()
        assert row.kind == "test.echo" and '"stored":true' in row.response
        with pytest.raises(Exception, match="no admitted node"):
            fed.send_to_node(de, "AT", "test.echo", {})


def test_a_colliding_record_is_set_aside_not_retried_forever(tmp_path: Path) -> None:
    """Two member states admitted notified bodies with one NANDO number: the second node's
    admission cannot apply on the first; it is refused with the reason, once."""
    with grid_of(tmp_path, DbTarget("sqlite", None, None), ("DE", "FR")) as g:
        for c in ("DE", "FR"):
            pty.admit_party(
                g.nodes[c], None, name=f"NB {c}", role=PartyRole.NOTIFIED_BODY, nb_number="0999"
            )
        g.sync(2)
        (failed,) = _outbox(g, "FR", FAILED)
        assert "collides with a record here" in failed.last_error
        assert failed.attempts == 1


def test_a_delivery_request_is_cut_by_payload_size() -> None:
    from metrocloud.grid.delivery import _within
    from metrocloud.grid.outbox import OutboxMessage

    def msg(i: int, size: int) -> OutboxMessage:
        return OutboxMessage(
            id=i,
            message_id=str(i),
            peer_id="p",
            kind="k",
            payload={},
            attempts=0,
            created_at="",
            size=size,
        )

    assert [m.id for m in _within([msg(1, 5), msg(2, 5), msg(3, 5)], 10)] == [1, 2]
    assert [m.id for m in _within([msg(1, 50), msg(2, 5)], 10)] == [1]  # one always goes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=12), cap=st.integers(1, 8000))
def test_due_reads_only_the_payloads_that_fit_a_request(
    tmp_path: Path, sizes: list[int], cap: int
) -> None:
    """``due(max_bytes=...)`` picks what the delivery round would cut to (at least one
    message, then those within the cap), without loading the payloads beyond it."""
    from metrocloud.grid.delivery import _within
    from metrocloud.grid.outbox import due, enqueue
    from metrocloud.store.database import Database, sqlite_url

    db = Database(sqlite_url(tmp_path))
    db.migrate()
    try:
        with db.write() as conn:
            conn.execute(grid_outbox.delete())
            for i, n in enumerate(sizes):
                enqueue(
                    conn, peer_ids=["p"], kind="k", payload={"x": "y" * n}, created_at="", now_ms=i
                )
        with db.read() as conn:
            capped = due(conn, "p", now_ms=10**6, limit=100, max_bytes=cap)
            everything = due(conn, "p", now_ms=10**6, limit=100)
        assert [m.id for m in capped] == [m.id for m in _within(everything, cap)]
        assert capped and (len(capped) == 1 or sum(m.size for m in capped) <= cap)
    finally:
        db.dispose()
