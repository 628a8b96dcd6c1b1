"""What the confidential-exchange modules share: who takes part, the grid port, the
visibility rule, the access log and the log stream (docs/exchange.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services._exchange_remote import NotConnected, RemoteDelivery
from metrocloud.services.common import ACCESS_COLUMNS, Actor, log_reads
from metrocloud.services.node import Node
from metrocloud.store.bulk import insert_rows
from metrocloud.store.schema import (
    access_log,
    exchange_messages,
    exchange_recipients,
    party_encryption_keys,
)

__all__ = [
    "EXCHANGE_ROLES",
    "RESOURCE",
    "RULE",
    "access",
    "access_by_remote",
    "connect_remote",
    "home",
    "log",
    "log_access",
    "newest_key",
    "reading",
    "remote",
    "visible",
    "writing",
]

log = logging.getLogger("metrocloud.exchange")
EXCHANGE_ROLES = (
    PartyRole.NOTIFIED_BODY,
    PartyRole.MANUFACTURER,
    PartyRole.OPERATOR,
    PartyRole.AUTHORITY,
)
RESOURCE = "exchange_message"
RULE = "docs/exchange.md (confidential exchange)"
_REMOTES: dict[str, RemoteDelivery] = {}


def connect_remote(node: Node, delivery: RemoteDelivery | None) -> None:
    """Route documents for parties homed on other nodes through ``delivery`` (the grid);
    ``None`` disconnects (every such party is then refused with ``GridNotConnected``)."""
    if delivery is None:
        _REMOTES.pop(node.node_id, None)
    else:
        _REMOTES[node.node_id] = delivery


def remote(node: Node) -> RemoteDelivery:
    return _REMOTES.get(node.node_id) or NotConnected()


@contextmanager
def reading(node: Node, conn: Connection | None) -> Iterator[Connection]:
    """``conn`` if the caller is in a transaction already (the grid's), else a read."""
    if conn is not None:
        yield conn
    else:
        with node.db.read() as c:
            yield c


@contextmanager
def writing(node: Node, conn: Connection | None) -> Iterator[Connection]:
    """``conn`` if the caller is in a transaction already (the grid's), else a write
    transaction of its own."""
    if conn is not None:
        yield conn
    else:
        with node.db.write() as c:
            yield c


def home(party_id: str) -> str:
    """The country of the node a party (or message) id names: ``pty-FR-...`` -> ``FR``."""
    return party_id[4:6]


def newest_key(conn: Connection, party_id: str) -> Any:
    return conn.execute(
        select(party_encryption_keys)
        .where(party_encryption_keys.c.party_id == party_id)
        .order_by(party_encryption_keys.c.leaf_index.desc())
        .limit(1)
    ).first()


def visible(conn: Connection, actor: Actor, message_id: str) -> tuple[Any, list[Any]]:
    """The message and its recipient rows, if ``actor`` is a party to it; else NotFound."""
    msg = conn.execute(
        select(exchange_messages).where(exchange_messages.c.id == message_id)
    ).first()
    rows: list[Any] = []
    if msg is not None:
        rows = list(
            conn.execute(
                select(exchange_recipients)
                .where(exchange_recipients.c.message_id == message_id)
                .order_by(exchange_recipients.c.recipient_id)
            ).all()
        )
    if msg is None or (
        msg.sender_id != actor.party_id and all(r.recipient_id != actor.party_id for r in rows)
    ):
        # a message exists for its parties only: to anyone else it is not there
        raise NotFound(f"message {message_id} does not exist")
    return msg, rows


def access(
    conn: Connection,
    node: Node,
    actor: Actor,
    action: str,
    message_id: str,
    sender: str,
    recipients: Iterable[str],
) -> None:
    """Access-log rows: every other party of the message (here) sees the access."""
    log_reads(
        conn, actor, node.timestamp(), action, RESOURCE, [(message_id, [sender, *recipients])]
    )


def access_by_remote(
    conn: Connection,
    node: Node,
    reader: str,
    origin: str,
    action: str,
    message_id: str,
    owners: Iterable[str],
) -> None:
    """Access-log rows for an access made on another node (a delivery, a returned receipt)."""
    at = node.timestamp()
    rows = [
        (at, owner, reader, f"remote:{origin}", action, RESOURCE, message_id, False)
        for owner in dict.fromkeys(owners)
        if owner != reader
    ]
    insert_rows(conn, access_log, ACCESS_COLUMNS, rows)


def log_access(
    by: str, action: str, message_id: str, sender: str, recipients: Iterable[str], size: int
) -> None:
    """One line of the ``metrocloud.exchange`` log stream: metadata only, never content."""
    log.info(
        "%s message=%s by=%s sender=%s recipients=%s ciphertext_bytes=%d",
        action,
        message_id,
        by,
        sender,
        ",".join(recipients),
        size,
    )
