"""What every service shares: the acting party, pages and cursors, the access log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from metrocloud.domain.errors import Forbidden, InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.store.bulk import insert_rows
from metrocloud.store.schema import access_log

__all__ = [
    "ACCESS_COLUMNS",
    "MAX_LIMIT",
    "Actor",
    "Keyset",
    "Page",
    "access_rows",
    "article",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "log_reads",
    "require_role",
]

T = TypeVar("T")
MAX_LIMIT = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class Actor:
    """The authenticated party behind a request."""

    party_id: str
    role: PartyRole
    country: str
    token_id: str | None = None
    key_id: str | None = None
    public_key: str | None = None

    def is_(self, *roles: PartyRole) -> bool:
        return self.role in roles

    @classmethod
    def of_party(cls, party: Mapping[str, Any]) -> Actor:
        """The party of a registry record (``admit_party``'s answer) acting on its own node,
        without a token (the demo, the simulator, benchmarks)."""
        return cls(
            party_id=party["id"],
            role=PartyRole(party["role"]),
            country=party["country"],
            public_key=party["public_key"],
        )


def article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def require_role(actor: Actor, *roles: PartyRole, action: str) -> None:
    if actor.role not in roles:
        raise Forbidden(
            f"{article(actor.role.value)} may not {action}; only "
            f"{' or '.join(r.value for r in roles)} may",
            rule="metrocloud role rules (docs/concepts.md#roles)",
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_MAX_KEY = 2**63 - 1


def decode_cursor(cursor: str | None, *types: type) -> list[Any] | None:
    """The key a cursor from :func:`encode_cursor` carries, checked against ``types``.

    ``types`` gives the type of each key part (``str`` or ``int``); anything else, an int
    outside 0..2^63-1 or a string over 64 characters is a cursor this node did not issue.
    """
    if cursor is None or cursor == "":
        return None
    bad = InvalidInput(f"cursor {cursor[:40]!r} is not one this node issued")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad from exc
    if not isinstance(key, list) or len(key) != len(types):
        raise bad
    for part, kind in zip(key, types, strict=True):
        if kind is int:
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= _MAX_KEY:
                raise bad
        elif not isinstance(part, str) or len(part) > 64:
            raise bad
    return key


@dataclass(frozen=True, slots=True)
class Keyset:
    """Keyset (cursor) pagination on one unique, indexed column: never OFFSET, never slicing.

    ``apply`` adds the order, the ``limit + 1`` probe and the "after the cursor" condition;
    ``page`` cuts the probe row off and makes the next cursor from the last row's key.
    """

    column: Any  # a Column of the selected table
    kind: type = str
    descending: bool = False

    def apply(self, query: Any, limit: int, cursor: str | None) -> Any:
        check_limit(limit)
        after = decode_cursor(cursor, self.kind)
        order = self.column.desc() if self.descending else self.column.asc()
        query = query.order_by(order).limit(limit + 1)
        if after:
            key = after[0]
            query = query.where(self.column < key if self.descending else self.column > key)
        return query

    def page(self, rows: Sequence[Any], limit: int) -> tuple[list[Any], str | None]:
        if len(rows) <= limit:
            return list(rows), None
        return list(rows[:limit]), encode_cursor([getattr(rows[limit - 1], self.column.key)])


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


ACCESS_COLUMNS = (
    "at",
    "owner_id",
    "reader_id",
    "reader_role",
    "action",
    "resource_type",
    "resource_id",
    "via_grant",
)


def access_rows(
    actor: Actor,
    at: str,
    action: str,
    resource_type: str,
    records: Iterable[tuple[str, Iterable[str | None]]],
    *,
    via_grant: Iterable[str] = (),
) -> list[tuple[Any, ...]]:
    """The access-log rows for ``actor`` reading each record: one per owner but the actor.

    ``records`` yields ``(resource_id, owners)``; the columns are :data:`ACCESS_COLUMNS`.
    """
    granted = set(via_grant)
    return [
        (
            at,
            owner,
            actor.party_id,
            actor.role.value,
            action,
            resource_type,
            resource_id,
            resource_id in granted,
        )
        for resource_id, owners in records
        for owner in dict.fromkeys(o for o in owners if o)
        if owner != actor.party_id
    ]


def log_reads(
    conn: Connection,
    actor: Actor,
    at: str,
    action: str,
    resource_type: str,
    records: Iterable[tuple[str, Iterable[str | None]]],
    *,
    via_grant: Iterable[str] = (),
) -> int:
    """Record in ``conn``'s transaction that ``actor`` read each record (see
    :func:`access_rows`). Returns the number of rows written."""
    rows = access_rows(actor, at, action, resource_type, records, via_grant=via_grant)
    insert_rows(conn, access_log, ACCESS_COLUMNS, rows)  # one driver-level executemany
    return len(rows)
