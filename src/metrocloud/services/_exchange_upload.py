"""Documents coming in: a party's upload, or a delivery from another node of the grid
(docs/exchange.md#sending). The envelope is checked before any ciphertext is accepted; the
ciphertext against the signed header before the message is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services._exchange_common import (
    EXCHANGE_ROLES,
    RULE,
    access,
    access_by_remote,
    home,
    log_access,
    newest_key,
    reading,
    remote,
    writing,
)
from metrocloud.services._exchange_files import StagedCiphertext, TempCiphertext, ciphertext_path
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.store._grid import REPLICATED_PARTY_ROLES
from metrocloud.store.schema import (
    exchange_messages,
    exchange_recipients,
    parties,
    party_encryption_keys,
)
from metrocloud.trust.confidential import CiphertextCheck, Envelope
from metrocloud.trust.keys import PublicKey

__all__ = [
    "MAX_ENVELOPE",
    "UPLOAD_MAGIC",
    "UPLOAD_MEDIA_TYPE",
    "Upload",
    "begin_delivery",
    "begin_upload",
    "check_delivery",
    "message_out",
    "upload_prefix",
]

#: largest signed envelope (header with up to 100 recipients and their sealed keys)
MAX_ENVELOPE = 256 * 1024
#: the body of ``POST /api/v1/exchange/messages`` (``application/octet-stream``): ``MCX1``, the
#: envelope's length (4 bytes, big-endian), the envelope (canonical JSON), the ciphertext
UPLOAD_MAGIC = b"MCX1"
UPLOAD_MEDIA_TYPE = "application/octet-stream"


def upload_prefix(envelope: Envelope) -> bytes:
    """What precedes the ciphertext in the upload body (see :data:`UPLOAD_MAGIC`)."""
    data = envelope.to_bytes()
    if len(data) > MAX_ENVELOPE:
        raise InvalidInput(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE} bytes")
    return UPLOAD_MAGIC + len(data).to_bytes(4, "big") + data


def message_out(msg: Any, rows: list[Any], party_id: str, *, full: bool) -> dict[str, Any]:
    """A message as parties see it; ``full`` adds the envelope and the caller's sealed key."""
    out: dict[str, Any] = {
        "id": msg.id,
        "sender_id": msg.sender_id,
        "recipients": [
            {
                "party_id": r.recipient_id,
                "delivery": r.delivery,
                "fetched_at": r.fetched_at,
                "acknowledged_at": r.acknowledged_at,
            }
            for r in rows
        ],
        "content_type": msg.content_type,
        "size": msg.size,
        "ciphertext_size": msg.ciphertext_size,
        "header_sha256": msg.header_sha256,
        "created_at": msg.created_at,
        "received_at": msg.received_at,
        "leaf_index": msg.leaf_index,
    }
    if full:
        env = Envelope.from_bytes(msg.envelope.encode("utf-8"))
        out["envelope"] = env.to_json()
        mine = [r for r in env.header["recipients"] if r["party"] == party_id]
        out["sealed_key"] = dict(mine[0]) if mine else None
    return out


@dataclass(kw_only=True)
class Upload:
    """A document on its way in: the checked envelope, then the ciphertext bytes.

    ``actor`` is the sending party for an upload; ``origin`` the country of the sending
    node for a delivery through the grid (then ``actor`` is None). With ``conn`` the message
    is recorded in that transaction (the grid's, which commits it with the delivery)."""

    node: Node
    envelope: Envelope
    deliveries: dict[str, str]
    actor: Actor | None = None
    origin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    conn: Connection | None = field(default=None, repr=False)
    file: TempCiphertext | StagedCiphertext = field(repr=False)
    check: CiphertextCheck = field(repr=False)
    _open: bool = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.check.update(data)  # refuses bytes beyond the declared size at once
        self.file.write(data)

    def abort(self) -> None:
        if self._open:
            self._open = False
            self.file.discard()

    def finish(self) -> dict[str, Any]:
        """Check the ciphertext against the signed header, store it, record the message."""
        try:
            self.check.finish()
            return _store(self)
        finally:
            self.abort()


def _checked_envelope(node: Node, envelope_bytes: bytes) -> Envelope:
    env = Envelope.from_bytes(envelope_bytes)
    limit = node.settings.exchange_max_bytes
    if env.layout.size > limit:
        raise InvalidInput(
            f"document of {env.layout.size} bytes exceeds this node's limit of {limit} bytes "
            "(setting exchange_max_bytes)",
            rule=RULE,
        )
    return env


def _new(conn: Connection, env: Envelope) -> None:
    if conn.execute(select(exchange_messages.c.id).where(exchange_messages.c.id == env.id)).first():
        raise Conflict(f"message {env.id} exists already; every message has a fresh id")


def begin_upload(
    node: Node, actor: Actor, envelope_bytes: bytes, extra: dict[str, Any] | None = None
) -> Upload:
    """Check a party's signed envelope before any ciphertext is accepted. In order:

    1. the caller may exchange documents;
    2. the envelope is well-formed (format, suite, sizes, recipients) and within the node's
       size limit;
    3. the caller is its sender and the id names this node;
    4. the caller's registered signing key signed it;
    5. each recipient exists (here, or on a node the grid reaches) and is sealed to with its
       current encryption key;
    6. the id is new.
    """
    # (1)
    require_role(actor, *EXCHANGE_ROLES, action="send confidential documents")
    # (2)
    env = _checked_envelope(node, envelope_bytes)
    # (3)
    if env.sender != actor.party_id:
        raise Forbidden(
            f"the envelope's sender is {env.sender}; a party sends only as itself "
            f"({actor.party_id})",
            rule=RULE,
        )
    if home(env.id) != node.country:
        raise InvalidInput(
            f"message id {env.id} names {home(env.id)}; a message sent through this node is "
            f"xch-{node.country}-<ULID>",
            rule=RULE,
        )
    # (4)
    if actor.public_key is None:
        raise InvalidInput(f"{actor.party_id} has no registered signing key", rule=RULE)
    env.verify(PublicKey.from_spki_b64(actor.public_key))
    # (5), (6)
    with node.db.read() as conn:
        deliveries = _check_recipients(node, conn, env, actor)
        _new(conn, env)
    return Upload(
        node=node,
        envelope=env,
        deliveries=deliveries,
        actor=actor,
        extra=dict(extra or {}),
        file=TempCiphertext(node.settings.data_dir),
        check=env.ciphertext_check(),
    )


def check_delivery(
    node: Node,
    *,
    origin: str,
    envelope_bytes: bytes,
    sender_key: PublicKey,
    conn: Connection | None = None,
) -> tuple[Envelope, dict[str, str]]:
    """The checks on a message another node delivers, before any of its ciphertext: the
    sender and the message are homed on ``origin``, ``sender_key`` (the sender's registered
    key, as the grid knows it) signed the header, and each recipient homed here exists
    with the encryption key the header names (current or earlier). Returns the envelope
    and the recipients homed here."""
    env = _checked_envelope(node, envelope_bytes)
    if home(env.sender) != origin or home(env.id) != origin:
        raise InvalidInput(
            f"a delivery from the node of {origin} carries {env.id} by {env.sender}; both must "
            f"name {origin}",
            rule=RULE,
        )
    env.verify(sender_key)
    deliveries: dict[str, str] = {}
    with reading(node, conn) as c:
        for entry in env.header["recipients"]:
            if home(entry["party"]) != node.country:
                continue
            known = c.execute(
                select(party_encryption_keys.c.key_id).where(
                    party_encryption_keys.c.party_id == entry["party"],
                    party_encryption_keys.c.key_id == entry["key_id"],
                )
            ).first()
            if known is None:
                raise NotFound(
                    f"recipient {entry['party']} has no encryption key {entry['key_id']} here"
                )
            deliveries[entry["party"]] = "local"
        if not deliveries:
            raise InvalidInput(f"{env.id} has no recipient homed on this node ({node.country})")
        _new(c, env)
    return env, deliveries


def begin_delivery(
    node: Node,
    *,
    origin: str,
    envelope_bytes: bytes,
    sender_key: PublicKey,
    conn: Connection | None = None,
    staged: Path | None = None,
) -> Upload:
    """A message another node delivers (the grid calls this on the receiving node, then
    :meth:`Upload.write` and :meth:`Upload.finish` with the ciphertext), after the checks of
    :func:`check_delivery`. With ``conn`` the message is recorded in that transaction; with
    ``staged`` the ciphertext is that file already (the bytes written are only checked and
    hashed, and :meth:`Upload.finish` renames the file into place)."""
    env, deliveries = check_delivery(
        node, origin=origin, envelope_bytes=envelope_bytes, sender_key=sender_key, conn=conn
    )
    return Upload(
        node=node,
        envelope=env,
        deliveries=deliveries,
        origin=origin,
        conn=conn,
        file=(
            StagedCiphertext(staged)
            if staged is not None
            else TempCiphertext(node.settings.data_dir)
        ),
        check=env.ciphertext_check(),
    )


def _check_recipients(node: Node, conn: Connection, env: Envelope, actor: Actor) -> dict[str, str]:
    deliveries: dict[str, str] = {}
    for entry in env.header["recipients"]:
        party_id, key_id = entry["party"], entry["key_id"]
        country = home(party_id)
        if country != node.country:
            if actor.role.value not in REPLICATED_PARTY_ROLES:
                raise Forbidden(
                    f"recipient {party_id} is homed on the node of {country}; only parties the "
                    f"grid knows on every node ({', '.join(sorted(REPLICATED_PARTY_ROLES))}) "
                    f"exchange documents across nodes, and {actor.party_id} is "
                    f"{actor.role.value.replace('_', ' ')}",
                    rule="docs/exchange.md#other-nodes",
                )
            current = remote(node).encryption_key(country, party_id)["key_id"]
            deliveries[party_id] = country
        else:
            role = conn.execute(select(parties.c.role).where(parties.c.id == party_id)).first()
            if role is None:
                raise NotFound(f"recipient {party_id} does not exist on this node")
            if role.role == PartyRole.NODE_ADMIN.value:
                raise InvalidInput(
                    f"recipient {party_id} is the node admin, which takes no part in "
                    "confidential exchange",
                    rule=RULE,
                )
            row = newest_key(conn, party_id)
            if row is None:
                raise Conflict(f"recipient {party_id} has registered no encryption key")
            current = row.key_id
            deliveries[party_id] = "local"
        if key_id != current:
            raise Conflict(
                f"the document key is sealed to key {key_id} of {party_id}, whose current "
                f"encryption key is {current}; fetch the key again and re-seal",
                rule=RULE,
            )
    return deliveries


def _store(upload: Upload) -> dict[str, Any]:
    """Record the message (and, for a party's upload, its ``exchange.sent`` statement and
    the deliveries to other nodes), then put the ciphertext in place, in one transaction.
    The rows go first: a second attempt at the same id stops at them before it touches the
    file. If anything fails after the file is in place, it is taken back."""
    node, actor, env = upload.node, upload.actor, upload.envelope
    target = ciphertext_path(node.settings.data_dir, env.id)
    by = actor.party_id if actor is not None else env.sender
    upload.file.sync()
    published = False
    try:
        with writing(node, upload.conn) as conn:
            leaf = None
            if actor is not None:  # the sender's own node: the log proves the acceptance
                rec = node.commit(
                    conn,
                    [
                        node.statement(
                            kind="exchange.sent",
                            signer=actor.party_id,
                            body={"message_id": env.id, "header_sha256": env.header_sha256},
                            extra=upload.extra,
                        )
                    ],
                )
                leaf = rec.leaf_indexes[0]
            conn.execute(
                insert(exchange_messages).values(
                    id=env.id,
                    sender_id=env.sender,
                    envelope=env.to_bytes().decode("utf-8"),
                    header_sha256=env.header_sha256,
                    content_type=env.header["content_type"],
                    size=env.layout.size,
                    ciphertext_size=env.layout.ciphertext_size,
                    stored_sha256=upload.file.sha256(),
                    created_at=env.header["created_at"],
                    received_at=node.timestamp(),
                    leaf_index=leaf,
                )
            )
            conn.execute(
                insert(exchange_recipients),
                [
                    {"message_id": env.id, "recipient_id": p, "delivery": d}
                    for p, d in upload.deliveries.items()
                ],
            )
            upload.file.publish(target)
            published = True
            if actor is not None:
                access(conn, node, actor, "exchange.send", env.id, env.sender, env.recipients)
                # one delivery per other node, queued with the message in the same transaction
                for country in sorted(set(upload.deliveries.values()) - {"local"}):
                    remote(node).deliver(conn, country, env, target)
            else:
                access_by_remote(
                    conn,
                    node,
                    env.sender,
                    str(upload.origin),
                    "exchange.deliver",
                    env.id,
                    upload.deliveries,
                )
            msg = conn.execute(
                select(exchange_messages).where(exchange_messages.c.id == env.id)
            ).one()
            rows = list(
                conn.execute(
                    select(exchange_recipients)
                    .where(exchange_recipients.c.message_id == env.id)
                    .order_by(exchange_recipients.c.recipient_id)
                )
            )
    except BaseException:
        if published:
            upload.file.unpublish(target)
        raise
    action = "exchange.send" if actor is not None else "exchange.deliver"
    log_access(by, action, env.id, env.sender, env.recipients, env.layout.ciphertext_size)
    return message_out(msg, rows, by, full=True)
