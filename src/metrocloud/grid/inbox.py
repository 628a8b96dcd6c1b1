"""The receiver's side of the outbox: each message is applied once, by sender and message id.

A message that arrives again (the sender did not see the first answer) gets the answer it
got the first time and changes nothing. The inbox row is written in the transaction that
applies the message, so a message is either applied and remembered, or neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from metrocloud.store.schema import grid_inbox

__all__ = ["already_applied", "remember_message"]


def already_applied(conn: Connection, sender: str, message_id: str) -> dict[str, Any] | None:
    """The stored answer if ``sender``'s message ``message_id`` was applied before."""
    row = conn.execute(
        select(grid_inbox.c.response).where(
            grid_inbox.c.sender_id == sender, grid_inbox.c.message_id == message_id
        )
    ).first()
    if row is None:
        return None
    answer: dict[str, Any] = json.loads(row.response)
    return answer


def remember_message(
    conn: Connection,
    sender: str,
    message_id: str,
    *,
    kind: str,
    response: Mapping[str, Any],
    at: str,
) -> None:
    conn.execute(
        insert(grid_inbox).values(
            sender_id=sender,
            message_id=message_id,
            kind=kind,
            received_at=at,
            response=json.dumps(response, separators=(",", ":"), sort_keys=True),
        )
    )
