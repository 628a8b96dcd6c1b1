"""Confidential exchange over HTTP: keys, streamed upload, inbox, content, receipts; and the
acceptance check that nothing the node keeps (database, files, logs) holds the plaintext."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from metrocloud.api.app import API_PREFIX
from metrocloud.services import exchange as xch
from metrocloud.services._exchange_files import exchange_dir
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.trust.confidential import Envelope, open_envelope, seal_document
from metrocloud.trust.encryption import EncryptionKey, KeyBinding, bind_encryption_key
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt, sign_receipt
from tests.conftest import Member, World

X = f"{API_PREFIX}/exchange"


def _register(client: TestClient, member: Member) -> EncryptionKey:
    key = EncryptionKey.generate()
    binding = bind_encryption_key(member.id, key.public_key, member.key)
    r = client.post(f"{X}/keys", json=binding.to_json(), headers=member.headers)
    assert r.status_code == 201, r.text
    assert r.json()["key_id"] == key.key_id and r.json()["leaf_index"] >= 0
    return key


def _recipient_key(client: TestClient, reader: Member, party_id: str) -> Any:
    """What a sender's client does: fetch the key and check the binding itself."""
    r = client.get(f"{X}/keys/{party_id}", headers=reader.headers)
    assert r.status_code == 200, r.text
    binding = KeyBinding.from_json(r.json()["binding"])
    binding.verify(PublicKey.from_spki_b64(r.json()["signing_key"]))
    assert binding.party_id == party_id
    return binding.public_key


def _pieces(body: bytes, size: int = 65_537) -> Iterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


def _send(
    client: TestClient, sender: Member, recipients: list[Member], doc: bytes
) -> tuple[Envelope, dict[str, Any]]:
    keys = [(m.id, _recipient_key(client, sender, m.id)) for m in recipients]
    env, ct = seal_document(
        doc,
        message_id=new_id("xch", "DE"),
        sender_id=sender.id,
        sender_key=sender.key,
        recipients=keys,
        content_type="application/pdf",
    )
    body = xch.upload_prefix(env) + bytes(ct)
    r = client.post(
        f"{X}/messages",
        content=_pieces(body),
        headers={**sender.headers, "Content-Type": xch.UPLOAD_MEDIA_TYPE},
    )
    assert r.status_code == 201, r.text
    return env, r.json()


def _fetch(client: TestClient, member: Member, key: EncryptionKey, message_id: str) -> bytes:
    meta = client.get(f"{X}/messages/{message_id}", headers=member.headers)
    assert meta.status_code == 200, meta.text
    env = Envelope.from_json(meta.json()["envelope"])
    sender = client.get(f"{API_PREFIX}/parties/{env.sender}", headers=member.headers).json()
    opener = open_envelope(
        env,
        recipient_id=member.id,
        key=key,
        sender_key=PublicKey.from_spki_b64(sender["public_key"]),
    )
    r = client.get(f"{X}/messages/{message_id}/content", headers=member.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    digest = base64.b64encode(hashlib.sha256(r.content).digest()).decode()
    assert r.headers["content-digest"] == f"sha-256=:{digest}:"
    return bytes(opener.decrypt(r.content))


def _everything_the_node_keeps(node: Node) -> Iterator[tuple[str, bytes]]:
    """Every file under the data directory (the SQLite database and its journal included)
    and, on PostgreSQL, every row of every table of the node's schema, as bytes."""
    for path in sorted(node.settings.data_dir.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()
    if node.db.engine.dialect.name == "postgresql":
        with node.db.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    for value in row:
                        raw = (
                            value if isinstance(value, bytes | memoryview) else str(value).encode()
                        )
                        yield f"{table} row", bytes(raw)


def test_no_plaintext_anywhere_on_the_node(
    client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Acceptance (issue #6): neither the node's database, its files nor its logs contain the
    plaintext; the recipients decrypt it; a non-recipient cannot; receipts verify."""
    caplog.set_level(logging.DEBUG)
    marker = ("CONFIDENTIAL-" + secrets.token_hex(24)).encode()
    doc = os.urandom(1_500_000) + marker + os.urandom(700_000) + marker
    nb, auth = _register(client, world.nb1), _register(client, world.auth1)
    env, message = _send(client, world.man1, [world.nb1, world.auth1], doc)
    assert message["size"] == len(doc) and message["sealed_key"] is None
    assert _fetch(client, world.nb1, nb, env.id) == doc
    assert _fetch(client, world.auth1, auth, env.id) == doc
    receipt = sign_receipt(env, world.nb1.id, world.nb1.key)
    r = client.post(
        f"{X}/messages/{env.id}/receipt", json=receipt.to_json(), headers=world.nb1.headers
    )
    assert r.status_code == 201, r.text
    receipts = client.get(f"{X}/messages/{env.id}/receipts", headers=world.man1.headers).json()
    [got] = receipts["items"]
    Receipt.from_json(got["receipt"]).verify(PublicKey.from_spki_b64(world.nb1.party["public_key"]))
    # a non-recipient neither sees the message nor could open what it would get
    for outsider in (world.man2, world.nb2):
        assert client.get(f"{X}/messages/{env.id}", headers=outsider.headers).status_code == 404
        r = client.get(f"{X}/messages/{env.id}/content", headers=outsider.headers)
        assert r.status_code == 404
    # the search: every place, in the clear and hex-encoded
    needles = (marker, marker.hex().encode(), base64.b64encode(marker)[:40], doc[:64])
    kept = list(_everything_the_node_keeps(world.node))
    for where, data in kept:
        for needle in needles:
            assert needle not in data, f"plaintext found in {where}"
    # the search does see what the node keeps: the message's metadata and its ciphertext
    stored = client.get(f"{X}/messages/{env.id}/content", headers=world.nb1.headers).content
    assert any(env.header_sha256.encode() in data for _, data in kept)
    assert any(stored[1000:1064] in data for _, data in kept)
    logs = caplog.text.encode()
    for needle in needles:
        assert needle not in logs
    # ... while the metadata is logged: sender, recipients, size, time
    sent = [rec for rec in caplog.records if rec.name == "metrocloud.exchange"]
    line = next(rec.getMessage() for rec in sent if "exchange.send" in rec.getMessage())
    assert world.man1.id in line and world.nb1.id in line and world.auth1.id in line
    assert f"ciphertext_bytes={env.layout.ciphertext_size}" in line


def test_ten_megabyte_document_over_http(client: TestClient, world: World) -> None:
    doc = os.urandom(10 * 1024 * 1024 + 3)
    key = _register(client, world.op1)
    env, _ = _send(client, world.auth1, [world.op1], doc)
    assert _fetch(client, world.op1, key, env.id) == doc


def test_inbox_outbox_and_access_log(client: TestClient, world: World) -> None:
    key = _register(client, world.nb2)
    env, _ = _send(client, world.man2, [world.nb2], b"type examination file")
    inbox = client.get(f"{X}/messages", params={"box": "in"}, headers=world.nb2.headers).json()
    outbox = client.get(f"{X}/messages", params={"box": "out"}, headers=world.man2.headers).json()
    assert [m["id"] for m in inbox["items"]] == [m["id"] for m in outbox["items"]] == [env.id]
    assert _fetch(client, world.nb2, key, env.id) == b"type examination file"
    log = client.get(f"{API_PREFIX}/access-log", headers=world.man2.headers).json()["items"]
    actions = {(e["reader_id"], e["action"]) for e in log if e["resource_id"] == env.id}
    assert actions == {(world.nb2.id, "exchange.read"), (world.nb2.id, "exchange.fetch")}
    log = client.get(f"{API_PREFIX}/access-log", headers=world.nb2.headers).json()["items"]
    assert {(e["reader_id"], e["action"]) for e in log if e["resource_id"] == env.id} == {
        (world.man2.id, "exchange.send")
    }


def test_refused_uploads_leave_nothing_behind(client: TestClient, world: World) -> None:
    _register(client, world.nb1)
    keys = [(world.nb1.id, _recipient_key(client, world.man1, world.nb1.id))]
    env, ct = seal_document(
        b"x" * 5000,
        message_id=new_id("xch", "DE"),
        sender_id=world.man1.id,
        sender_key=world.man1.key,
        recipients=keys,
        chunk_size=1024,
    )
    headers = {**world.man1.headers, "Content-Type": xch.UPLOAD_MEDIA_TYPE}
    prefix = xch.upload_prefix(env)
    for body, status in (
        (prefix + bytes(ct[:-1]), 400),  # truncated: the signed sizes do not hold
        (prefix + bytes(ct) + b"!", 400),  # longer than declared
        (b"MCX2" + prefix[4:] + bytes(ct), 422),  # not the framing
        (prefix[:100], 422),  # ends inside the envelope
    ):
        r = client.post(f"{X}/messages", content=body, headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post(
        f"{X}/messages",
        content=prefix + bytes(ct),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 415
    r = client.post(
        f"{X}/messages",
        content=prefix + bytes(ct),
        headers={**headers, "Content-Length": str(10**12)},
    )
    assert r.status_code == 413
    tmp = exchange_dir(world.node.settings.data_dir) / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    assert (
        client.get(f"{X}/messages", params={"box": "out"}, headers=world.man1.headers).json()[
            "items"
        ]
        == []
    )
    # and the same upload, whole, goes through
    r = client.post(f"{X}/messages", content=prefix + bytes(ct), headers=headers)
    assert r.status_code == 201, r.text


def test_key_lookup_answers_for_other_nodes_with_a_clear_refusal(
    client: TestClient, world: World
) -> None:
    r = client.get(f"{X}/keys/pty-FR-01M85V4ZZ70009HDV0WED1ZQ2K", headers=world.man1.headers)
    assert r.status_code == 409
    assert r.json()["type"].endswith("/grid-not-connected") and "FR" in r.json()["detail"]
    assert client.get(f"{X}/keys/not-a-party", headers=world.man1.headers).status_code == 422
