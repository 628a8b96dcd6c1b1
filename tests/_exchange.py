"""Helpers of the confidential-exchange tests: party encryption keys, sealed uploads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metrocloud.services import exchange as xch
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.trust.confidential import DEFAULT_CHUNK, Envelope, seal_document
from metrocloud.trust.encryption import EncryptionKey, bind_encryption_key
from tests.conftest import Member

__all__ = ["Sent", "enroll", "seal", "send", "upload_body"]

#: the encryption keys the tests' parties hold, by party id (their private side)
KEYS: dict[str, EncryptionKey] = {}


def enroll(node: Node, member: Member) -> EncryptionKey:
    """Give ``member`` an X25519 key and register its binding at the node (once)."""
    if member.id not in KEYS:
        key = EncryptionKey.generate()
        binding = bind_encryption_key(member.id, key.public_key, member.key)
        xch.register_key(node, member.actor, binding.to_json())
        KEYS[member.id] = key
    return KEYS[member.id]


@dataclass
class Sent:
    envelope: Envelope
    ciphertext: bytearray
    message: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.envelope.id


def seal(
    node: Node,
    sender: Member,
    recipients: list[Member],
    plaintext: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    content_type: str = "application/pdf",
) -> Sent:
    """Seal ``plaintext`` from ``sender`` to ``recipients`` (enrolled on the way)."""
    keys = [(m.id, enroll(node, m).public_key) for m in recipients]
    env, ct = seal_document(
        plaintext,
        message_id=new_id("xch", node.country),
        sender_id=sender.id,
        sender_key=sender.key,
        recipients=keys,
        content_type=content_type,
        chunk_size=chunk_size,
    )
    return Sent(env, ct)


def send(node: Node, sender: Member, recipients: list[Member], plaintext: bytes, **kw: Any) -> Sent:
    """Seal and upload through the service (in pieces of odd sizes, as a network would)."""
    sent = seal(node, sender, recipients, plaintext, **kw)
    upload = xch.begin_upload(node, sender.actor, sent.envelope.to_bytes())
    view = memoryview(sent.ciphertext)
    step = 70_001
    for at in range(0, len(view), step):
        upload.write(view[at : at + step])
    sent.message = upload.finish()
    return sent


def upload_body(sent: Sent) -> bytes:
    return xch.upload_prefix(sent.envelope) + bytes(sent.ciphertext)
