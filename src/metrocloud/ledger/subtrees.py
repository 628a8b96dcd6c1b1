"""Proofs from stored perfect-subtree hashes: plan the lookups, then combine. Pure, no I/O.

A log that stores the hash of every COMPLETE perfect subtree can serve any RFC 9162 proof with
O(log n) lookups. A perfect subtree is named by a :data:`NodeKey` ``(level, index)``: it covers
the leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes.

Every range ``D[a:b]`` whose MTH the RFC's PATH / PROOF recursions ask for starts at a multiple
of the power of two at or above its length, so it splits into the perfect subtrees of the
binary digits of ``b - a``, largest first, and MTH(D[a:b]) is their right fold:
``node_hash(p1, node_hash(p2, ... pk))`` (RFC 9162 §2.1.1 applied repeatedly, since the left
part of every split is perfect). At most one element of a proof is such a composite range; the
others are single subtrees, so a proof needs at most about ``2 * log2(n)`` keys.

Two phases:

1. :func:`inclusion_path_keys` / :func:`consistency_proof_keys` / :func:`root_keys` return a
   :data:`ProofPlan`: for each proof element, the keys whose right fold is that element;
2. :func:`assemble` combines the fetched hashes into the proof (:func:`plan_keys` lists the
   distinct keys to fetch, e.g. with one ``WHERE id IN (...)``).

:func:`extend` computes, for an append, the leaf hashes and every newly completed subtree
from the right frontier of the old tree (the keys of :func:`root_keys` of the old size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from metrocloud.domain.errors import InvalidInput
from metrocloud.ledger.merkle import node_hash, split_point

__all__ = [
    "NodeKey",
    "ProofPlan",
    "assemble",
    "consistency_proof_keys",
    "extend",
    "fold",
    "inclusion_path_keys",
    "plan_keys",
    "range_keys",
    "root_keys",
]

#: (level, index): the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)
NodeKey = tuple[int, int]
#: one tuple of keys per proof element; the element is the right fold of its keys' hashes
ProofPlan = tuple[tuple[NodeKey, ...], ...]


def range_keys(start: int, stop: int) -> tuple[NodeKey, ...]:
    """The perfect subtrees, largest first, whose right fold is MTH(D[start:stop]).

    ``start`` must be a multiple of the smallest power of two >= ``stop - start`` (true for
    every range the RFC recursions use).
    """
    n = stop - start
    if start < 0 or n <= 0:
        raise InvalidInput(f"empty or negative leaf range [{start}, {stop})")
    if start % (1 << (n - 1).bit_length()):
        raise InvalidInput(
            f"leaf range [{start}, {stop}) is not aligned: its MTH is not a subtree of any "
            "RFC 9162 tree (§2.1.1)"
        )
    keys: list[NodeKey] = []
    pos = start
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            keys.append((level, pos >> level))
            pos += 1 << level
    return tuple(keys)


def root_keys(tree_size: int) -> tuple[NodeKey, ...]:
    """Keys whose right fold is MTH(D[tree_size]); also the right frontier of that tree."""
    return range_keys(0, tree_size) if tree_size else ()


def inclusion_path_keys(leaf_index: int, tree_size: int) -> ProofPlan:
    """Plan of PATH(leaf_index, D[tree_size]) (RFC 9162 §2.1.3.1), deepest element first."""
    if not 0 <= leaf_index < tree_size:
        raise InvalidInput(
            f"leaf index {leaf_index} is not inside a tree of size {tree_size} (RFC 9162 §2.1.3.1)"
        )
    lo, hi = 0, tree_size
    siblings: list[tuple[NodeKey, ...]] = []
    while hi - lo > 1:
        mid = lo + split_point(hi - lo)
        if leaf_index < mid:
            siblings.append(range_keys(mid, hi))
            hi = mid
        else:
            siblings.append(range_keys(lo, mid))
            lo = mid
    siblings.reverse()
    return tuple(siblings)


def consistency_proof_keys(first: int, second: int) -> ProofPlan:
    """Plan of PROOF(first, D[second]) = SUBPROOF(first, D[second], true) (RFC 9162 §2.1.4.1).

    ``first == second`` gives the empty proof.
    """
    if not 0 < first <= second:
        raise InvalidInput(
            f"consistency proof needs 0 < first <= second, got first={first}, "
            f"second={second} (RFC 9162 §2.1.4.1)"
        )
    lo, hi, complete = 0, second, True
    elements: list[tuple[NodeKey, ...]] = []
    while first != hi:
        mid = lo + split_point(hi - lo)
        if first <= mid:
            elements.append(range_keys(mid, hi))
            hi = mid
        else:
            elements.append(range_keys(lo, mid))
            lo, complete = mid, False
    if not complete:
        elements.append(range_keys(lo, hi))
    elements.reverse()
    return tuple(elements)


def plan_keys(plan: ProofPlan) -> set[NodeKey]:
    """The distinct keys a plan needs."""
    return {key for element in plan for key in element}


def fold(keys: Sequence[NodeKey], hashes: Mapping[NodeKey, bytes]) -> bytes:
    """Right fold of the hashes of ``keys``: MTH of the range they cover."""
    acc = hashes[keys[-1]]
    for key in reversed(keys[:-1]):
        acc = node_hash(hashes[key], acc)
    return acc


def assemble(plan: ProofPlan, hashes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """Phase 2: the proof from the fetched hashes (``KeyError`` if one is missing)."""
    return [fold(element, hashes) for element in plan]


def extend(
    old_size: int, frontier: Mapping[NodeKey, bytes], leaf_hashes: Sequence[bytes]
) -> list[tuple[int, int, list[bytes]]]:
    """The subtree hashes that appending ``leaf_hashes`` to a tree of ``old_size`` completes.

    ``frontier`` must hold the hashes of :func:`root_keys` ``(old_size)``. Returns one
    ``(level, first_index, hashes)`` run per level, level 0 being the leaf hashes themselves;
    the run at level ``l`` covers the indexes ``[old_size >> l, new_size >> l)``.
    """
    runs: list[tuple[int, int, list[bytes]]] = []
    level, first, current = 0, old_size, list(leaf_hashes)
    while current:
        runs.append((level, first, current))
        # the left partner of the first new node is the frontier node when `first` is odd
        row = [frontier[(level, first - 1)], *current] if first & 1 else current
        current = [node_hash(row[j], row[j + 1]) for j in range(0, len(row) - 1, 2)]
        level, first = level + 1, first >> 1
    return runs
