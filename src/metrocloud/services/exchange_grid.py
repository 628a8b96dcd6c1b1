"""Confidential exchange across the Legal Metrology Grid (docs/exchange.md#other-nodes).

:class:`GridDelivery` implements the exchange service's port to other nodes
(:class:`metrocloud.services.exchange.RemoteDelivery`) on the grid, and :func:`connect`
installs it for a node (the app does when it starts serving, in the lifespan of
:func:`metrocloud.api.create_app`; ``api.grid_local.LocalTransport`` for each node of an
in-process grid):

* **keys**: a recipient homed on another node is looked up there with a signed node query
  (``exchange.key``); the answer is taken only if the binding verifies under the party's
  signing key *as this node knows it from the grid's replication* (the party's admission,
  signed by its home node under the grid anchor, in this node's own log). The home node
  cannot slip in a key the party did not sign, nor a signing key of its own;
* **documents** travel through the durable outbox, never in one piece: an offer (the signed
  envelope), the ciphertext in pieces of at most :data:`PIECE_BYTES` (each its own outbox
  message, base64 in JSON, with its SHA-256), and a completion (the SHA-256 of the whole),
  all queued in the transaction that records the message. The receiving node checks the
  envelope at the offer, writes each piece at its offset (fsync'ed before the piece counts
  as received), and stores the message only when the completion finds every piece in
  (:mod:`metrocloud.services._exchange_arrivals`). The outbox keeps the order, retries while
  the peer is down and the receiver applies each message once;
* **receipts** go back to the sender's node as one outbox message each.
"""

from __future__ import annotations

import base64
import hashlib
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import NotFound, VerificationError
from metrocloud.grid.errors import PeerRefused
from metrocloud.grid.peers import Peer, home_of, self_node
from metrocloud.services import _exchange_arrivals as arrivals
from metrocloud.services import exchange as xch
from metrocloud.services import federation as fed
from metrocloud.services._federation_core import call_peer
from metrocloud.services._federation_lookup import refusal
from metrocloud.services.node import Node
from metrocloud.store.database import StorageUnavailable
from metrocloud.store.schema import parties
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.encryption import KeyBinding
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.receipts import Receipt

__all__ = ["PIECE_BYTES", "GridDelivery", "checked_key", "connect"]

#: ciphertext bytes per outbox message: base64 makes 5.6 MB of it, so one piece fits a
#: delivery request (8 MiB of payload, grid.delivery.MAX_REQUEST_BYTES) with room to spare
PIECE_BYTES = 4 * 1024 * 1024
_RULE = "docs/exchange.md#other-nodes"


def checked_key(node: Node, party_id: str, answer: Any) -> dict[str, Any]:
    """A key answer of ``party_id``'s home node, checked here. In order:

    1. the party is known on this node (the grid replicates manufacturers, notified bodies
       and authorities to every node), with its registered signing key;
    2. the home node names that same signing key;
    3. the binding is the party's and that signing key signed it;
    4. the key and key id the answer gives are the binding's.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("binding"), dict):
        raise VerificationError(f"the key answer for {party_id} carries no binding", rule=_RULE)
    # (1)
    with node.db.read() as conn:
        row = conn.execute(select(parties.c.public_key).where(parties.c.id == party_id)).first()
    if row is None or not row.public_key:
        raise NotFound(
            f"party {party_id} is not known on this node, so its key binding cannot be checked: "
            "the grid replicates manufacturers, notified bodies and authorities to every node; "
            "operators exchange documents on their own node",
            rule=_RULE,
        )
    signing = PublicKey.from_spki_b64(row.public_key)
    # (2)
    if answer.get("signing_key") != row.public_key:
        raise VerificationError(
            f"the home node of {party_id} names signing key {str(answer.get('signing_key'))[:24]}"
            f"..., but the key the grid replicated for the party is {signing.key_id}",
            rule=_RULE,
        )
    # (3)
    binding = KeyBinding.from_json(answer["binding"])
    if binding.party_id != party_id:
        raise VerificationError(
            f"the home node answered a binding of {binding.party_id} for {party_id}", rule=_RULE
        )
    binding.verify(signing)
    # (4)
    key_id, public = binding.public_key.key_id, binding.public_key.to_b64()
    if (answer.get("key_id"), answer.get("public_key")) != (key_id, public):
        raise VerificationError(
            f"the key answer for {party_id} names key {answer.get('key_id')}, its binding {key_id}",
            rule=_RULE,
        )
    return {
        "party_id": party_id,
        "key_id": key_id,
        "public_key": public,
        "created_at": binding.created_at,
        "binding": binding.to_json(),
        "signing_key": row.public_key,
        "leaf_index": None,  # the leaf is in the home node's log, not this one's
    }


class GridDelivery:
    """The exchange port on the grid, for one node."""

    def __init__(self, node: Node) -> None:
        self._node = weakref.ref(node)

    @property
    def node(self) -> Node:
        node = self._node()
        if node is None:  # pragma: no cover - the node was closed and dropped
            raise StorageUnavailable("the node of this grid link is closed")
        return node

    def _refuse(self, country: str, why: str) -> xch.GridNotConnected:
        return xch.GridNotConnected(
            f"a party homed on the node of {country} cannot be reached: {why}", rule=_RULE
        )

    def _home(self, country: str) -> Peer:
        with self.node.db.read() as conn:
            joined = self_node(conn) is not None
            to = home_of(conn, country) if joined else None
        if not joined:
            raise self._refuse(country, "this node has not joined a grid ('metrocloud grid join')")
        if to is None or to.is_self:
            raise self._refuse(country, f"no node of {country} is in this node's peer list")
        return to

    def encryption_key(self, country: str, party_id: str) -> dict[str, Any]:
        node, to = self.node, self._home(country)
        try:
            answer = call_peer(node, to, arrivals.KEY_QUERY, {"party_id": party_id})
        except PeerRefused as exc:
            raise refusal(exc, f"the key of {party_id} at {to.node_id} ({country})") from None
        return checked_key(node, party_id, answer)

    def _send(self, conn: Connection, country: str, kind: str, payload: dict[str, Any]) -> str:
        try:
            return fed.send_to_node(self.node, country, kind, payload, conn=conn)
        except NotFound as exc:
            raise self._refuse(country, str(exc)) from None

    def deliver(self, conn: Connection, country: str, envelope: Envelope, ciphertext: Path) -> None:
        size = envelope.layout.ciphertext_size
        pieces = max(1, -(-size // PIECE_BYTES))
        text = envelope.to_bytes().decode("utf-8")
        offer = self._send(
            conn,
            country,
            arrivals.OFFER_KIND,
            {
                "message_id": envelope.id,
                "envelope": text,
                "ciphertext_size": size,
                "pieces": pieces,
            },
        )
        whole = hashlib.sha256()
        ids = []
        with ciphertext.open("rb") as f:
            for index in range(pieces):
                data = f.read(PIECE_BYTES)
                whole.update(data)
                ids.append(
                    self._send(
                        conn,
                        country,
                        arrivals.PIECE_KIND,
                        {
                            "message_id": envelope.id,
                            "offer": offer,
                            "index": index,
                            "offset": index * PIECE_BYTES,
                            "data": base64.b64encode(data).decode("ascii"),
                            "sha256": hashlib.sha256(data).hexdigest(),
                        },
                    )
                )
            read = f.tell()
        if read != size:
            raise StorageUnavailable(
                f"the stored ciphertext of {envelope.id} has {read} bytes, its header {size}"
            )
        self._send(
            conn,
            country,
            arrivals.COMPLETE_KIND,
            {
                "message_id": envelope.id,
                "offer": offer,
                "envelope": text,
                "pieces": ids,
                "ciphertext_size": size,
                "sha256": whole.hexdigest(),
            },
        )

    def return_receipt(self, conn: Connection, country: str, receipt: Receipt) -> None:
        self._send(conn, country, arrivals.RECEIPT_KIND, {"receipt": receipt.to_json()})


def connect(node: Node) -> GridDelivery:
    """Route this node's documents for parties homed elsewhere through the grid."""
    delivery = GridDelivery(node)
    xch.connect_remote(node, delivery)
    return delivery


arrivals.register()
