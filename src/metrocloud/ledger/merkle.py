"""RFC 9162 Merkle tree algorithms: hashing, tree heads, proof verification. Pure, no I/O.

Works for ANY RFC 9162 (Certificate Transparency v2) log using SHA-256, not just ours:

* :func:`leaf_hash`, :func:`node_hash` and :data:`EMPTY_ROOT` are the hashes of §2.1.1;
* :func:`root_from_leaves` is MTH (§2.1.1), written as the RFC's recursion: the reference;
* :func:`reference_inclusion_path` and :func:`reference_consistency_proof` are PATH (§2.1.3.1)
  and PROOF/SUBPROOF (§2.1.4.1), also written as the recursion, over leaf hashes in memory;
* :func:`verify_inclusion` (§2.1.3.2) and :func:`verify_consistency` (§2.1.4.2) are the RFC's
  verification algorithms step by step; before running them, the proof's length is compared
  with the only length the RFC's generation can produce, so a wrong proof fails with evidence.

Proof generation against stored subtree hashes lives in :mod:`metrocloud.ledger.subtrees`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from metrocloud.domain.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "consistency_proof_length",
    "inclusion_proof_length",
    "leaf_hash",
    "node_hash",
    "reference_consistency_proof",
    "reference_inclusion_path",
    "root_from_leaves",
    "split_point",
    "verify_consistency",
    "verify_inclusion",
]

#: size of every hash in the tree (SHA-256)
HASH_SIZE = 32

_sha256 = hashlib.sha256

#: MTH({}) = SHA-256() — the root of the empty tree (RFC 9162 §2.1.1)
EMPTY_ROOT = _sha256(b"").digest()

_INCL = "RFC 9162 §2.1.3.2"
_CONS = "RFC 9162 §2.1.4.2"


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), an interior node (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two strictly smaller than ``n`` (``n >= 2``, RFC 9162 §2.1.1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) from the leaf hashes MTH({d[i]}), the recursion of RFC 9162 §2.1.1."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = split_point(n)
    return node_hash(root_from_leaves(leaf_hashes[:k]), root_from_leaves(leaf_hashes[k:]))


def reference_inclusion_path(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1, computed in memory (O(n); the reference)."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} outside the tree of size {n}")
    if n == 1:
        return []
    k = split_point(n)
    if index < k:
        return [
            *reference_inclusion_path(leaf_hashes[:k], index),
            root_from_leaves(leaf_hashes[k:]),
        ]
    return [
        *reference_inclusion_path(leaf_hashes[k:], index - k),
        root_from_leaves(leaf_hashes[:k]),
    ]


def reference_consistency_proof(leaf_hashes: Sequence[bytes], first: int) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1 (``0 < m <= n``)."""
    if not 0 < first <= len(leaf_hashes):
        raise ValueError(f"first size {first} outside 1..{len(leaf_hashes)}")
    return _subproof(first, leaf_hashes, complete=True)


def _subproof(m: int, d: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if complete else [root_from_leaves(d)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(m, d[:k], complete=complete), root_from_leaves(d[k:])]
    return [*_subproof(m - k, d[k:], complete=False), root_from_leaves(d[:k])]


def inclusion_proof_length(leaf_index: int, tree_size: int) -> int:
    """Length of PATH(leaf_index, D[tree_size]): inner nodes plus right-border nodes."""
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    return inner + (leaf_index >> inner).bit_count()


def consistency_proof_length(first: int, second: int) -> int:
    """Length of PROOF(first, D[second]) for ``0 < first < second``."""
    inner = ((first - 1) ^ (second - 1)).bit_length()
    border = ((first - 1) >> inner).bit_count()
    shift = (first & -first).bit_length() - 1  # trailing zero bits of first
    seed = 0 if first == 1 << shift else 1  # PROOF omits MTH(D[first]) iff first is 2**shift
    return seed + inner - shift + border


def _check_hash(what: str, value: bytes, rule: str) -> None:
    if len(value) != HASH_SIZE:
        raise VerificationError(
            f"{what} has {len(value)} bytes, a SHA-256 hash has {HASH_SIZE} ({rule})", rule=rule
        )


def _check_path(kind: str, path: Sequence[bytes], expected: int, rule: str) -> None:
    if len(path) != expected:
        raise VerificationError(
            f"{kind} proof has wrong length: expected {expected}, got {len(path)} ({rule})",
            rule=rule,
        )
    for i, element in enumerate(path):
        _check_hash(f"{kind} proof element {i}", element, rule)


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, audit_path: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``leaf_index`` of the tree of ``tree_size`` with ``root``.

    The verification algorithm of RFC 9162 §2.1.3.2; raises :class:`VerificationError`.
    """
    if leaf_index < 0 or leaf_index >= tree_size:
        raise VerificationError(
            f"leaf index {leaf_index} is not inside a tree of size {tree_size} ({_INCL} step 1)",
            rule=_INCL,
        )
    _check_hash("leaf hash", leaf_hash, _INCL)
    _check_hash("root hash", root, _INCL)
    _check_path("inclusion", audit_path, inclusion_proof_length(leaf_index, tree_size), _INCL)
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in audit_path:
        if sn == 0:
            raise VerificationError(
                f"inclusion proof continues above the root ({_INCL} step 4)", rule=_INCL
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(
            f"inclusion proof stops below the root ({_INCL} step 5)", rule=_INCL
        )
    if r != root:
        raise VerificationError(
            f"inclusion proof of leaf {leaf_index} in tree of size {tree_size} yields root "
            f"{r.hex()}, expected {root.hex()} ({_INCL} step 5)",
            rule=_INCL,
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of size ``first`` is a prefix of the tree of size ``second``.

    For ``0 < first < second`` this is the algorithm of RFC 9162 §2.1.4.2. Outside that range
    the RFC defines no proof; we accept the trivial cases with an EMPTY proof only:
    ``first == second`` with equal roots, and ``first == 0`` with ``first_root == EMPTY_ROOT``.
    """
    if first < 0 or second < first:
        raise VerificationError(
            f"consistency needs 0 <= first <= second, got first={first}, second={second} ({_CONS})",
            rule=_CONS,
        )
    _check_hash("first root hash", first_root, _CONS)
    _check_hash("second root hash", second_root, _CONS)
    if first in (0, second):
        _check_path("consistency", proof, 0, _CONS)
        want = second_root if first == second else EMPTY_ROOT
        if first_root != want:
            raise VerificationError(
                f"tree of size {first} has root {first_root.hex()}, expected {want.hex()} "
                f"({_CONS})",
                rule=_CONS,
            )
        return
    _check_path("consistency", proof, consistency_proof_length(first, second), _CONS)
    path = list(proof)
    if first & (first - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise VerificationError(
                f"consistency proof continues above the root ({_CONS} step 6)", rule=_CONS
            )
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError(
            f"consistency proof stops below the root ({_CONS} step 7)", rule=_CONS
        )
    if fr != first_root:
        raise VerificationError(
            f"consistency proof {first}->{second} yields old root {fr.hex()}, the tree head of "
            f"size {first} says {first_root.hex()} ({_CONS} step 7)",
            rule=_CONS,
        )
    if sr != second_root:
        raise VerificationError(
            f"consistency proof {first}->{second} yields new root {sr.hex()}, the tree head of "
            f"size {second} says {second_root.hex()} ({_CONS} step 7)",
            rule=_CONS,
        )
