"""Confidential exchange across two nodes through the RemoteDelivery port: a sender on the
German node, a recipient on the French one. The grid here is an in-memory outbox drained by
the test (the real transport: test_exchange_over_grid.py); what is checked is the exchange side: key
look-up, delivery, the recipient decrypting on its own node, the receipt going back, and
neither node keeping a byte of the plaintext."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.services import access
from metrocloud.services import exchange as xch
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.schema import parties
from metrocloud.trust.confidential import Envelope, open_envelope
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt, sign_receipt
from tests._exchange import KEYS, enroll, send
from tests.conftest import World


def _signing_key(node: Node, party_id: str) -> PublicKey:
    with node.db.read() as conn:
        row = conn.execute(select(parties.c.public_key).where(parties.c.id == party_id)).one()
    return PublicKey.from_spki_b64(row.public_key)


class InMemoryGrid:
    """Two nodes' outboxes: what a node queues inside its transaction, delivered later."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.outbox: list[tuple[str, str, Any]] = []

    def port(self, here: str) -> xch.RemoteDelivery:
        grid = self

        class Port:
            def encryption_key(self, country: str, party_id: str) -> dict[str, Any]:
                peer = grid.nodes[country]
                return xch.get_key(peer, None, party_id)  # type: ignore[arg-type]

            def deliver(
                self, conn: Connection, country: str, envelope: Envelope, ciphertext: Path
            ) -> None:
                grid.outbox.append((here, country, ("message", envelope, ciphertext)))

            def return_receipt(self, conn: Connection, country: str, receipt: Receipt) -> None:
                grid.outbox.append((here, country, ("receipt", receipt)))

        return Port()

    def drain(self) -> None:
        while self.outbox:
            origin, country, item = self.outbox.pop(0)
            target, source = self.nodes[country], self.nodes[origin]
            if item[0] == "message":
                _, env, path = item
                upload = xch.begin_delivery(
                    target,
                    origin=origin,
                    envelope_bytes=env.to_bytes(),
                    sender_key=_signing_key(source, env.sender),
                )
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        upload.write(block)
                upload.finish()
            else:
                receipt = item[1]
                xch.accept_receipt(
                    target,
                    origin=origin,
                    receipt=receipt.to_json(),
                    recipient_key=_signing_key(source, receipt.recipient),
                )


@pytest.fixture
def france(tmp_path: Path) -> Iterator[World]:
    node = Node.open(Settings(data_dir=tmp_path / "fr", country="FR"))
    world = World(node)
    world.admit("nb_fr", PartyRole.NOTIFIED_BODY)
    world.admit("auth_fr", PartyRole.AUTHORITY)
    yield world
    node.close()


@pytest.fixture
def grid(world: World, france: World) -> Iterator[InMemoryGrid]:
    g = InMemoryGrid({"DE": world.node, "FR": france.node})
    xch.connect_remote(world.node, g.port("DE"))
    xch.connect_remote(france.node, g.port("FR"))
    yield g
    xch.connect_remote(world.node, None)
    xch.connect_remote(france.node, None)


def test_a_document_crosses_the_grid_and_its_receipt_comes_back(
    world: World, france: World, grid: InMemoryGrid
) -> None:
    marker = ("CONFIDENTIAL-" + secrets.token_hex(20)).encode()
    doc = os.urandom(300_000) + marker + os.urandom(5000)
    nb_fr = france.nb_fr
    enroll(france.node, nb_fr)
    sent = send(world.node, world.man1, [nb_fr, world.nb1], doc, chunk_size=65536)
    delivery = {r["party_id"]: r["delivery"] for r in sent.message["recipients"]}
    assert delivery == {nb_fr.id: "FR", world.nb1.id: "local"}
    assert len(grid.outbox) == 1  # queued with the message, one per other node
    grid.drain()

    # on the French node: the recipient sees it, fetches it, opens it with its own key
    page = xch.list_messages(france.node, nb_fr.actor, box="in", limit=10, cursor=None)
    assert [m["id"] for m in page.items] == [sent.id]
    message = xch.get_message(france.node, nb_fr.actor, sent.id)
    stored = xch.open_content(france.node, nb_fr.actor, sent.id).path.read_bytes()
    opener = open_envelope(
        Envelope.from_json(message["envelope"]),
        recipient_id=nb_fr.id,
        key=KEYS[nb_fr.id],
        sender_key=world.man1.key.public_key,
    )
    assert bytes(opener.decrypt(stored)) == doc
    # the delivery is in the recipient's access log there
    log = access.list_access_log(france.node, nb_fr.actor, limit=100, cursor=None).items
    assert {(e["reader_id"], e["action"], e["reader_role"]) for e in log} >= {
        (world.man1.id, "exchange.deliver", "remote:DE")
    }

    # the receipt goes back to the sender's node, where it verifies
    receipt = sign_receipt(opener.envelope, nb_fr.id, nb_fr.key)
    xch.submit_receipt(france.node, nb_fr.actor, sent.id, receipt.to_json())
    assert len(grid.outbox) == 1
    grid.drain()
    [back] = xch.list_receipts(world.node, world.man1.actor, sent.id)
    Receipt.from_json(back["receipt"]).verify(nb_fr.key.public_key)
    assert back["recipient_id"] == nb_fr.id

    # neither node keeps the plaintext anywhere under its data directory
    for node in (world.node, france.node):
        for path in node.settings.data_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert marker not in data and doc[:64] not in data, path


def test_deliveries_are_checked_on_arrival(world: World, france: World, grid: InMemoryGrid) -> None:
    nb_fr = france.nb_fr
    enroll(france.node, nb_fr)
    sent = send(world.node, world.man1, [nb_fr], b"a document for France")
    origin, country, item = grid.outbox.pop()
    assert (origin, country, item[0]) == ("DE", "FR", "message")
    envelope = item[1]
    sender_key = _signing_key(world.node, world.man1.id)
    with pytest.raises(InvalidInput, match="both must name NL"):
        xch.begin_delivery(
            france.node, origin="NL", envelope_bytes=envelope.to_bytes(), sender_key=sender_key
        )
    with pytest.raises(VerificationError):
        xch.begin_delivery(
            france.node,
            origin="DE",
            envelope_bytes=envelope.to_bytes(),
            sender_key=world.man2.key.public_key,
        )
    upload = xch.begin_delivery(
        france.node, origin="DE", envelope_bytes=envelope.to_bytes(), sender_key=sender_key
    )
    upload.write(bytes(sent.ciphertext[:-1]))
    with pytest.raises(VerificationError, match="truncated"):
        upload.finish()
    with pytest.raises(VerificationError):  # a forged receipt coming back is refused
        xch.accept_receipt(
            world.node,
            origin="FR",
            receipt=sign_receipt(envelope, nb_fr.id, france.auth_fr.key).to_json(),
            recipient_key=nb_fr.key.public_key,
        )
