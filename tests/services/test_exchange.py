"""services/exchange: the node routes end-to-end encrypted documents and never reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from metrocloud.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    VerificationError,
)
from metrocloud.services import access
from metrocloud.services import exchange as xch
from metrocloud.services._exchange_files import ciphertext_path, exchange_dir
from metrocloud.services.audit import audit
from metrocloud.store.database import StorageUnavailable
from metrocloud.store.ids import new_id
from metrocloud.store.schema import exchange_messages, party_encryption_keys
from metrocloud.trust import _hpke
from metrocloud.trust._b64 import b64decode_strict
from metrocloud.trust.confidential import Envelope, open_envelope, seal_document
from metrocloud.trust.encryption import EncryptionKey, bind_encryption_key
from metrocloud.trust.keys import PrivateKey, PublicKey
from metrocloud.trust.receipts import Receipt, sign_receipt
from metrocloud.trust.statements import SignedStatement
from tests._exchange import KEYS, enroll, seal, send
from tests.conftest import Member, World

DOC = b"technical documentation of type EM-340, annex 3: " + os.urandom(3000)


def _open(world: World, member: Member, message: dict, ciphertext: bytes) -> bytes:
    env = Envelope.from_json(message["envelope"])
    by_id = {m.id: m for m in world.members.values()}
    sender = PublicKey.from_spki_b64(by_id[env.sender].party["public_key"])
    opener = open_envelope(env, recipient_id=member.id, key=KEYS[member.id], sender_key=sender)
    return bytes(opener.decrypt(ciphertext))


def _ciphertext(world: World, member: Member, message_id: str) -> bytes:
    return xch.open_content(world.node, member.actor, message_id).path.read_bytes()


def test_round_trip_to_two_recipients(world: World) -> None:
    sent = send(world.node, world.man1, [world.nb1, world.auth1], DOC, chunk_size=1024)
    for reader in (world.nb1, world.auth1):
        message = xch.get_message(world.node, reader.actor, sent.id)
        assert message["sealed_key"]["party"] == reader.id
        assert _open(world, reader, message, _ciphertext(world, reader, sent.id)) == DOC
    inbox = xch.list_messages(world.node, world.nb1.actor, box="in", limit=10, cursor=None)
    outbox = xch.list_messages(world.node, world.man1.actor, box="out", limit=10, cursor=None)
    assert [m["id"] for m in inbox.items] == [m["id"] for m in outbox.items] == [sent.id]
    assert outbox.items[0]["size"] == len(DOC)
    fetched = {r["party_id"]: r["fetched_at"] for r in outbox.items[0]["recipients"]}
    assert all(fetched.values()) and set(fetched) == {world.nb1.id, world.auth1.id}
    assert (
        xch.list_messages(world.node, world.man1.actor, box="in", limit=10, cursor=None).items == []
    )


def test_inbox_pages_by_keyset(world: World) -> None:
    ids = [send(world.node, world.man1, [world.nb1], b"x" * n).id for n in range(5)]
    seen, cursor = [], None
    while True:
        page = xch.list_messages(world.node, world.nb1.actor, box="in", limit=2, cursor=cursor)
        seen += [m["id"] for m in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids)


def test_only_sender_and_recipients_see_a_message(world: World) -> None:
    sent = send(world.node, world.man1, [world.nb1], DOC)
    for outsider in (world.man2, world.nb2, world.op1, world.auth1):
        with pytest.raises(NotFound):
            xch.get_message(world.node, outsider.actor, sent.id)
        with pytest.raises(NotFound):
            xch.open_content(world.node, outsider.actor, sent.id)
        with pytest.raises(NotFound):
            xch.list_receipts(world.node, outsider.actor, sent.id)
        page = xch.list_messages(world.node, outsider.actor, box="in", limit=10, cursor=None)
        assert page.items == []
    with pytest.raises(Forbidden):  # the node admin takes no part at all
        xch.get_message(world.node, world.admin.actor, sent.id)


def test_the_node_cannot_decrypt_what_it_stores(world: World) -> None:
    """Everything the node holds (envelope, sealed keys, ciphertext, its own keys) opens
    nothing: a key that is not the recipient's fails at the sealed key."""
    sent = send(world.node, world.man1, [world.nb1], DOC)
    with world.node.db.read() as conn:
        row = conn.execute(select(exchange_messages).where(exchange_messages.c.id == sent.id)).one()
    env = Envelope.from_bytes(row.envelope.encode())
    stored = ciphertext_path(world.node.settings.data_dir, sent.id).read_bytes()
    assert DOC[:40] not in stored and DOC[:40] not in row.envelope.encode()
    entry = env.sealed_key(world.nb1.id)
    for attacker in (EncryptionKey.generate(), EncryptionKey.generate()):
        with pytest.raises(VerificationError):  # refused before HPKE: not the sealed-to key
            open_envelope(
                env, recipient_id=world.nb1.id, key=attacker, sender_key=world.man1.key.public_key
            )
        with pytest.raises(VerificationError, match="HPKE open failed"):
            _hpke.open_base(
                attacker.raw(),
                b64decode_strict(entry["enc"], what="enc"),
                b64decode_strict(entry["sealed_key"], what="sealed key"),
                info=b"metrocloud-exchange-v1 document key",
                aad=b"",
            )
    # a recipient's own key opens it; the same key under another party's name does not
    with pytest.raises(VerificationError):
        open_envelope(
            env,
            recipient_id=world.man2.id,
            key=KEYS[world.nb1.id],
            sender_key=world.man1.key.public_key,
        )


def test_stored_ciphertext_is_checked_on_read(world: World) -> None:
    sent = send(world.node, world.man1, [world.nb1], DOC)
    path = ciphertext_path(world.node.settings.data_dir, sent.id)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(data)
    with pytest.raises(StorageUnavailable, match="damaged"):
        xch.open_content(world.node, world.nb1.actor, sent.id)
    path.unlink()
    with pytest.raises(StorageUnavailable, match="missing"):
        xch.open_content(world.node, world.nb1.actor, sent.id)


def _upload(world: World, sender: Member, sent_env: Envelope, ciphertext: bytes) -> dict:
    upload = xch.begin_upload(world.node, sender.actor, sent_env.to_bytes())
    try:
        upload.write(ciphertext)
        return upload.finish()
    finally:
        upload.abort()


def test_altered_ciphertext(world: World) -> None:
    """A changed tag is refused by the node (it checks the tags against the signed header);
    a changed byte elsewhere passes the node but no recipient decrypts it."""
    sent = seal(world.node, world.man1, [world.nb1], DOC, chunk_size=1024)
    tag_at = 1024  # the first chunk's tag
    bad_tag = bytearray(sent.ciphertext)
    bad_tag[tag_at] ^= 0x80
    with pytest.raises(VerificationError, match="tags_sha256"):
        _upload(world, world.man1, sent.envelope, bad_tag)
    for cut in (bytes(sent.ciphertext[:-1]), bytes(sent.ciphertext) + b"\0"):
        with pytest.raises(VerificationError, match=r"truncated|longer"):
            _upload(world, world.man1, sent.envelope, cut)
    assert list((exchange_dir(world.node.settings.data_dir) / "tmp").iterdir()) == []
    bad_body = bytearray(sent.ciphertext)
    bad_body[5] ^= 1
    message = _upload(world, world.man1, sent.envelope, bad_body)
    with pytest.raises(VerificationError, match="chunk 0 of 3"):
        _open(world, world.nb1, message, _ciphertext(world, world.nb1, sent.id))


def test_the_envelope_is_checked_before_any_ciphertext(world: World) -> None:
    node = world.node
    sent = seal(node, world.man1, [world.nb1], DOC)
    with pytest.raises(Forbidden, match="sends only as itself"):
        xch.begin_upload(node, world.man2.actor, sent.envelope.to_bytes())
    with pytest.raises(Forbidden):
        xch.begin_upload(node, world.admin.actor, sent.envelope.to_bytes())
    forged = Envelope(header=sent.envelope.header, signature=sent.envelope.signature)
    header = dict(forged.header, content_type="text/plain")
    with pytest.raises(VerificationError):
        xch.begin_upload(
            node, world.man1.actor, Envelope(header=header, signature=forged.signature).to_bytes()
        )
    with pytest.raises(InvalidInput):
        xch.begin_upload(node, world.man1.actor, b'{"header": {}, "signature": {}}')
    # recipients: unknown here, the node admin, without a key, homed on another node
    enroll(node, world.op1)
    for recipient_id, error, match in (
        ("pty-DE-00000000000000000000000000", NotFound, "does not exist"),
        (world.admin.id, InvalidInput, "node admin"),
        ("pty-FR-00000000000000000000000000", xch.GridNotConnected, "no grid link"),
    ):
        env, _ = seal_document(
            DOC,
            message_id=new_id("xch", "DE"),
            sender_id=world.man1.id,
            sender_key=world.man1.key,
            recipients=[(recipient_id, EncryptionKey.generate().public_key)],
        )
        with pytest.raises(error, match=match):
            xch.begin_upload(node, world.man1.actor, env.to_bytes())
    env, _ = seal_document(
        DOC,
        message_id=new_id("xch", "DE"),
        sender_id=world.man1.id,
        sender_key=world.man1.key,
        recipients=[(world.op2.id, EncryptionKey.generate().public_key)],
    )
    with pytest.raises(Conflict, match="no encryption key"):
        xch.begin_upload(node, world.man1.actor, env.to_bytes())
    # a message id of another node, a stale recipient key, a reused id, a size over the limit
    env, _ = seal_document(
        DOC,
        message_id=new_id("xch", "FR"),
        sender_id=world.man1.id,
        sender_key=world.man1.key,
        recipients=[(world.op1.id, KEYS[world.op1.id].public_key)],
    )
    with pytest.raises(InvalidInput, match="names FR"):
        xch.begin_upload(node, world.man1.actor, env.to_bytes())
    env, _ = seal_document(
        DOC,
        message_id=new_id("xch", "DE"),
        sender_id=world.man1.id,
        sender_key=world.man1.key,
        recipients=[(world.op1.id, EncryptionKey.generate().public_key)],
    )
    with pytest.raises(Conflict, match="current encryption key"):
        xch.begin_upload(node, world.man1.actor, env.to_bytes())
    done = send(node, world.man1, [world.op1], DOC)
    with pytest.raises(Conflict, match="exists already"):
        xch.begin_upload(node, world.man1.actor, done.envelope.to_bytes())
    node.settings.exchange_max_bytes = 1024
    with pytest.raises(InvalidInput, match="exceeds this node's limit"):
        xch.begin_upload(
            node, world.man1.actor, seal(node, world.man1, [world.op1], DOC).envelope.to_bytes()
        )


def test_receipts(world: World) -> None:
    node = world.node
    sent = send(node, world.man1, [world.nb1, world.auth1], DOC)
    receipt = sign_receipt(sent.envelope, world.nb1.id, world.nb1.key)
    stored = xch.submit_receipt(node, world.nb1.actor, sent.id, receipt.to_json())
    assert stored["leaf_index"] >= 0
    # the sender fetches it and checks it with the recipient's registered key
    [got] = xch.list_receipts(node, world.man1.actor, sent.id)
    Receipt.from_json(got["receipt"]).verify(PublicKey.from_spki_b64(world.nb1.party["public_key"]))
    assert got["receipt"]["payload"]["header_sha256"] == sent.envelope.header_sha256
    # a second recipient sees only its own receipts
    assert xch.list_receipts(node, world.auth1.actor, sent.id) == []
    # refused: twice, by the sender, forged, for another header, for another message
    with pytest.raises(Conflict, match="already"):
        xch.submit_receipt(node, world.nb1.actor, sent.id, receipt.to_json())
    with pytest.raises(Forbidden, match="only a recipient"):
        xch.submit_receipt(
            node,
            world.man1.actor,
            sent.id,
            sign_receipt(sent.envelope, world.nb1.id, world.man1.key).to_json(),
        )
    forged = sign_receipt(sent.envelope, world.auth1.id, PrivateKey.generate())
    with pytest.raises(VerificationError, match="registered key"):
        xch.submit_receipt(node, world.auth1.actor, sent.id, forged.to_json())
    tampered = receipt.to_json()
    tampered["payload"]["recipient"] = world.auth1.id
    with pytest.raises(VerificationError):
        xch.submit_receipt(node, world.auth1.actor, sent.id, tampered)
    other = send(node, world.man1, [world.auth1], b"another document")
    with pytest.raises(VerificationError, match="message_id"):
        xch.submit_receipt(
            node,
            world.auth1.actor,
            other.id,
            sign_receipt(sent.envelope, world.auth1.id, world.auth1.key).to_json(),
        )
    wrong_header = sign_receipt(sent.envelope, world.auth1.id, world.auth1.key).to_json()
    wrong_header["payload"]["header_sha256"] = "0" * 64
    with pytest.raises(VerificationError, match="header_sha256"):
        xch.submit_receipt(node, world.auth1.actor, sent.id, wrong_header)
    message = xch.get_message(node, world.man1.actor, sent.id)
    acks = {r["party_id"]: r["acknowledged_at"] for r in message["recipients"]}
    assert acks[world.nb1.id] is not None and acks[world.auth1.id] is None


def test_every_access_is_in_the_access_log(world: World) -> None:
    node = world.node
    sent = send(node, world.man1, [world.nb1, world.auth1], DOC)
    xch.get_message(node, world.nb1.actor, sent.id)
    xch.open_content(node, world.nb1.actor, sent.id)
    xch.submit_receipt(
        node,
        world.nb1.actor,
        sent.id,
        sign_receipt(sent.envelope, world.nb1.id, world.nb1.key).to_json(),
    )
    xch.list_receipts(node, world.man1.actor, sent.id)

    def log(member: Member) -> set[tuple[str, str]]:
        page = access.list_access_log(node, member.actor, limit=1000, cursor=None)
        return {(e["reader_id"], e["action"]) for e in page.items if e["resource_id"] == sent.id}

    man1, nb1, auth1 = world.man1.id, world.nb1.id, world.auth1.id
    assert log(world.man1) == {
        (nb1, "exchange.read"),
        (nb1, "exchange.fetch"),
        (nb1, "exchange.receipt"),
    }
    assert log(world.nb1) == {(man1, "exchange.send"), (man1, "exchange.receipts")}
    # the other recipient sees every access to the message too
    assert log(world.auth1) == {
        (man1, "exchange.send"),
        (nb1, "exchange.read"),
        (nb1, "exchange.fetch"),
        (nb1, "exchange.receipt"),
        (man1, "exchange.receipts"),
    }
    assert log(world.man2) == set() and auth1 not in {r for r, _ in log(world.man1)}


def test_keys_are_bound_to_their_party(world: World) -> None:
    node = world.node
    key = EncryptionKey.generate()
    with pytest.raises(Forbidden, match="only its own"):
        xch.register_key(
            node,
            world.man2.actor,
            bind_encryption_key(world.man1.id, key.public_key, world.man1.key).to_json(),
        )
    with pytest.raises(VerificationError):
        xch.register_key(
            node,
            world.man1.actor,
            bind_encryption_key(world.man1.id, key.public_key, world.man2.key).to_json(),
        )
    with pytest.raises(Forbidden):
        xch.register_key(
            node,
            world.admin.actor,
            bind_encryption_key(world.admin.id, key.public_key, world.admin.key).to_json(),
        )
    first = xch.register_key(
        node,
        world.man1.actor,
        bind_encryption_key(world.man1.id, key.public_key, world.man1.key).to_json(),
    )
    with pytest.raises(Conflict):
        xch.register_key(
            node,
            world.man2.actor,
            bind_encryption_key(world.man2.id, key.public_key, world.man2.key).to_json(),
        )
    newer = EncryptionKey.generate()
    xch.register_key(
        node,
        world.man1.actor,
        bind_encryption_key(world.man1.id, newer.public_key, world.man1.key).to_json(),
    )
    current = xch.get_key(node, world.op1.actor, world.man1.id)
    assert current["key_id"] == newer.key_id != first["key_id"]
    assert current["signing_key"] == world.man1.party["public_key"]
    with pytest.raises(NotFound, match="no encryption key"):
        xch.get_key(node, world.op1.actor, world.op2.id)
    with pytest.raises(NotFound, match="does not exist"):
        xch.get_key(node, world.op1.actor, "pty-DE-00000000000000000000000000")
    with pytest.raises(xch.GridNotConnected):
        xch.get_key(node, world.op1.actor, "pty-NL-00000000000000000000000000")


def test_statements_replay_in_the_audit(world: World) -> None:
    node = world.node
    sent = send(node, world.man1, [world.nb1], DOC)
    xch.submit_receipt(
        node,
        world.nb1.actor,
        sent.id,
        sign_receipt(sent.envelope, world.nb1.id, world.nb1.key).to_json(),
    )
    kinds = []
    with node.db.read() as conn:
        for _, entry in node.log.entries(conn, 0, node.log.tree_size(conn)):
            payload = SignedStatement.from_bytes(entry).statement.payload()
            kinds.append(payload["kind"])
            assert DOC[:40].decode() not in json.dumps(payload)
    assert {"party.encryption_key", "exchange.sent", "exchange.receipt"} <= set(kinds)
    report = audit(node)
    assert report.ok, report.problems
    # a tampered key row is found by the audit
    with node.db.write() as conn:
        conn.execute(
            party_encryption_keys.update()
            .where(party_encryption_keys.c.party_id == world.nb1.id)
            .values(public_key="A" * 43 + "=")
        )
    assert not audit(node).ok


def test_a_forged_receipt_in_the_log_fails_the_audit(world: World, tmp_path: Path) -> None:
    """The projector checks every receipt's signature again when the log is replayed."""
    node = world.node
    sent = send(node, world.man1, [world.nb1], DOC)
    forged = sign_receipt(sent.envelope, world.nb1.id, PrivateKey.generate())
    with pytest.raises(Exception, match="does not hold"), node.db.write() as conn:
        node.commit(
            conn,
            [
                node.statement(
                    kind="exchange.receipt", signer=world.nb1.id, body={"receipt": forged.to_json()}
                )
            ],
        )
