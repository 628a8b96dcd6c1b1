"""The port through which confidential exchange reaches parties homed on other nodes.

A party id names its home node's country (``pty-FR-...`` lives on the French node). For such
a party the exchange service needs three things from the Legal Metrology Grid, and asks this
port for them:

- ``encryption_key(country, party_id)``: the party's newest key binding and registered signing
  key as its home node publishes them (``GET /api/v1/exchange/keys/{party_id}`` there);
- ``deliver(conn, country, envelope, ciphertext)``: queue the signed envelope and (a reference
  to) its ciphertext file for that node in the grid's durable outbox, inside the transaction
  ``conn`` that records the message, so the message and its delivery commit together; the
  node there stores them as a message received from this node;
- ``return_receipt(conn, country, receipt)``: queue a recipient's signed receipt for the node
  of the message's sender, inside the transaction that records the receipt.

Until the grid transport is connected (:func:`metrocloud.services.exchange.connect_remote`),
:class:`NotConnected` answers each with :class:`GridNotConnected` (409), so nothing is
silently accepted that cannot be delivered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection

from metrocloud.domain.errors import DomainError
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.receipts import Receipt

__all__ = ["GridNotConnected", "NotConnected", "RemoteDelivery"]


class GridNotConnected(DomainError):
    """The party is homed on another node and this node has no grid link to deliver there."""

    code = "grid-not-connected"


class RemoteDelivery(Protocol):
    def encryption_key(self, country: str, party_id: str) -> dict[str, Any]:
        """The answer of ``GET /api/v1/exchange/keys/{party_id}`` on the party's home node."""
        ...

    def deliver(self, conn: Connection, country: str, envelope: Envelope, ciphertext: Path) -> None:
        """Queue (in ``conn``'s transaction) the envelope and the ciphertext file for the
        node of ``country``; the file stays where it is until the node there has it."""
        ...

    def return_receipt(self, conn: Connection, country: str, receipt: Receipt) -> None:
        """Queue (in ``conn``'s transaction) a recipient's signed receipt for the sender's
        node of ``country``."""
        ...


class NotConnected:
    """The port before the grid is wired: every call is refused with the reason."""

    def _refuse(self, country: str, what: str) -> GridNotConnected:
        return GridNotConnected(
            f"{what} on the node of {country}, but this node has no grid link to it yet "
            "(the grid transport is not connected to confidential exchange)",
            rule="ARCHITECTURE.md decision 6 (grid) / docs/exchange.md#other-nodes",
        )

    def encryption_key(self, country: str, party_id: str) -> dict[str, Any]:
        raise self._refuse(country, f"{party_id} is homed")

    def deliver(self, conn: Connection, country: str, envelope: Envelope, ciphertext: Path) -> None:
        raise self._refuse(country, f"a recipient of {envelope.id} is homed")

    def return_receipt(self, conn: Connection, country: str, receipt: Receipt) -> None:
        raise self._refuse(country, f"the sender of {receipt.message_id} is homed")
