"""Replication in batches (issue #6, docs/grid.md#deliveries): a burst reaches every node
complete, once and in order, in few requests and few transactions; a bad statement is
refused on its own with its reason; a peer that was down catches up; a replayed request
changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.client import Reply, Transport
from metrocloud.grid.delivery import DeliveryReport
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.grid.outbox import DELIVERED, FAILED, PENDING
from metrocloud.grid.peers import peer
from metrocloud.ledger.schema import ledger_entries, ledger_heads
from metrocloud.services import certificates as certs
from metrocloud.services import federation as fed
from metrocloud.services.node import Node
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    grid_inbox,
    grid_outbox,
    grid_replicated,
)
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget, Member

_CYCLE = (CertificateAction.SUSPEND, CertificateAction.REINSTATE, CertificateAction.REVISE)


def _setup(g: Grid, n_certs: int) -> tuple[Member, list[str]]:
    nb = g.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
    man = g.admit("FR", "man", PartyRole.MANUFACTURER)
    g.sync(1)
    ids = [g.certificate("DE", nb, man, f"DE-{i:04d}")["id"] for i in range(n_certs)]
    g.sync(1)
    _drain(g.nodes["DE"])  # the witnessing's cosignatures too: DE's outbox is empty now
    return nb, ids


def _burst(node: Node, nb: Member, ids: list[str], changes: int) -> None:
    """``changes`` status changes on ``node``, round robin over ``ids`` (suspend, reinstate,
    revise in turn per certificate), one commit each: one outbox message per peer each."""
    for i in range(changes):
        cert = ids[i % len(ids)]
        action = _CYCLE[(i // len(ids)) % 3]
        certs.change_certificate(
            node,
            nb.actor,
            cert,
            action,
            reason=f"change {i}",
            changes={"model": f"rev {i}"} if action is CertificateAction.REVISE else None,
        )


def _state(node: Node) -> dict[str, Any]:
    """Each certificate's status, revision and whole history (action, status, revision in
    sequence): equal on two nodes only if every change arrived, once, in order."""
    with node.db.read() as conn:
        rows = {
            r.id: (r.status, r.revision, r.model)
            for r in conn.execute(select(certificates).order_by(certificates.c.id))
        }
        history: dict[str, list[tuple[str, str, int]]] = {}
        for h in conn.execute(
            select(certificate_history).order_by(
                certificate_history.c.certificate_id, certificate_history.c.seq
            )
        ):
            history.setdefault(h.certificate_id, []).append((h.action, h.status, h.revision))
    return {"rows": rows, "history": history}


def _drain(node: Node) -> DeliveryReport:
    """Delivery rounds until one moves nothing (a round stops early when its time is up)."""
    total = DeliveryReport()
    while True:
        r = fed.deliver_now(node)
        total.add(r)
        if not r.delivered:
            return total


def _count(node: Node, table: Any, *where: Any) -> int:
    with node.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _replicated_entries(node: Node) -> int:
    """``grid.replicated`` statements in the node's log (each applied envelope once)."""
    with node.db.read() as conn:
        return sum(
            json.loads(e)["payload"]["kind"] == "grid.replicated"
            for e in conn.execute(select(ledger_entries.c.entry)).scalars()
        )


def _outbox(node: Node, peer_id: str, status: str) -> list[Any]:
    with node.db.read() as conn:
        return list(
            conn.execute(
                select(grid_outbox)
                .where(
                    grid_outbox.c.peer_id == peer_id,
                    grid_outbox.c.status == status,
                    grid_outbox.c.kind == "grid.replicate",
                )
                .order_by(grid_outbox.c.id)
            )
        )


def test_a_burst_reaches_every_node_complete_once_and_in_order_in_few_requests(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target) as g:
        nb, ids = _setup(g, 20)
        de, fr, nl = g.nodes["DE"], g.nodes["FR"], g.nodes["NL"]
        heads_before = {c: _count(g.nodes[c], ledger_heads) for c in ("FR", "NL")}
        _burst(de, nb, ids, 500)
        messages = len(_outbox(de, fr.node_id, PENDING))
        assert messages == 500  # one per commit and peer
        report = _drain(de)
        assert report.delivered == 2 * 500 and report.failed == report.retried == 0
        # batches: 100 messages per request (grid_outbox_batch)
        assert report.requests == 2 * 5
        want = _state(de)
        for n in (fr, nl):
            assert _state(n) == want
            # exactly once: one grid.replicated statement per envelope, 500 + parties + issues
            rows = _count(n, grid_replicated, grid_replicated.c.origin_node_id == de.node_id)
            assert rows == _replicated_entries(n) - _count(
                n, grid_replicated, grid_replicated.c.origin_node_id != de.node_id
            )
            assert _count(n, grid_inbox, grid_inbox.c.sender_id == de.node_id) >= 500
        for c in ("FR", "NL"):  # a few transactions (one head each), not one per change
            assert _count(g.nodes[c], ledger_heads) - heads_before[c] <= 10
        assert _outbox(de, fr.node_id, PENDING) == _outbox(de, nl.node_id, PENDING) == []
        # nothing moves any more
        assert fed.deliver_now(de).delivered == 0


def _tamper(node: Node, row_id: int) -> None:
    """Change the reason inside the signed statement an outbox row carries."""
    with node.db.write() as conn:
        text = conn.execute(
            select(grid_outbox.c.payload).where(grid_outbox.c.id == row_id)
        ).scalar_one()
        payload = json.loads(text)
        payload["items"][-1]["statement"]["payload"]["body"]["reason"] = "forged"
        conn.execute(
            update(grid_outbox)
            .where(grid_outbox.c.id == row_id)
            .values(payload=json.dumps(payload))
        )


def test_a_tampered_statement_is_refused_alone_with_its_reason(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target) as g:
        nb, ids = _setup(g, 10)
        de, fr, nl = g.nodes["DE"], g.nodes["FR"], g.nodes["NL"]
        _burst(de, nb, ids, 10)  # each certificate suspended once
        bad = _outbox(de, fr.node_id, PENDING)[4]
        _tamper(de, bad.id)
        report = fed.deliver_now(de)
        assert report.requests == 2  # one request per peer: the receiver went on past it
        assert report.delivered == 19 and report.failed == 1
        (failed,) = _outbox(de, fr.node_id, FAILED)
        assert failed.message_id == bad.message_id
        assert "signature" in failed.last_error and "item 0" in failed.last_error
        assert len(_outbox(de, fr.node_id, DELIVERED)) >= 9
        status = {r: certs.get_certificate(fr, r)["status"] for r in ids}
        assert [status[i] for i in ids] == ["suspended"] * 4 + ["valid"] + ["suspended"] * 5
        assert _state(nl) == _state(de)  # the other peer got the genuine statement
        assert fed.grid_status(de)["peers"]  # the refusal is visible to the operator
        assert any(p["outbox"]["failed"] == 1 for p in fed.grid_status(de)["peers"])


def _body(node: Node, peer_id: str, version: int | None) -> dict[str, Any]:
    rows = _outbox(node, peer_id, PENDING)
    body: dict[str, Any] = {
        "messages": [
            {"message_id": r.message_id, "kind": r.kind, "payload": json.loads(r.payload)}
            for r in rows
        ]
    }
    if version is not None:
        body["version"] = version
    return body


def test_a_version_1_delivery_stops_at_the_first_refusal(tmp_path: Path) -> None:
    """A sender of the previous version (no ``version``) reads the answer up to the first
    message not applied: the receiver applies nothing after it, as before."""
    with grid_of(tmp_path, DbTarget("sqlite", None, None), ("DE", "FR")) as g:
        nb, ids = _setup(g, 6)
        de, fr = g.nodes["DE"], g.nodes["FR"]
        _burst(de, nb, ids, 6)
        _tamper(de, _outbox(de, fr.node_id, PENDING)[2].id)
        with fr.db.read() as conn:
            sender = peer(conn, de.node_id)
        answer = fed.receive_messages(fr, sender, _body(de, fr.node_id, None))
        assert "version" not in answer
        assert [r["status"] for r in answer["results"]] == ["applied", "applied", "refused"]
        status = [certs.get_certificate(fr, i)["status"] for i in ids]
        assert status == ["suspended", "suspended", "valid", "valid", "valid", "valid"]
        # the same messages in version 2: the first two are duplicates, the rest go on
        again = fed.receive_messages(fr, sender, _body(de, fr.node_id, 2))
        assert again["version"] == 2
        assert [r["status"] for r in again["results"]] == ["duplicate"] * 2 + ["refused"] + [
            "applied"
        ] * 3
        with pytest.raises(InvalidInput, match="version 3"):
            fed.receive_messages(fr, sender, _body(de, fr.node_id, 3))


class _Flaky:
    """A transport that loses the answer of the first ``lose`` requests to ``url`` (the
    peer did apply them) and can record what went out."""

    def __init__(self, inner: Transport, url: str, lose: int = 0) -> None:
        self.inner, self.url, self.lose = inner, url, lose
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        timeout: float,
    ) -> Reply:
        reply = self.inner.request(method, url, headers=headers, content=content, timeout=timeout)
        if url.startswith(self.url) and url.endswith("/grid/messages"):
            self.sent.append((url, dict(headers), content))
            if self.lose > 0:
                self.lose -= 1
                raise PeerUnavailable(f"{method} {url}: the answer was lost")
        return reply


def test_a_peer_down_during_a_burst_catches_up_with_nothing_lost_or_twice(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target) as g:
        nb, ids = _setup(g, 10)
        de, fr, nl = g.nodes["DE"], g.nodes["FR"], g.nodes["NL"]
        g.transport.down(g.url("NL"))
        _burst(de, nb, ids[:5], 150)
        for _ in range(3):
            report = fed.deliver_now(de)
            assert report.errors.get(nl.node_id)
        assert _state(fr) == _state(de)
        waiting = _outbox(de, nl.node_id, PENDING)
        assert len(waiting) == 150 and waiting[0].attempts == 3
        assert all(w.attempts == 0 for w in waiting[1:])  # FIFO: they wait behind the first
        _burst(de, nb, ids[5:], 150)  # more while it is down
        # it comes back, and the answer to its first delivery is lost on the way
        g.transport.down(g.url("NL"), False)
        flaky = _Flaky(g.transport, g.url("NL"), lose=1)
        fed.set_transport(de, flaky)
        first = fed.deliver_now(de)
        assert first.retried == 1 and first.errors[nl.node_id].endswith("lost")
        assert len(_outbox(de, nl.node_id, PENDING)) == 300  # nothing marked without answer
        second = _drain(de)
        assert second.retried == 0
        assert _outbox(de, nl.node_id, PENDING) == []
        assert _state(nl) == _state(fr) == _state(de)
        # the lost answer's 100 messages were applied once: the redelivery was "duplicate"
        rows = _count(nl, grid_replicated)
        assert rows == _replicated_entries(nl)
        inbox = _count(
            nl,
            grid_inbox,
            grid_inbox.c.sender_id == de.node_id,
            grid_inbox.c.kind == "grid.replicate",
        )
        assert inbox == len({r.message_id for r in _outbox(de, nl.node_id, DELIVERED)})


def test_a_replayed_delivery_is_refused_and_applies_nothing_twice(tmp_path: Path) -> None:
    with grid_of(tmp_path, DbTarget("sqlite", None, None), ("DE", "FR")) as g:
        nb, ids = _setup(g, 5)
        de, fr = g.nodes["DE"], g.nodes["FR"]
        _burst(de, nb, ids, 20)
        recorder = _Flaky(g.transport, g.url("FR"))
        fed.set_transport(de, recorder)
        assert fed.deliver_now(de).delivered == 20
        (url, headers, content) = recorder.sent[-1]
        with fr.db.read() as conn:
            size = fr.log.tree_size(conn)
        # the very same signed request again: its nonce was seen
        reply = g.transport.request("POST", url, headers=headers, content=content, timeout=10)
        assert reply.status == 401 and b"nonce" in reply.body
        # the same messages in a fresh, validly signed request: each one a duplicate
        with fr.db.read() as conn:
            sender = peer(conn, de.node_id)
        again = fed.receive_messages(fr, sender, json.loads(content))
        assert {r["status"] for r in again["results"]} == {"duplicate"}
        with fr.db.read() as conn:
            assert fr.log.tree_size(conn) == size
