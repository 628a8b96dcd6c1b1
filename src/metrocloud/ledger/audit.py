"""Full audit of a log's storage: recompute everything from the entries, compare everything.

:func:`audit_storage` streams the entries in index order, recomputes every leaf hash and every
perfect-subtree hash with a compact range (at most 48 hashes in memory) and compares each with
the stored ``ledger_nodes`` row; at the size of every stored signed head it compares the
recomputed root (RFC 9162 §2.1.1) and checks the head's signature. Finally it checks that
``ledger_state``, the entries, the stored nodes and the heads agree on the size of the log.

Memory is O(log n) plus one page of entries and their nodes. A single altered entry or node is
reported once: the stored ancestors of an altered entry differ from the recomputed ones as a
consequence and are not repeated. At most ``max_problems`` sentences are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from metrocloud.domain.errors import VerificationError
from metrocloud.ledger import storage
from metrocloud.ledger.heads import SignedTreeHead
from metrocloud.ledger.merkle import EMPTY_ROOT, leaf_hash, node_hash
from metrocloud.ledger.schema import MAX_LEAVES, node_id

if TYPE_CHECKING:
    from metrocloud.trust.keys import PublicKey

__all__ = ["LedgerReport", "audit_storage"]


@dataclass(frozen=True, kw_only=True)
class LedgerReport:
    """Outcome of :func:`audit_storage`; ``tree_size`` is the number of entries verified."""

    ok: bool
    tree_size: int
    heads_checked: int
    problems: tuple[str, ...]


def _short(digest: bytes) -> str:
    return digest[:6].hex() + "…"


class _Audit:
    def __init__(self, *, verifier: PublicKey, max_problems: int) -> None:
        self.verifier = verifier
        self.max_problems = max_problems
        self.problems: list[str] = []
        self.dropped = 0
        self.heads_checked = 0
        self.previous: SignedTreeHead | None = None
        self.stack: list[tuple[int, bytes, bool]] = []  # (level, hash, tainted), compact range
        self.count = 0

    def problem(self, sentence: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(sentence)
        else:
            self.dropped += 1

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        acc = self.stack[-1][1]
        for _, digest, _ in reversed(self.stack[:-1]):
            acc = node_hash(digest, acc)
        return acc

    def head(self, head: SignedTreeHead, root: bytes | None) -> None:
        size = head.tree_size
        if root is None:
            self.problem(
                f"signed head at size {size} exceeds the log's {self.count} entries: log truncated"
            )
        else:
            self.heads_checked += 1
            if head.root_hash != root:
                self.problem(
                    f"signed head at size {size} claims root {head.root_hash.hex()}, "
                    f"recomputed {root.hex()} from the entries (RFC 9162 §2.1.1)"
                )
        try:
            head.verify(self.verifier)
        except VerificationError as exc:
            self.problem(f"signed head at size {size}: {exc}")
        previous = self.previous
        if previous is not None and head.timestamp < previous.timestamp:
            self.problem(
                f"signed head at size {size} has timestamp {head.timestamp}, earlier than "
                f"{previous.timestamp} of the head at size {previous.tree_size}"
            )
        self.previous = head

    def compare(
        self, stored: bytes | None, recomputed: bytes, level: int, index: int, tainted: bool
    ) -> bool:
        """Compare one stored node; True if it differs (its ancestors will, consequently)."""
        if level == 0:
            where = f"entry {index}: stored leaf hash"
        else:
            first, stop = index << level, (index + 1) << level
            where = f"subtree (level {level}, index {index}) over entries [{first}, {stop}):"
            where += " stored hash"
        if stored is None:
            self.problem(f"{where} is missing from ledger_nodes")
            return False
        if stored == recomputed:
            return False
        if not tainted:
            against = "the entry bytes" if level == 0 else "the entries"
            self.problem(
                f"{where} {_short(stored)} does not match {against} "
                f"(recomputed {_short(recomputed)})"
            )
        return True

    def leaf(self, index: int, entry: bytes, nodes: dict[int, bytes]) -> None:
        digest = leaf_hash(entry)
        tainted = self.compare(nodes.get(index), digest, 0, index, False)
        level, stack = 0, self.stack
        while stack and stack[-1][0] == level:
            _, left, left_tainted = stack.pop()
            digest, level = node_hash(left, digest), level + 1
            index >>= 1
            below = tainted or left_tainted
            tainted = self.compare(nodes.get(node_id(level, index)), digest, level, index, below)
        stack.append((level, digest, tainted))
        self.count += 1


def audit_storage(
    conn: Connection,
    *,
    log_id: str,
    verifier: PublicKey,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 4096,
    max_problems: int = 100,
) -> LedgerReport:
    """Verify a log's storage end to end; see the module docstring."""
    audit = _Audit(verifier=verifier, max_problems=max_problems)
    state = storage.read_tree_size(conn)
    state_size = state or 0
    heads: Iterator[SignedTreeHead] = storage.iter_heads(conn, log_id)
    pending = next(heads, None)
    while pending is not None and pending.tree_size == 0:
        audit.head(pending, EMPTY_ROOT)
        pending = next(heads, None)
    for page in storage.iter_entry_pages(conn, 0, MAX_LEAVES, chunk=chunk):
        start = audit.count
        nodes = storage.nodes_completed_in(conn, start, start + len(page))
        gap = False
        for index, entry in page:
            if index != audit.count:
                audit.problem(
                    f"entries are not contiguous: entry {audit.count} is missing, the next "
                    f"stored one is {index}"
                )
                gap = True
                break
            audit.leaf(index, entry, nodes)
            while pending is not None and pending.tree_size == audit.count:
                audit.head(pending, audit.root())
                pending = next(heads, None)
        if progress is not None:
            progress(audit.count, max(state_size, audit.count))
        if gap:
            break
    count = audit.count
    while pending is not None:
        audit.head(pending, None)
        pending = next(heads, None)
    if state_size != count:
        shown = "missing" if state is None else state
        audit.problem(
            f"ledger_state.tree_size is {shown} but the log holds {count} contiguous entries"
        )
    for level, _, _, high in storage.node_level_summary(conn):
        if (high + 1) << level > count:
            audit.problem(
                f"ledger_nodes holds subtree (level {level}, index {high}) covering entries "
                f"up to {((high + 1) << level) - 1}, beyond the log's {count} entries"
            )
    problems = audit.problems
    if audit.dropped:
        problems = [*problems, f"... and {audit.dropped} more problems"]
    return LedgerReport(
        ok=not problems,
        tree_size=count,
        heads_checked=audit.heads_checked,
        problems=tuple(problems),
    )
