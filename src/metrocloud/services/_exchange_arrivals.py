"""What the grid brings in for confidential exchange: key queries, documents in pieces,
receipts (docs/exchange.md#other-nodes). The sending side is
:mod:`metrocloud.services.exchange_grid`.

Each outbox message runs in the transaction that records it as applied (once per sender and
message id, :mod:`metrocloud.grid.inbox`); what a handler returns is remembered there, and
the later messages of a delivery read it back, so a delivery needs no table of its own:

* ``exchange.offer``: the signed envelope; checked like any delivery (sender and message of
  the sending node's country, the sender's key as replicated here signed the header, each
  recipient homed here holds the key it names) before a byte of ciphertext is taken; an
  empty staging file is made for the pieces;
* ``exchange.piece``: a piece of the ciphertext at its offset, with its SHA-256; refused
  unless its offer was accepted here; written and fsync'ed before the piece counts;
* ``exchange.complete``: the message ids of all pieces and the SHA-256 of the whole; every
  piece must have been applied here, the staged file must hash to that digest and pass the
  checks against the signed header (size, chunk tags); then the message is stored (the
  staged file renamed into place) in the same transaction;
* ``exchange.receipt``: a recipient's signed receipt, back at the sender's node.

A piece or document that does not hold is refused for good (the sending node sets the
message aside, ``metrocloud grid status`` shows the reason) and its staged bytes are removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import InvalidInput, NotFound, VerificationError
from metrocloud.grid.inbox import already_applied
from metrocloud.grid.peers import Peer
from metrocloud.services import exchange as xch
from metrocloud.services._exchange_common import home
from metrocloud.services._exchange_files import (
    StagedCiphertext,
    ciphertext_path,
    staging_path,
    write_at,
)
from metrocloud.services._federation_core import on_message, on_query
from metrocloud.services.node import Node
from metrocloud.store.ids import parse_id
from metrocloud.store.schema import parties
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt

__all__ = ["COMPLETE_KIND", "KEY_QUERY", "OFFER_KIND", "PIECE_KIND", "RECEIPT_KIND", "register"]

KEY_QUERY = "exchange.key"
OFFER_KIND = "exchange.offer"
PIECE_KIND = "exchange.piece"
COMPLETE_KIND = "exchange.complete"
RECEIPT_KIND = "exchange.receipt"
_RULE = "docs/exchange.md#other-nodes"
_READ = 1024 * 1024


def _field(payload: Mapping[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInput(
            f"an exchange grid message needs {name} ({kind.__name__}), got {value!r:.60}",
            rule=_RULE,
        )
    return value


def _message_id(payload: Mapping[str, Any], sender: Peer) -> str:
    xid = str(_field(payload, "message_id", str))
    parse_id(xid, "xch")
    if home(xid) != sender.country:
        raise InvalidInput(
            f"node {sender.node_id} ({sender.country}) delivers only messages sent through it; "
            f"{xid} names {home(xid)}",
            rule=_RULE,
        )
    return xid


def _party_key(conn: Connection, party_id: str, what: str) -> PublicKey:
    """A party's signing key as the grid replicated it here (its home node's admission)."""
    row = conn.execute(select(parties.c.public_key).where(parties.c.id == party_id)).first()
    if row is None or not row.public_key:
        raise InvalidInput(
            f"{what} {party_id} is not known on this node; only parties the grid replicates "
            "(manufacturers, notified bodies, authorities) exchange documents across nodes",
            rule=_RULE,
        )
    return PublicKey.from_spki_b64(row.public_key)


def _offer_of(conn: Connection, sender: Peer, payload: Mapping[str, Any], xid: str) -> Any:
    offer_id = str(_field(payload, "offer", str))
    offer = already_applied(conn, sender.node_id, offer_id)
    if offer is None or offer.get("message_id") != xid:
        raise InvalidInput(
            f"a piece of {xid} came without its offer {offer_id} accepted here (the offer was "
            "refused, or the sending node skipped it)",
            rule=_RULE,
        )
    return offer


def _answer_key(node: Node, sender: Peer, args: Mapping[str, Any]) -> Mapping[str, Any]:
    party_id = str(_field(args, "party_id", str))
    parse_id(party_id, "pty")
    if home(party_id) != node.country:
        raise NotFound(f"party {party_id} is not homed on this node ({node.country})", rule=_RULE)
    return xch.local_key(node, party_id)


def _on_offer(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    xid = _message_id(payload, sender)
    text = str(_field(payload, "envelope", str))
    size = int(_field(payload, "ciphertext_size", int))
    pieces = int(_field(payload, "pieces", int))
    env = Envelope.from_bytes(text.encode("utf-8"))
    if env.id != xid or size != env.layout.ciphertext_size or not 1 <= pieces <= size:
        raise InvalidInput(
            f"the offer of {xid} ({size} bytes in {pieces} pieces) does not match its envelope "
            f"({env.id}, {env.layout.ciphertext_size} bytes)",
            rule=_RULE,
        )
    xch.check_delivery(
        node,
        origin=sender.country,
        envelope_bytes=text.encode("utf-8"),
        sender_key=_party_key(conn, env.sender, "sender"),
        conn=conn,
    )
    write_at(staging_path(node.settings.data_dir, xid), 0, b"", truncate=True)
    return {"message_id": xid, "ciphertext_size": size, "pieces": pieces}


def _on_piece(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    xid = _message_id(payload, sender)
    offer = _offer_of(conn, sender, payload, xid)
    index = int(_field(payload, "index", int))
    offset = int(_field(payload, "offset", int))
    try:
        data = base64.b64decode(str(_field(payload, "data", str)), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"piece {index} of {xid} is not base64", rule=_RULE) from None
    got, expected = hashlib.sha256(data).hexdigest(), str(_field(payload, "sha256", str))
    if got != expected:
        raise VerificationError(
            f"piece {index} of {xid} has SHA-256 {got}, its message says {expected} (altered "
            "in the sending node's outbox or on the way)",
            rule=_RULE,
        )
    size = offer["ciphertext_size"]
    if not 0 <= index < offer["pieces"] or offset < 0 or offset + len(data) > size:
        raise InvalidInput(
            f"piece {index} of {xid} ({len(data)} bytes at {offset}) lies outside its "
            f"{size} bytes in {offer['pieces']} pieces",
            rule=_RULE,
        )
    write_at(staging_path(node.settings.data_dir, xid), offset, data)
    return {"message_id": xid, "index": index, "offset": offset, "bytes": len(data)}


def _on_complete(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    xid = _message_id(payload, sender)
    offer = _offer_of(conn, sender, payload, xid)
    staged = staging_path(node.settings.data_dir, xid)
    try:
        return _complete(node, conn, sender, payload, xid, offer)
    except (InvalidInput, VerificationError):
        staged.unlink(missing_ok=True)  # refused for good: the pieces are of no use
        raise


def _complete(
    node: Node,
    conn: Connection,
    sender: Peer,
    payload: Mapping[str, Any],
    xid: str,
    offer: Mapping[str, Any],
) -> dict[str, Any]:
    ids = _field(payload, "pieces", list)
    if len(ids) != offer["pieces"]:
        raise InvalidInput(
            f"{xid} was offered in {offer['pieces']} pieces, its completion lists {len(ids)}",
            rule=_RULE,
        )
    for index, piece_id in enumerate(ids):
        got = already_applied(conn, sender.node_id, str(piece_id))
        if got is None or got.get("message_id") != xid or got.get("index") != index:
            raise VerificationError(
                f"piece {index} of {xid} (message {piece_id}) was not received here: the "
                "document is incomplete (see the sending node's grid status for the piece)",
                rule=_RULE,
            )
    target = ciphertext_path(node.settings.data_dir, xid)
    source = StagedCiphertext.source(staging_path(node.settings.data_dir, xid), target)
    if source is None:
        raise VerificationError(
            f"the received pieces of {xid} are gone from exchange/incoming", rule=_RULE
        )
    text = str(_field(payload, "envelope", str)).encode("utf-8")
    env = Envelope.from_bytes(text)
    upload = xch.begin_delivery(
        node,
        origin=sender.country,
        envelope_bytes=text,
        sender_key=_party_key(conn, env.sender, "sender"),
        conn=conn,
        staged=source,
    )
    whole = hashlib.sha256()
    try:
        with source.open("rb") as f:
            while block := f.read(_READ):
                upload.write(block)
                whole.update(block)
        expected = str(_field(payload, "sha256", str))
        if whole.hexdigest() != expected:
            raise VerificationError(
                f"the pieces of {xid} put together have SHA-256 {whole.hexdigest()}, the "
                f"sending node stored {expected}",
                rule=_RULE,
            )
    except BaseException:
        upload.abort()
        raise
    stored = upload.finish()
    return {
        "message_id": xid,
        "recipients": sorted(upload.deliveries),
        "ciphertext_size": stored["ciphertext_size"],
        "header_sha256": stored["header_sha256"],
    }


def _on_receipt(
    node: Node, conn: Connection, sender: Peer, payload: Mapping[str, Any]
) -> dict[str, Any]:
    raw = payload.get("receipt")
    receipt = Receipt.from_json(raw)
    stored = xch.accept_receipt(
        node,
        origin=sender.country,
        receipt=raw,
        recipient_key=_party_key(conn, receipt.recipient, "recipient"),
        conn=conn,
    )
    return {"message_id": stored["message_id"], "recipient_id": stored["recipient_id"]}


def register() -> None:
    """Register the receivers (once per process; the grid calls them for every node)."""
    on_query(KEY_QUERY, _answer_key)
    on_message(OFFER_KIND, _on_offer)
    on_message(PIECE_KIND, _on_piece)
    on_message(COMPLETE_KIND, _on_complete)
    on_message(RECEIPT_KIND, _on_receipt)
