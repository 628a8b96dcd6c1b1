"""Confidential exchange between parties on different nodes, over the real grid transport.

Three nodes (DE, FR, NL) in one process (tests/_grid.py): their signed node-to-node requests
go through ``LocalTransport`` into each other's apps, the outbox is delivered by the grid's
own delivery rounds. Acceptance (issue 6): a 10 MB+ document crosses while the receiving
node is down for a while; the recipient decrypts it on its node and its receipt comes back
and verifies on the sender's node; the third node's party cannot decrypt; altered
ciphertext is refused on the way or at the recipient; no database, file, log or recorded
node-to-node traffic of any node holds the plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text, update

from metrocloud.api.app import API_PREFIX, create_app
from metrocloud.domain.errors import Forbidden, NotFound, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.client import Reply, Transport
from metrocloud.grid.delivery import MAX_REQUEST_BYTES
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.services import access
from metrocloud.services import exchange as xch
from metrocloud.services import federation as fed
from metrocloud.services.exchange_grid import PIECE_BYTES, checked_key
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import (
    exchange_messages,
    grid_inbox,
    grid_outbox,
    grid_traffic,
    parties,
)
from metrocloud.trust.confidential import DEFAULT_CHUNK, Envelope, open_envelope, seal_document
from metrocloud.trust.encryption import KeyBinding
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt, sign_receipt
from tests._exchange import KEYS, enroll
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget, Member

SQLITE = DbTarget("sqlite", None, None)
MESSAGES = "/api/v1/grid/messages"


@dataclass
class People:
    man_de: Member
    auth_de: Member
    op_de: Member
    nb_fr: Member
    auth_fr: Member
    op_fr: Member
    auth_nl: Member | None


def _people(g: Grid) -> People:
    p = People(
        man_de=g.admit("DE", "man_de", PartyRole.MANUFACTURER),
        auth_de=g.admit("DE", "auth_de", PartyRole.AUTHORITY),
        op_de=g.admit("DE", "op_de", PartyRole.OPERATOR),
        nb_fr=g.admit("FR", "nb_fr", PartyRole.NOTIFIED_BODY),
        auth_fr=g.admit("FR", "auth_fr", PartyRole.AUTHORITY),
        op_fr=g.admit("FR", "op_fr", PartyRole.OPERATOR),
        auth_nl=g.admit("NL", "auth_nl", PartyRole.AUTHORITY) if "NL" in g.nodes else None,
    )
    _drain(g)  # the admissions replicate: each node knows the others' parties and keys
    for m in (p.auth_de, p.nb_fr, p.auth_fr, p.auth_nl):
        if m is not None:
            enroll(g.nodes[m.actor.country], m)
    return p


def _drain(g: Grid, *, rounds: int = 30) -> None:
    """Delivery rounds on every node until two rounds in a row move nothing."""
    quiet = 0
    for _ in range(rounds):
        moved = 0
        for node in g.nodes.values():
            report = fed.deliver_now(node)
            moved += report.delivered + report.failed
        quiet = quiet + 1 if moved == 0 else 0
        if quiet == 2:
            return
        time.sleep(0.003)  # past the tests' 1 ms retry backoff


def _send(
    node: Node,
    sender: Member,
    recipients: list[Member],
    doc: bytes,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Envelope, bytearray, dict[str, Any]]:
    """What a sender's client does at its own node: fetch each recipient's key there (for a
    party homed elsewhere the node asks the party's home node), check the binding itself,
    seal, upload."""
    keys = []
    for m in recipients:
        answer = xch.get_key(node, sender.actor, m.id)
        binding = KeyBinding.from_json(answer["binding"])
        binding.verify(PublicKey.from_spki_b64(answer["signing_key"]))
        assert binding.party_id == m.id and answer["key_id"] == KEYS[m.id].key_id
        keys.append((m.id, binding.public_key))
    env, ct = seal_document(
        doc,
        message_id=new_id("xch", node.country),
        sender_id=sender.id,
        sender_key=sender.key,
        recipients=keys,
        content_type="application/pdf",
        chunk_size=chunk_size,
    )
    upload = xch.begin_upload(node, sender.actor, env.to_bytes())
    view = memoryview(ct)
    for at in range(0, len(view), 1 << 20):
        upload.write(view[at : at + (1 << 20)])
    return env, ct, upload.finish()


def _signing_key(node: Node, party_id: str) -> PublicKey:
    """The party's key as ``node`` knows it (for a party of another node: replicated)."""
    with node.db.read() as conn:
        row = conn.execute(select(parties.c.public_key).where(parties.c.id == party_id)).one()
    return PublicKey.from_spki_b64(row.public_key)


def _open(node: Node, member: Member, message_id: str) -> bytes:
    """What the recipient's client does at its own node: envelope, sender key, content."""
    message = xch.get_message(node, member.actor, message_id)
    env = Envelope.from_json(message["envelope"])
    opener = open_envelope(
        env,
        recipient_id=member.id,
        key=KEYS[member.id],
        sender_key=_signing_key(node, env.sender),
    )
    stored = xch.open_content(node, member.actor, message_id).path.read_bytes()
    return bytes(opener.decrypt(stored))


def _exchange_rows(node: Node, peer: Node) -> list[Any]:
    with node.db.read() as conn:
        return list(
            conn.execute(
                select(grid_outbox)
                .where(grid_outbox.c.peer_id == peer.node_id, grid_outbox.c.kind.like("exchange.%"))
                .order_by(grid_outbox.c.id)
            )
        )


def _link(node: Node, peer: Node) -> dict[str, Any]:
    status = fed.grid_status(node)
    return next(p for p in status["peers"] if p["node_id"] == peer.node_id)


def _kept(node: Node) -> Iterator[tuple[str, bytes]]:
    """Every file under the data directory (the SQLite database and its WAL included) and,
    on PostgreSQL, every row of every table of the node's schema (grid_traffic with the
    bodies of every node-to-node request among them)."""
    for path in sorted(node.settings.data_dir.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()
    if node.db.engine.dialect.name == "postgresql":
        with node.db.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            yield f"{table} row", bytes(value)
                        else:
                            yield f"{table} row", str(value).encode()


def test_a_ten_megabyte_document_crosses_the_grid_while_its_node_is_down_a_while(
    tmp_path: Path, db_target: DbTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with grid_of(tmp_path, db_target) as g:
        p = _people(g)
        de, fr, nl = g.nodes["DE"], g.nodes["FR"], g.nodes["NL"]
        assert p.auth_nl is not None
        marker = ("CONFIDENTIAL-" + secrets.token_hex(24)).encode()
        doc = os.urandom(6_000_000) + marker + os.urandom(4_600_000) + marker
        env, ct, sent = _send(de, p.man_de, [p.nb_fr, p.auth_de], doc)
        assert {r["party_id"]: r["delivery"] for r in sent["recipients"]} == {
            p.nb_fr.id: "FR",
            p.auth_de.id: "local",
        }

        # queued with the message: an offer, the ciphertext in pieces, a completion; no
        # outbox row near the 8 MiB a delivery request carries
        rows = _exchange_rows(de, fr)
        pieces = -(-len(ct) // PIECE_BYTES)
        assert pieces == 3
        assert [r.kind for r in rows] == [
            "exchange.offer",
            *["exchange.piece"] * pieces,
            "exchange.complete",
        ]
        assert all(len(r.payload) < MAX_REQUEST_BYTES * 0.75 for r in rows)
        carried = b"".join(base64.b64decode(json.loads(r.payload)["data"]) for r in rows[1:-1])
        assert carried == bytes(ct)
        assert _exchange_rows(de, nl) == []  # nothing for the node of no recipient

        # the French node is down while the German one delivers: nothing lost, all waits
        g.transport.down(g.url("FR"))
        for _ in range(2):
            for node in g.nodes.values():
                fed.deliver_now(node)
        with fr.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(exchange_messages)).scalar() == 0
        link = _link(de, fr)
        assert link["outbox"]["pending"] == len(rows) and link["outbox"]["failed"] == 0
        assert "no node answers" in (link["outbox"]["last_error"] or "")
        # ... and up again: delivered after recovery
        g.transport.down(g.url("FR"), False)
        _drain(g)
        link = _link(de, fr)
        assert (link["outbox"]["pending"], link["outbox"]["failed"]) == (0, 0)

        # the recipient finds it on its own node and decrypts it with its own key
        inbox = xch.list_messages(fr, p.nb_fr.actor, box="in", limit=10, cursor=None)
        assert [m["id"] for m in inbox.items] == [env.id]
        meta = inbox.items[0]
        assert (meta["sender_id"], meta["size"], meta["ciphertext_size"]) == (
            p.man_de.id,
            len(doc),
            len(ct),
        )
        assert _open(fr, p.nb_fr, env.id) == doc
        assert _open(de, p.auth_de, env.id) == doc  # the local recipient, as before
        assert not list((fr.settings.data_dir / "exchange" / "incoming").glob("*"))

        # delivered once: a redelivery of every message changes nothing
        with fr.db.read() as conn:
            inbox_rows = conn.execute(select(func.count()).select_from(grid_inbox)).scalar()
        with de.db.write() as conn:
            conn.execute(
                update(grid_outbox)
                .where(grid_outbox.c.id.in_([r.id for r in rows]))
                .values(status="pending", next_attempt_at=0)
            )
        _drain(g)
        with fr.db.read() as conn:
            assert conn.execute(select(func.count()).select_from(grid_inbox)).scalar() == (
                inbox_rows
            )
            assert conn.execute(select(func.count()).select_from(exchange_messages)).scalar() == 1
        assert _open(fr, p.nb_fr, env.id) == doc

        # the access log there: the delivery by the sender, from the German node
        log = access.list_access_log(fr, p.nb_fr.actor, limit=100, cursor=None).items
        assert {(e["reader_id"], e["action"], e["reader_role"], e["resource_id"]) for e in log} >= {
            (p.man_de.id, "exchange.deliver", "remote:DE", env.id)
        }

        # the signed receipt goes back to the sender's node, where the sender lists it
        opener = open_envelope(
            env, recipient_id=p.nb_fr.id, key=KEYS[p.nb_fr.id], sender_key=p.man_de.key.public_key
        )
        receipt = sign_receipt(opener.envelope, p.nb_fr.id, p.nb_fr.key)
        xch.submit_receipt(fr, p.nb_fr.actor, env.id, receipt.to_json())
        _drain(g)
        [back] = xch.list_receipts(de, p.man_de.actor, env.id)
        assert back["recipient_id"] == p.nb_fr.id and back["acknowledged_at"]
        Receipt.from_json(back["receipt"]).verify(_signing_key(de, p.nb_fr.id))
        assert Receipt.from_json(back["receipt"]).header_sha256 == env.header_sha256
        with TestClient(create_app(de, fast_lane=False)) as api:  # as the CLI reads it
            r = api.get(
                f"{API_PREFIX}/exchange/messages/{env.id}/receipts", headers=p.man_de.headers
            )
            assert r.status_code == 200, r.text
            [item] = r.json()["items"]
            assert (item["recipient_id"], item["leaf_index"]) == (p.nb_fr.id, None)
        log = access.list_access_log(de, p.man_de.actor, limit=100, cursor=None).items
        assert (p.nb_fr.id, "exchange.receipt", "remote:FR") in {
            (e["reader_id"], e["action"], e["reader_role"]) for e in log
        }

        # the third node's party: the message does not exist for it, and what crossed the
        # grid (envelope, ciphertext) does not open with its key
        assert xch.list_messages(nl, p.auth_nl.actor, box="in", limit=10, cursor=None).items == []
        with pytest.raises(NotFound):
            xch.get_message(nl, p.auth_nl.actor, env.id)
        for as_whom in (p.auth_nl.id, p.nb_fr.id):
            with pytest.raises(VerificationError):
                open_envelope(
                    env,
                    recipient_id=as_whom,
                    key=KEYS[p.auth_nl.id],
                    sender_key=_signing_key(nl, p.man_de.id),
                )

        # metadata in the log stream of both nodes: sender, recipients, size
        lines = [r.getMessage() for r in caplog.records if r.name == "metrocloud.exchange"]
        for action in ("exchange.send", "exchange.deliver", "exchange.receipt"):
            line = next(x for x in lines if x.startswith(action) and env.id in x)
            assert p.man_de.id in line and p.nb_fr.id in line, line
        assert any(f"ciphertext_bytes={len(ct)}" in x for x in lines if "exchange.deliver" in x)

        # the search: every node's files, rows, recorded traffic and the logs
        needles = (marker, marker.hex().encode(), base64.b64encode(marker)[:40], doc[:64])
        kept = [item for node in g.nodes.values() for item in _kept(node)]
        for where, data in kept:
            for needle in needles:
                assert needle not in data, f"plaintext found in {where}"
        logs = caplog.text.encode()
        assert not any(needle in logs for needle in needles)
        # the search does see what crossed: the ciphertext in both nodes' traffic bodies
        b64 = base64.b64encode(bytes(ct[:3000])).decode()
        for node, direction in ((de, "out"), (fr, "in")):
            with node.db.read() as conn:
                bodies = conn.execute(
                    select(grid_traffic.c.request_body).where(
                        grid_traffic.c.path == MESSAGES, grid_traffic.c.direction == direction
                    )
                ).scalars()
                assert any(b64 in (body or "") for body in bodies)


class Tamper:
    """A wire that alters one character of the ciphertext in the next ``times`` requests
    that carry a piece (a base64 letter for another: the JSON stays well-formed)."""

    def __init__(self, inner: Transport, times: int) -> None:
        self.inner, self.times, self.altered = inner, times, 0

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes, timeout: float
    ) -> Reply:
        if self.times and b'"kind":"exchange.piece"' in content:
            at = content.index(b'"data":"') + 20
            new = b"B" if content[at : at + 1] == b"A" else b"A"
            content = content[:at] + new + content[at + 1 :]
            self.times -= 1
            self.altered += 1
        return self.inner.request(method, url, headers=headers, content=content, timeout=timeout)


def _rewrite(node: Node, row_id: int, payload: dict[str, Any]) -> None:
    with node.db.write() as conn:
        conn.execute(
            update(grid_outbox)
            .where(grid_outbox.c.id == row_id)
            .values(payload=json.dumps(payload, separators=(",", ":"), sort_keys=True))
        )


def test_altered_ciphertext_is_refused_on_the_way_or_by_the_recipient(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target, ("DE", "FR")) as g:
        p = _people(g)
        de, fr = g.nodes["DE"], g.nodes["FR"]

        # (a) altered on the wire: the request's signature covers its body, so the French
        # node refuses it (401); the outbox sends it again, and the clean copy arrives
        wire = Tamper(g.transport, times=1)
        fed.set_transport(de, wire)
        doc = os.urandom(200_000)
        env, _, _ = _send(de, p.man_de, [p.nb_fr], doc)
        _drain(g)
        assert wire.altered == 1
        with de.db.read() as conn:
            statuses = conn.execute(
                select(grid_traffic.c.status).where(
                    grid_traffic.c.path == MESSAGES, grid_traffic.c.direction == "out"
                )
            ).scalars()
            assert 401 in set(statuses)
        assert _open(fr, p.nb_fr, env.id) == doc
        fed.set_transport(de, g.transport)

        # (b) altered at rest in the German node's outbox: the piece's digest does not hold,
        # the French node refuses it and the document with it; nothing stays there
        env, _, _ = _send(de, p.man_de, [p.nb_fr], os.urandom(50_000))
        _, piece, complete = _exchange_rows(de, fr)[-3:]
        payload = json.loads(piece.payload)
        data = bytearray(base64.b64decode(payload["data"]))
        data[1000] ^= 1
        _rewrite(de, piece.id, {**payload, "data": base64.b64encode(data).decode()})
        _drain(g)
        with pytest.raises(NotFound):
            xch.get_message(fr, p.nb_fr.actor, env.id)
        assert not list((fr.settings.data_dir / "exchange").rglob(f"{env.id}*"))
        link = _link(de, fr)
        assert (link["outbox"]["pending"], link["outbox"]["failed"]) == (0, 2)
        with de.db.read() as conn:
            reasons = dict(
                conn.execute(
                    select(grid_outbox.c.kind, grid_outbox.c.last_error).where(
                        grid_outbox.c.status == "failed"
                    )
                ).all()
            )
        assert "has SHA-256" in reasons["exchange.piece"]
        assert "piece 0 of " + env.id in reasons["exchange.complete"]

        # (c) altered consistently (a sending node that lies): the French node checks sizes
        # and chunk tags against the signed header, not the sealed content, so it stores it;
        # the recipient's decryption rejects it
        env, ct, _ = _send(de, p.man_de, [p.nb_fr], os.urandom(150_000), chunk_size=65536)
        _, piece, complete = _exchange_rows(de, fr)[-3:]
        altered = bytearray(ct)
        altered[1000] ^= 1  # inside the first chunk's body, not its tag
        payload = json.loads(piece.payload)
        _rewrite(
            de,
            piece.id,
            {
                **payload,
                "data": base64.b64encode(altered).decode(),
                "sha256": hashlib.sha256(altered).hexdigest(),
            },
        )
        _rewrite(
            de,
            complete.id,
            {**json.loads(complete.payload), "sha256": hashlib.sha256(altered).hexdigest()},
        )
        _drain(g)
        assert xch.get_message(fr, p.nb_fr.actor, env.id)["id"] == env.id
        with pytest.raises(VerificationError):
            _open(fr, p.nb_fr, env.id)


def test_keys_of_other_nodes_are_checked_against_what_the_grid_replicated(
    tmp_path: Path,
) -> None:
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        p = _people(g)
        de, fr = g.nodes["DE"], g.nodes["FR"]
        answer = xch.local_key(fr, p.nb_fr.id)  # what the French node answers
        assert checked_key(de, p.nb_fr.id, answer)["key_id"] == KEYS[p.nb_fr.id].key_id
        with TestClient(create_app(de, fast_lane=False)) as api:  # the route, at the German node
            r = api.get(f"{API_PREFIX}/exchange/keys/{p.nb_fr.id}", headers=p.man_de.headers)
            assert r.status_code == 200, r.text
            got = r.json()
            assert (got["key_id"], got["signing_key"], got["leaf_index"]) == (
                KEYS[p.nb_fr.id].key_id,
                p.nb_fr.party["public_key"],
                None,
            )
            r = api.get(f"{API_PREFIX}/exchange/keys/{p.op_fr.id}", headers=p.man_de.headers)
            assert r.status_code == 404, r.text
        other = xch.local_key(fr, p.auth_fr.id)  # another French party's binding
        # a home node cannot hand out another party's binding, nor vouch for another key
        with pytest.raises(VerificationError, match="binding of"):
            checked_key(de, p.nb_fr.id, {**answer, "binding": other["binding"]})
        with pytest.raises(VerificationError, match="signing key"):
            checked_key(de, p.nb_fr.id, {**answer, "signing_key": other["signing_key"]})
        forged = KeyBinding.from_json(answer["binding"]).to_json()
        forged["signature"] = other["binding"]["signature"]
        with pytest.raises(VerificationError):
            checked_key(de, p.nb_fr.id, {**answer, "binding": forged})
        # operators are not replicated: their key cannot be checked on another node
        enroll(fr, p.op_fr)
        with pytest.raises(NotFound, match="not known on this node"):
            xch.get_key(de, p.man_de.actor, p.op_fr.id)
        # nor do they send across nodes (the receiving node could not check the sender)
        with pytest.raises(Forbidden, match="across nodes"):
            _send(de, p.op_de, [p.nb_fr], b"a report")
        # a home node that is down: the send is refused before anything is stored
        g.transport.down(g.url("FR"))
        with pytest.raises(PeerUnavailable):
            xch.get_key(de, p.man_de.actor, p.nb_fr.id)
        env, _ = seal_document(
            b"a report",
            message_id=new_id("xch", "DE"),
            sender_id=p.man_de.id,
            sender_key=p.man_de.key,
            recipients=[(p.nb_fr.id, KEYS[p.nb_fr.id].public_key)],
        )
        with pytest.raises(PeerUnavailable):
            xch.begin_upload(de, p.man_de.actor, env.to_bytes())
        assert _exchange_rows(de, fr) == []
        # a party homed on a country without a node in the grid
        with pytest.raises(xch.GridNotConnected, match="NL"):
            xch.get_key(de, p.man_de.actor, new_id("pty", "NL"))
