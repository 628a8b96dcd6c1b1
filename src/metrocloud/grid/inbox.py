"""The receiver's side of the outbox: each message is applied once, by sender and message id.

A message that arrives again (the sender did not see the first answer) gets the answer it
got the first time and changes nothing. The inbox row is written in the transaction that
applies the message, so a message is either applied and remembered, or neither. A delivery
of many messages looks them up and remembers them in bulk (:func:`applied_answers`,
:func:`remember_messages`): one query each per transaction, not one per message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from metrocloud.store.schema import grid_inbox

__all__ = [
    "Refusal",
    "Remembered",
    "already_applied",
    "applied_answers",
    "remember_message",
    "remember_messages",
]

#: ids per ``IN (...)`` query: well under SQLite's and PostgreSQL's bound-parameter limits
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is refused for good (what a batch handler's ``prepare`` returns for a
    payload it will not apply); the sender sets the message aside with this reason."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Remembered:
    """One applied message, as :func:`remember_messages` stores it."""

    message_id: str
    kind: str
    response: Mapping[str, Any]


def _dumps(response: Mapping[str, Any]) -> str:
    return json.dumps(response, separators=(",", ":"), sort_keys=True)


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


def applied_answers(
    conn: Connection, sender: str, message_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The stored answers of those of ``sender``'s ``message_ids`` applied before."""
    found: dict[str, dict[str, Any]] = {}
    ids = list(dict.fromkeys(message_ids))
    for start in range(0, len(ids), _CHUNK):
        rows = conn.execute(
            select(grid_inbox.c.message_id, grid_inbox.c.response).where(
                grid_inbox.c.sender_id == sender,
                grid_inbox.c.message_id.in_(ids[start : start + _CHUNK]),
            )
        )
        for r in rows:
            found[r.message_id] = json.loads(r.response)
    return found


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
            response=_dumps(response),
        )
    )


def remember_messages(
    conn: Connection, sender: str, applied: Sequence[Remembered], *, at: str
) -> None:
    """Remember ``applied`` (one multi-row insert); a message id remembered before is an
    IntegrityError, as in :func:`remember_message`."""
    if applied:
        conn.execute(
            insert(grid_inbox),
            [
                {
                    "sender_id": sender,
                    "message_id": a.message_id,
                    "kind": a.kind,
                    "received_at": at,
                    "response": _dumps(a.response),
                }
                for a in applied
            ],
        )
