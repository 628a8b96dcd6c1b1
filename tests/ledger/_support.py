"""Helpers shared by the ledger tests."""

from __future__ import annotations

from metrocloud.ledger import leaf_hash
from metrocloud.ledger.merkle import root_from_leaves
from metrocloud.ledger.subtrees import NodeKey

__all__ = ["Clock", "all_nodes", "entry_bytes", "leaf_hashes", "reference_root"]


class Clock:
    """A settable millisecond clock."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1
        return self.now


def entry_bytes(i: int) -> bytes:
    """Distinct, variable-length test entries."""
    return f"statement {i}: ".encode() + bytes(range(i % 7))


def leaf_hashes(n: int) -> list[bytes]:
    return [leaf_hash(entry_bytes(i)) for i in range(n)]


def reference_root(n: int) -> bytes:
    return root_from_leaves(leaf_hashes(n))


def all_nodes(hashes: list[bytes]) -> dict[NodeKey, bytes]:
    """Every complete perfect subtree of the tree over ``hashes``: the in-memory oracle."""
    nodes: dict[NodeKey, bytes] = {}
    level = 0
    while 1 << level <= len(hashes):
        for index in range(len(hashes) >> level):
            nodes[(level, index)] = root_from_leaves(hashes[index << level : (index + 1) << level])
        level += 1
    return nodes
