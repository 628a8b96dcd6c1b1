"""The node: one member state's core platform, its database, key and transparency log.

Every legally relevant fact enters through :meth:`Node.commit`: the statements are signed
with the node key (next to the party's own request signature when the party sent one),
appended to the log, and projected into the registry tables, all in one transaction. A
signed tree head for the new size is stored in the same transaction, so the head a client
fetches always covers the leaf index the API just returned. Statements that are EU-wide are
queued for the grid's peers in that same transaction (docs/grid.md#replication).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, insert, select

from metrocloud.domain.errors import InvalidInput, MetrocloudError
from metrocloud.domain.parties import validate_country
from metrocloud.ledger import TransparencyLog
from metrocloud.services._federation_replication import queue_replication
from metrocloud.services.common import ACCESS_COLUMNS
from metrocloud.services.settings import Settings
from metrocloud.store.database import Database
from metrocloud.store.groupcommit import GroupCommitter
from metrocloud.store.projection import project
from metrocloud.store.schema import access_log, node_meta
from metrocloud.trust.keys import KeyStore, PrivateKey
from metrocloud.trust.statements import SignedStatement, Statement, sign_statement, utc_timestamp

__all__ = ["Node", "NodeNotInitialized", "Recorded"]


class NodeNotInitialized(MetrocloudError):
    code = "node-not-initialized"


@dataclass(frozen=True, kw_only=True, slots=True)
class Recorded:
    """What :meth:`Node.commit` appended: one leaf index per statement."""

    leaf_indexes: tuple[int, ...]
    tree_size: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class Node:
    settings: Settings
    db: Database
    key: PrivateKey
    node_id: str
    country: str
    log: TransparencyLog
    clock: Callable[[], datetime] = field(default=_utcnow)
    #: authenticated tokens, briefly (services.parties.cached_actor); never persisted
    auth_cache: dict[str, tuple[float, Any, datetime | None]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def open(cls, settings: Settings, *, create: bool = True) -> Node:
        """Open (and with ``create``, initialize) the node described by ``settings``."""
        country = validate_country(settings.country)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        keys_dir = settings.data_dir / "keys"
        store = KeyStore(keys_dir, KeyStore.passphrase_from(keys_dir))
        if not store.exists("node") and not create:
            raise NodeNotInitialized(
                f"no node key in {keys_dir}; run 'metrocloud init --data-dir {settings.data_dir}'"
            )
        key = store.load_or_create("node")
        db = Database(settings.database_url(), schema=settings.db_schema)
        db.migrate()
        node_id = f"node-{country}-{key.key_id[:16]}"
        with db.write() as conn:
            meta = dict(conn.execute(select(node_meta.c.key, node_meta.c.value)).all())
            if not meta:
                conn.execute(
                    insert(node_meta),
                    [
                        {"key": "node_id", "value": node_id},
                        {"key": "country", "value": country},
                        {"key": "key_id", "value": key.key_id},
                    ],
                )
            elif meta.get("key_id") != key.key_id or meta.get("country") != country:
                raise InvalidInput(
                    f"database {db.describe()} belongs to node {meta.get('node_id')} "
                    f"(country {meta.get('country')}), not to the key in {keys_dir} "
                    f"(country {country}); refusing to mix two nodes' records"
                )
        log = TransparencyLog(log_id=node_id, signer=key, verifier=key.public_key)
        return cls(settings=settings, db=db, key=key, node_id=node_id, country=country, log=log)

    @cached_property
    def access_log(self) -> GroupCommitter:
        """Access-log rows written in transactions shared by concurrent reads (group commit)."""
        return GroupCommitter(self.db, access_log, ACCESS_COLUMNS)

    def close(self) -> None:
        """Write what is queued for the access log, then release the database."""
        if "access_log" in self.__dict__:
            self.access_log.close()
        self.db.dispose()

    def now(self) -> datetime:
        return self.clock()

    def timestamp(self) -> str:
        return utc_timestamp(self.now())

    def statement(
        self,
        *,
        kind: str,
        signer: str,
        body: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Statement:
        return Statement(
            kind=kind, signer=signer, issued_at=self.timestamp(), body=body, extra=dict(extra or {})
        )

    def commit(self, conn: Connection, statements: Sequence[Statement]) -> Recorded:
        """Sign, append and project ``statements`` inside the caller's transaction."""
        signed: list[SignedStatement] = [sign_statement(s, self.key) for s in statements]
        indexes = self.log.append(conn, [s.to_bytes() for s in signed])
        for stmt, index in zip(signed, indexes, strict=True):
            project(conn, stmt.statement.payload(), index)
        # what is EU-wide goes into the outbox for the grid's peers, in this transaction
        queue_replication(conn, self, signed)
        head = self.log.sign_head(conn)
        return Recorded(leaf_indexes=tuple(indexes), tree_size=head.tree_size)
