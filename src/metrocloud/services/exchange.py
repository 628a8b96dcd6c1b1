"""Confidential exchange between parties (ARCHITECTURE.md decision 5, docs/exchange.md).

A party sends a document end-to-end encrypted (:mod:`metrocloud.trust.confidential`) to one
or more parties; the node stores and forwards ciphertext only, records who sent what to whom,
its size and when, and keeps the recipients' signed receipts. Encryption and decryption
happen on the parties' side: no function here holds a key that opens a document.

Who: notified bodies, manufacturers, operators and authorities. The node admin runs the node
and takes no part. A message is visible to its sender and its recipients only (to anyone
else it does not exist: 404). Every access to a message lands in the access log of the other
parties of the message, and in the log stream (``metrocloud.exchange``) with sender,
recipients, size and time.

Parties homed on other nodes are reached through :class:`RemoteDelivery` (the grid), which
:func:`connect_remote` installs; the receiving node takes a delivery with
:func:`begin_delivery` and a receipt coming back with :func:`accept_receipt`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, VerificationError
from metrocloud.services._exchange_common import (
    EXCHANGE_ROLES,
    RULE,
    access,
    access_by_remote,
    connect_remote,
    home,
    log_access,
    remote,
    visible,
    writing,
)
from metrocloud.services._exchange_files import CiphertextFile, ciphertext_path
from metrocloud.services._exchange_keys import get_key, local_key, register_key
from metrocloud.services._exchange_remote import GridNotConnected, NotConnected, RemoteDelivery
from metrocloud.services._exchange_upload import (
    MAX_ENVELOPE,
    UPLOAD_MAGIC,
    UPLOAD_MEDIA_TYPE,
    Upload,
    begin_delivery,
    begin_upload,
    check_delivery,
    message_out,
    upload_prefix,
)
from metrocloud.services.common import Actor, Keyset, Page, require_role
from metrocloud.services.node import Node
from metrocloud.store.schema import exchange_messages, exchange_recipients
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt

__all__ = [
    "EXCHANGE_ROLES",
    "MAX_ENVELOPE",
    "UPLOAD_MAGIC",
    "UPLOAD_MEDIA_TYPE",
    "GridNotConnected",
    "NotConnected",
    "RemoteDelivery",
    "Upload",
    "accept_receipt",
    "begin_delivery",
    "begin_upload",
    "check_delivery",
    "check_party",
    "connect_remote",
    "get_key",
    "get_message",
    "list_messages",
    "list_receipts",
    "local_key",
    "open_content",
    "register_key",
    "submit_receipt",
    "upload_prefix",
]


# -- reading -------------------------------------------------------------------------------------


def check_party(node: Node, actor: Actor, message_id: str) -> None:
    """NotFound unless ``actor`` is the sender or a recipient of the message (the guard)."""
    with node.db.read() as conn:
        visible(conn, actor, message_id)


def get_message(
    node: Node, actor: Actor, message_id: str, *, record: bool = True
) -> dict[str, Any]:
    """Metadata, the signed envelope and the caller's sealed key (if it is a recipient)."""
    require_role(actor, *EXCHANGE_ROLES, action="read confidential documents")
    with node.db.write() as conn:
        msg, rows = visible(conn, actor, message_id)
        recipients = [r.recipient_id for r in rows]
        if record:
            access(conn, node, actor, "exchange.read", msg.id, msg.sender_id, recipients)
    if record:
        log_access(
            actor.party_id, "exchange.read", msg.id, msg.sender_id, recipients, msg.ciphertext_size
        )
    return message_out(msg, rows, actor.party_id, full=True)


def list_messages(
    node: Node,
    actor: Actor,
    *,
    box: Literal["in", "out"],
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    """The caller's inbox (messages to it) or outbox (messages it sent), oldest first."""
    require_role(actor, *EXCHANGE_ROLES, action="read confidential documents")
    if box == "out":
        keyset = Keyset(exchange_messages.c.id)
        q = keyset.apply(
            select(exchange_messages).where(exchange_messages.c.sender_id == actor.party_id),
            limit,
            cursor,
        )
    else:
        keyset = Keyset(exchange_recipients.c.message_id)
        q = keyset.apply(
            select(exchange_recipients.c.message_id, exchange_messages)
            .join(exchange_messages, exchange_messages.c.id == exchange_recipients.c.message_id)
            .where(exchange_recipients.c.recipient_id == actor.party_id),
            limit,
            cursor,
        )
    with node.db.read() as conn:
        msgs, nxt = keyset.page(conn.execute(q).all(), limit)
        ids = [m.id for m in msgs]
        recipients: dict[str, list[Any]] = {i: [] for i in ids}
        if ids:
            for r in conn.execute(
                select(exchange_recipients)
                .where(exchange_recipients.c.message_id.in_(ids))
                .order_by(exchange_recipients.c.recipient_id)
            ):
                recipients[r.message_id].append(r)
    return Page([message_out(m, recipients[m.id], actor.party_id, full=False) for m in msgs], nxt)


def open_content(node: Node, actor: Actor, message_id: str) -> CiphertextFile:
    """The stored ciphertext for a party to the message, its digest checked first."""
    require_role(actor, *EXCHANGE_ROLES, action="fetch confidential documents")
    with node.db.read() as conn:
        msg, rows = visible(conn, actor, message_id)
    stored = CiphertextFile(
        ciphertext_path(node.settings.data_dir, msg.id), msg.ciphertext_size, msg.stored_sha256
    )
    stored.check()
    recipients = [r.recipient_id for r in rows]
    with node.db.write() as conn:
        conn.execute(
            update(exchange_recipients)
            .where(
                exchange_recipients.c.message_id == msg.id,
                exchange_recipients.c.recipient_id == actor.party_id,
                exchange_recipients.c.fetched_at.is_(None),
            )
            .values(fetched_at=node.timestamp())
        )
        access(conn, node, actor, "exchange.fetch", msg.id, msg.sender_id, recipients)
    log_access(
        actor.party_id, "exchange.fetch", msg.id, msg.sender_id, recipients, msg.ciphertext_size
    )
    return stored


# -- receipts ------------------------------------------------------------------------------------


def _receipt_out(row: Any) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "recipient_id": row.recipient_id,
        "acknowledged_at": row.acknowledged_at,
        "leaf_index": row.receipt_leaf,
        "receipt": json.loads(row.receipt),
    }


def submit_receipt(
    node: Node,
    actor: Actor,
    message_id: str,
    receipt: object,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a recipient's signed receipt after checking it against the message and the
    recipient's registered signing key; it becomes an ``exchange.receipt`` statement."""
    require_role(actor, *EXCHANGE_ROLES, action="acknowledge confidential documents")
    parsed = Receipt.from_json(receipt)
    with node.db.write() as conn:
        msg, rows = visible(conn, actor, message_id)
        mine = next((r for r in rows if r.recipient_id == actor.party_id), None)
        if mine is None:
            raise Forbidden(f"only a recipient acknowledges {message_id}", rule=RULE)
        # the receipt is about this message, by this recipient, for the stored header
        for name, got, expected in (
            ("message_id", parsed.message_id, msg.id),
            ("recipient", parsed.recipient, actor.party_id),
            ("header_sha256", parsed.header_sha256, msg.header_sha256),
        ):
            if got != expected:
                raise VerificationError(f"receipt {name} is {got}, expected {expected}", rule=RULE)
        if actor.public_key is None:
            raise InvalidInput(f"{actor.party_id} has no registered signing key", rule=RULE)
        parsed.verify(PublicKey.from_spki_b64(actor.public_key))
        if mine.receipt is not None:
            raise Conflict(f"{actor.party_id} acknowledged {message_id} already")
        rec = node.commit(
            conn,
            [
                node.statement(
                    kind="exchange.receipt",
                    signer=actor.party_id,
                    body={"receipt": parsed.to_json()},
                    extra=extra,
                )
            ],
        )
        conn.execute(
            update(exchange_recipients)
            .where(
                exchange_recipients.c.message_id == msg.id,
                exchange_recipients.c.recipient_id == actor.party_id,
            )
            .values(
                receipt=canonical_json(parsed.to_json()).decode("utf-8"),
                acknowledged_at=node.timestamp(),
                receipt_leaf=rec.leaf_indexes[0],
            )
        )
        recipients = [r.recipient_id for r in rows]
        access(conn, node, actor, "exchange.receipt", msg.id, msg.sender_id, recipients)
        if home(msg.sender_id) != node.country:  # back to the sender's node, with the fact
            remote(node).return_receipt(conn, home(msg.sender_id), parsed)
        row = conn.execute(
            select(exchange_recipients).where(
                exchange_recipients.c.message_id == msg.id,
                exchange_recipients.c.recipient_id == actor.party_id,
            )
        ).one()
    log_access(
        actor.party_id, "exchange.receipt", msg.id, msg.sender_id, recipients, msg.ciphertext_size
    )
    return _receipt_out(row)


def list_receipts(node: Node, actor: Actor, message_id: str) -> list[dict[str, Any]]:
    """The receipts of a message: all of them for its sender, its own for a recipient."""
    require_role(actor, *EXCHANGE_ROLES, action="read receipts")
    with node.db.write() as conn:
        msg, rows = visible(conn, actor, message_id)
        recipients = [r.recipient_id for r in rows]
        access(conn, node, actor, "exchange.receipts", msg.id, msg.sender_id, recipients)
    log_access(
        actor.party_id, "exchange.receipts", msg.id, msg.sender_id, recipients, msg.ciphertext_size
    )
    return [
        _receipt_out(r)
        for r in rows
        if r.receipt is not None and actor.party_id in (msg.sender_id, r.recipient_id)
    ]


def accept_receipt(
    node: Node,
    *,
    origin: str,
    receipt: object,
    recipient_key: PublicKey,
    conn: Connection | None = None,
) -> dict[str, Any]:
    """A receipt of a recipient homed on another node, coming back to the sender's node (the
    grid calls this): checked against the stored message and ``recipient_key`` (the
    recipient's registered key, as the grid knows it), then stored like a local one, in
    ``conn``'s transaction if given. The same receipt again changes nothing."""
    parsed = Receipt.from_json(receipt)
    if home(parsed.recipient) != origin:
        raise InvalidInput(
            f"a receipt from the node of {origin} is by {parsed.recipient}, homed elsewhere",
            rule=RULE,
        )
    parsed.verify(recipient_key)
    stored = canonical_json(parsed.to_json()).decode("utf-8")
    with writing(node, conn) as c:
        msg = c.execute(
            select(exchange_messages).where(exchange_messages.c.id == parsed.message_id)
        ).first()
        row = c.execute(
            select(exchange_recipients).where(
                exchange_recipients.c.message_id == parsed.message_id,
                exchange_recipients.c.recipient_id == parsed.recipient,
            )
        ).first()
        if msg is None or row is None or msg.header_sha256 != parsed.header_sha256:
            raise VerificationError(
                f"no message {parsed.message_id} with header {parsed.header_sha256} was sent "
                f"to {parsed.recipient} from this node",
                rule=RULE,
            )
        if row.receipt == stored:
            return _receipt_out(row)
        if row.receipt is not None:
            raise Conflict(f"{parsed.recipient} acknowledged {parsed.message_id} already")
        c.execute(
            update(exchange_recipients)
            .where(
                exchange_recipients.c.message_id == msg.id,
                exchange_recipients.c.recipient_id == parsed.recipient,
            )
            .values(receipt=stored, acknowledged_at=node.timestamp())
        )
        access_by_remote(
            c, node, parsed.recipient, origin, "exchange.receipt", msg.id, [msg.sender_id]
        )
        row = c.execute(
            select(exchange_recipients).where(
                exchange_recipients.c.message_id == msg.id,
                exchange_recipients.c.recipient_id == parsed.recipient,
            )
        ).one()
    log_access(
        parsed.recipient,
        "exchange.receipt",
        msg.id,
        msg.sender_id,
        [parsed.recipient],
        msg.ciphertext_size,
    )
    return _receipt_out(row)
