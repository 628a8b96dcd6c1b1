"""Witnessing: heads are checked, co-signed and gossiped; a node that shows two histories
(a split view) is caught within one witnessing round (docs/grid.md#witnessing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from metrocloud.api.app import create_app
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.peers import peer as peer_of
from metrocloud.grid.witness import Cosignature, observations, prune_heads
from metrocloud.ledger import SignedTreeHead, sign_tree_head
from metrocloud.services import alerts
from metrocloud.services import federation as fed
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget

from ._forked import ForkedNode, ForkingTransport

SQLITE = DbTarget("sqlite", None, None)


@contextmanager
def _with_forked(tmp_path: Path, db: DbTarget) -> Iterator[tuple[Grid, ForkedNode]]:
    with grid_of(tmp_path, db, ("DE", "FR")) as g:
        forked = ForkedNode(tmp_path, g.anchor, g.url("NL"))
        transport = ForkingTransport(g.transport, forked)
        for node in g.nodes.values():
            fed.set_transport(node, transport)
            fed.add_peer(node, forked.admission())
        try:
            yield g, forked
        finally:
            forked.close()


def _split_views(node: Node) -> list[dict[str, Any]]:
    reader = Actor(
        party_id="pty-DE-00000000000000000000000000", role=PartyRole.AUTHORITY, country="DE"
    )
    return list(alerts.list_alerts(node, reader, kind="split_view").items)


def test_two_histories_of_one_size_are_caught_within_one_round(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with _with_forked(tmp_path, db_target) as (g, forked):
        de, fr = g.nodes["DE"], g.nodes["FR"]
        forked.show(de.node_id, [b"a", b"b", b"c", b"d"])
        forked.show(fr.node_id, [b"a", b"b", b"x", b"y"])
        # one witnessing round: every node fetches, checks and gossips once
        reports = [fed.witness_round(de), fed.witness_round(fr)]
        assert forked.node_id in reports[0].witnessed  # DE alone cannot tell
        assert reports[1].split_views == [forked.node_id]  # FR saw DE's gossip: caught
        (alert,) = _split_views(fr)
        assert alert["subject_id"] == forked.node_id and alert["severity"] == "serious"
        heads = [SignedTreeHead.from_json(h) for h in alert["details"]["heads"]]
        for h in heads:  # the evidence: two heads the forked node really signed
            h.verify(forked.key.public_key)
        assert {h.tree_size for h in heads} == {4} and len({h.root_hash for h in heads}) == 2
        # the honest nodes are not suspected, and the alert reaches every node
        assert all(a["subject_id"] == forked.node_id for a in _split_views(fr))
        g.sync(2)
        assert {a["subject_id"] for a in _split_views(de)} == {forked.node_id}
        # raised once on this evidence, not every round
        g.sync(2)
        assert len([a for a in _split_views(fr) if a["origin_node_id"] == fr.node_id]) == 1


def test_a_fork_at_different_sizes_fails_the_consistency_proof(tmp_path: Path) -> None:
    with _with_forked(tmp_path, SQLITE) as (g, forked):
        de, fr = g.nodes["DE"], g.nodes["FR"]
        forked.show(de.node_id, [b"a", b"b", b"c", b"d"])
        forked.show(fr.node_id, [b"a", b"b", b"x", b"y", b"z", b"w"])
        fed.witness_round(de)
        report = fed.witness_round(fr)
        assert report.split_views == [forked.node_id]
        (alert,) = _split_views(fr)
        assert "does not extend" in alert["details"]["reason"]


def test_a_rewritten_history_is_caught_by_a_single_witness(tmp_path: Path) -> None:
    with _with_forked(tmp_path, SQLITE) as (g, forked):
        de = g.nodes["DE"]
        forked.show(de.node_id, [b"a", b"b", b"c"])
        assert fed.witness_round(de).witnessed[forked.node_id] == 3
        forked.show(de.node_id, [b"a", b"X", b"c", b"d"])  # entry 1 rewritten, one appended
        assert fed.witness_round(de).split_views == [forked.node_id]


def test_honest_logs_are_witnessed_and_co_signed(tmp_path: Path) -> None:
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        de, fr = g.nodes["DE"], g.nodes["FR"]
        for i in range(3):  # DE's log grows between rounds: each head extends the last
            g.admit("DE", f"auth{i}", PartyRole.AUTHORITY)
            g.sync(1)
        assert _split_views(de) == _split_views(fr) == []
        status = fed.grid_status(fr)["peers"][0]
        with de.db.read() as conn:
            size = de.log.tree_size(conn)
        assert status["witnessed_head"]["tree_size"] >= size - 1
        g.sync(1)
        with TestClient(create_app(de), raise_server_exceptions=False) as c:
            r = c.get("/api/v1/grid/cosignatures")
        assert r.status_code == 200
        cos = [Cosignature.from_json(x) for x in r.json()["cosignatures"]]
        assert cos and {c.witness for c in cos} == {fr.node_id}
        for c in cos:
            c.verify(fr.key.public_key)
            with de.db.read() as conn:
                assert c.covers(de.log.head(conn, c.tree_size))


def test_a_forged_head_in_a_nodes_own_name_is_reported(tmp_path: Path) -> None:
    """Gossip of a head this node never signed (its key was used elsewhere): an alert."""
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        de, fr = g.nodes["DE"], g.nodes["FR"]
        g.sync(1)
        with de.db.read() as conn:
            size = de.log.tree_size(conn)
        forged = sign_tree_head(
            de.key, log_id=de.node_id, tree_size=size, root_hash=b"\x07" * 32, timestamp=1
        )
        with de.db.read() as conn:
            sender = peer_of(conn, fr.node_id)
        out = fed.answer_query(de, sender, "gossip", {"heads": [forged.to_json()]})
        assert out["split_views"] == 1
        (alert,) = _split_views(de)
        assert alert["subject_id"] == de.node_id and "never signed" in alert["details"]["reason"]


def test_a_log_that_shrinks_is_a_fork(tmp_path: Path) -> None:
    with _with_forked(tmp_path, SQLITE) as (g, forked):
        de = g.nodes["DE"]
        forked.show(de.node_id, [b"a", b"b", b"c", b"d"])
        fed.witness_round(de)
        forked.show(de.node_id, [b"a", b"b"])  # a later head of a smaller tree
        assert fed.witness_round(de).split_views == [forked.node_id]
        (alert,) = _split_views(de)
        assert "cannot shrink" in alert["details"]["reason"]


def test_pruned_heads_keep_the_chain_checkable(tmp_path: Path) -> None:
    with _with_forked(tmp_path, SQLITE) as (g, forked):
        de = g.nodes["DE"]
        entries = [b"a", b"b"]
        for extra in (b"c", b"d", b"e"):  # an honest history that grows
            entries.append(extra)
            forked.show(de.node_id, list(entries))
            fed.witness_round(de)
        with de.db.write() as conn:
            assert prune_heads(conn, unverified_before="9999-01-01T00:00:00.000Z") >= 2
            kept = [o.head.tree_size for o in observations(conn, forked.node_id)]
        assert kept == [5]
        forked.show(de.node_id, [*entries, b"f"])
        assert fed.witness_round(de).witnessed[forked.node_id] == 6
        forked.show(de.node_id, [b"a", b"Z", b"c", b"d", b"e", b"f", b"g"])  # rewritten
        assert fed.witness_round(de).split_views == [forked.node_id]
