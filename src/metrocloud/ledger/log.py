"""The durable RFC 9162 transparency log of the platform.

Every method takes the caller's SQLAlchemy :class:`~sqlalchemy.Connection` first and runs
inside the caller's transaction, so a registry write and the ledger append that records it
commit or roll back together. The log never loads the whole tree: an append reads the right
frontier (at most 48 hashes, one query), a root or proof reads O(log n) stored subtree hashes
(one query); :mod:`metrocloud.ledger.subtrees` says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.ledger import storage
from metrocloud.ledger.audit import LedgerReport, audit_storage
from metrocloud.ledger.heads import SignedTreeHead, sign_tree_head
from metrocloud.ledger.merkle import EMPTY_ROOT, leaf_hash
from metrocloud.ledger.schema import MAX_LEAVES
from metrocloud.ledger.subtrees import (
    assemble,
    consistency_proof_keys,
    extend,
    fold,
    inclusion_path_keys,
    plan_keys,
    root_keys,
)

if TYPE_CHECKING:
    from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = ["TransparencyLog"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransparencyLog:
    """One append-only log in the ledger tables of a database.

    ``signer`` is the private key of the node that signs tree heads; ``verifier`` the public
    key heads are checked with (defaults to ``signer.public_key``). ``clock`` returns ms since
    the epoch (tests inject one).
    """

    def __init__(
        self,
        *,
        log_id: str,
        signer: PrivateKey | None = None,
        verifier: PublicKey | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if not isinstance(log_id, str) or not log_id:
            raise InvalidInput(f"log_id must be a non-empty string, got {log_id!r}")
        if verifier is None and signer is not None:
            verifier = signer.public_key
        if (
            signer is not None
            and verifier is not None
            and signer.public_key.key_id != verifier.key_id
        ):
            raise InvalidInput(
                f"signer key {signer.public_key.key_id!r} does not match verifier key "
                f"{verifier.key_id!r}: heads this node signs would fail its own checks"
            )
        self.log_id = log_id
        self.signer = signer
        self.verifier = verifier
        self._clock = clock or _now_ms

    def __repr__(self) -> str:
        key = self.verifier.key_id if self.verifier is not None else None
        return f"TransparencyLog(log_id={self.log_id!r}, key_id={key!r})"

    # -- writing ---------------------------------------------------------------------------

    def append(self, conn: Connection, entries: Sequence[bytes]) -> list[int]:
        """Append ``entries`` in order; returns their leaf indexes. Serialized by the state row."""
        for position, entry in enumerate(entries):
            if not isinstance(entry, bytes):
                raise InvalidInput(
                    f"ledger entries must be bytes; entry {position} is {type(entry).__name__}"
                )
        if not entries:
            return []
        stored = storage.read_tree_size(conn, lock=True)
        size = stored or 0
        new_size = size + len(entries)
        if new_size > MAX_LEAVES:
            raise InvalidInput(
                f"log {self.log_id!r} holds {size} entries; {len(entries)} more exceed its "
                f"capacity of 2**48 leaves"
            )
        frontier = storage.fetch_nodes(conn, root_keys(size), purpose=f"append at size {size}")
        runs = extend(size, frontier, [leaf_hash(entry) for entry in entries])
        storage.insert_entries(conn, size, entries, self._clock())
        storage.insert_runs(conn, runs)
        storage.write_tree_size(conn, new_size, insert=stored is None)
        return list(range(size, new_size))

    def sign_head(self, conn: Connection) -> SignedTreeHead:
        """Sign the current size (idempotent: an existing head for that size is returned)."""
        if self.signer is None:
            raise InvalidInput(
                f"log {self.log_id!r} was opened without a signer; only the writing node signs "
                "tree heads"
            )
        size = storage.read_tree_size(conn, lock=True) or 0
        existing = storage.read_head(conn, self.log_id, size)
        if existing is not None:
            return existing
        latest = storage.latest_head(conn, self.log_id)
        timestamp = self._clock()
        if latest is not None:  # heads never go back in time
            timestamp = max(timestamp, latest.timestamp)
        head = sign_tree_head(
            self.signer,
            log_id=self.log_id,
            tree_size=size,
            root_hash=self._root(conn, size),
            timestamp=timestamp,
        )
        storage.insert_head(conn, head)
        return head

    # -- reading ---------------------------------------------------------------------------

    def tree_size(self, conn: Connection) -> int:
        return storage.read_tree_size(conn) or 0

    def entry(self, conn: Connection, index: int) -> bytes:
        value = storage.read_entry(conn, index) if index >= 0 else None
        if value is None:
            raise NotFound(
                f"log {self.log_id!r} has no entry {index}: it holds {self.tree_size(conn)}"
            )
        return value

    def entries(
        self, conn: Connection, start: int, stop: int, *, chunk: int = 1000
    ) -> Iterator[tuple[int, bytes]]:
        """``(index, entry)`` for ``start <= index < stop``, read ``chunk`` rows at a time.

        Like slicing, ``stop`` beyond the tree size just ends the stream.
        """
        if start < 0 or stop < start or chunk < 1:
            raise InvalidInput(f"entry range needs 0 <= start <= stop, got [{start}, {stop})")
        return storage.iter_entries(conn, start, stop, chunk=chunk)

    def root_hash(self, conn: Connection, tree_size: int | None = None) -> bytes:
        """MTH of the first ``tree_size`` entries (default: all); one node query."""
        current = self.tree_size(conn)
        if tree_size is None:
            tree_size = current
        self._check_size("root hash", tree_size, current)
        return self._root(conn, tree_size)

    def latest_head(self, conn: Connection) -> SignedTreeHead | None:
        """The head of the largest signed size, None before the first :meth:`sign_head`."""
        return storage.latest_head(conn, self.log_id)

    def head(self, conn: Connection, tree_size: int) -> SignedTreeHead:
        head = storage.read_head(conn, self.log_id, tree_size)
        if head is None:
            raise NotFound(f"log {self.log_id!r} has no signed tree head at size {tree_size}")
        return head

    def inclusion_proof(self, conn: Connection, leaf_index: int, tree_size: int) -> list[bytes]:
        """PATH(leaf_index, D[tree_size]) (RFC 9162 §2.1.3.1)."""
        self._check_size("inclusion proof", tree_size, self.tree_size(conn))
        if not 0 <= leaf_index < tree_size:
            raise InvalidInput(
                f"leaf index {leaf_index} is not inside the tree of size {tree_size} "
                "(RFC 9162 §2.1.3.1)"
            )
        plan = inclusion_path_keys(leaf_index, tree_size)
        what = f"inclusion proof of leaf {leaf_index} at size {tree_size}"
        return assemble(plan, storage.fetch_nodes(conn, plan_keys(plan), purpose=what))

    def consistency_proof(self, conn: Connection, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[second]) (RFC 9162 §2.1.4.1); empty when ``first == second``."""
        self._check_size("consistency proof", second, self.tree_size(conn))
        if not 0 < first <= second:
            raise InvalidInput(
                f"consistency proof needs 0 < first <= second, got first={first}, "
                f"second={second} (RFC 9162 §2.1.4.1)"
            )
        plan = consistency_proof_keys(first, second)
        what = f"consistency proof {first}->{second}"
        return assemble(plan, storage.fetch_nodes(conn, plan_keys(plan), purpose=what))

    # -- auditing --------------------------------------------------------------------------

    def verify_storage(
        self, conn: Connection, progress: Callable[[int, int], None] | None = None
    ) -> LedgerReport:
        """Recompute everything from the entries and compare; see :func:`audit.audit_storage`."""
        if self.verifier is None:
            raise InvalidInput(
                f"verify_storage of log {self.log_id!r} needs a verifier key to check the "
                "signed tree heads"
            )
        return audit_storage(conn, log_id=self.log_id, verifier=self.verifier, progress=progress)

    # -- helpers ---------------------------------------------------------------------------

    def _check_size(self, what: str, tree_size: int, current: int) -> None:
        if not 0 <= tree_size <= current:
            raise InvalidInput(
                f"{what} at tree size {tree_size} asked of log {self.log_id!r}, which holds "
                f"{current} entries"
            )

    def _root(self, conn: Connection, tree_size: int) -> bytes:
        if tree_size == 0:
            return EMPTY_ROOT
        keys = root_keys(tree_size)
        nodes = storage.fetch_nodes(conn, keys, purpose=f"root at size {tree_size}")
        return fold(keys, nodes)
