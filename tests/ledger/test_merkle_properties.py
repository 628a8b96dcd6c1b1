"""Property tests: generated proofs verify for every tree size 1..300; any tampering fails.

"Wrong size" always means a (size, root) pair of ANOTHER tree of the same log. A proof checked
against the right root but a wrong size can pass when both sizes give the leaf the same path
shape (e.g. leaf 0 at sizes 3 and 4): RFC 9162 binds the size to the root only through the
signed tree head, not through the proof.
"""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import VerificationError
from metrocloud.ledger import subtrees
from metrocloud.ledger.merkle import (
    EMPTY_ROOT,
    reference_consistency_proof,
    reference_inclusion_path,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.ledger.subtrees import NodeKey

from ._support import all_nodes, leaf_hashes

MAX = 300


@cache
def _tree(n: int) -> tuple[list[bytes], dict[NodeKey, bytes]]:
    hashes = leaf_hashes(n)
    return hashes, all_nodes(hashes)


@cache
def _root(n: int) -> bytes:
    return root_from_leaves(_tree(MAX)[0][:n])


def _inclusion(index: int, size: int) -> list[bytes]:
    return subtrees.assemble(subtrees.inclusion_path_keys(index, size), _tree(MAX)[1])


def _consistency(first: int, second: int) -> list[bytes]:
    return subtrees.assemble(subtrees.consistency_proof_keys(first, second), _tree(MAX)[1])


def _flip(proof: list[bytes], position: int, bit: int) -> list[bytes]:
    out = list(proof)
    element = bytearray(out[position])
    element[bit // 8] ^= 1 << (bit % 8)
    out[position] = bytes(element)
    return out


def test_every_size_up_to_300_with_random_indices() -> None:
    """Deterministic sweep: each size, several indexes; every alteration fails."""
    rng = random.Random(9162)
    hashes = _tree(MAX)[0]
    for size in range(1, MAX + 1):
        root = _root(size)
        for index in {0, size - 1, *(rng.randrange(size) for _ in range(3))}:
            proof = _inclusion(index, size)
            verify_inclusion(hashes[index], index, size, proof, root)
            for position in range(len(proof)):
                with pytest.raises(VerificationError):
                    verify_inclusion(hashes[index], index, size, _flip(proof, position, 255), root)
            if proof:
                with pytest.raises(VerificationError):
                    verify_inclusion(hashes[index], index, size, proof[:-1], root)
            with pytest.raises(VerificationError):
                verify_inclusion(hashes[index], index, size, [*proof, root], root)
        first = rng.randrange(1, size + 1)
        verify_consistency(first, size, _root(first), root, _consistency(first, size))


def test_proofs_need_o_log_n_keys() -> None:
    for size in [*range(1, 300), 10**6, 2**40 + 12345, 2**48 - 1]:
        bound = 2 * max(1, (size - 1).bit_length())
        for index in {0, size // 3, size - 1}:
            plan = subtrees.inclusion_path_keys(index, size)
            assert sum(map(len, plan)) <= bound
            assert sum(len(e) > 1 for e in plan) <= 1  # at most one composite element
        for first in {1, size // 2 or 1, size - 1 or 1}:
            plan = subtrees.consistency_proof_keys(first, size)
            assert sum(map(len, plan)) <= bound
            assert sum(len(e) > 1 for e in plan) <= 1


sizes = st.integers(min_value=1, max_value=MAX)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), size=sizes)
def test_inclusion_proofs_equal_the_reference_and_verify(data: st.DataObject, size: int) -> None:
    hashes = _tree(MAX)[0]
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = _inclusion(index, size)
    assert proof == reference_inclusion_path(hashes[:size], index)
    verify_inclusion(hashes[index], index, size, proof, _root(size))


@settings(max_examples=400, deadline=None)
@given(data=st.data(), size=sizes)
def test_altered_inclusion_proofs_fail(data: st.DataObject, size: int) -> None:
    hashes = _tree(MAX)[0]
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = _inclusion(index, size)
    leaf, root = hashes[index], _root(size)
    kind = data.draw(st.sampled_from(["flip", "index", "size", "truncate", "extend", "leaf"]))
    if kind == "flip" and proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, _flip(proof, position, bit), root)
    elif kind == "index" and size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, other, size, proof, root)
    elif kind == "size":
        other = data.draw(st.integers(index + 1, MAX).filter(lambda s: s != size))
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, other, proof, _root(other))
    elif kind == "truncate" and proof:
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, proof[:cut], root)
    elif kind == "extend":
        extra = data.draw(st.lists(st.sampled_from([root, EMPTY_ROOT, leaf]), min_size=1))
        at = data.draw(st.sampled_from(["front", "back"]))
        longer = [*extra, *proof] if at == "front" else [*proof, *extra]
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, longer, root)
    elif kind == "leaf":
        other = data.draw(st.integers(0, MAX - 1).filter(lambda i: i != index))
        with pytest.raises(VerificationError):
            verify_inclusion(hashes[other], index, size, proof, root)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), second=sizes)
def test_consistency_proofs_equal_the_reference_and_verify(
    data: st.DataObject, second: int
) -> None:
    first = data.draw(st.integers(1, second), label="first")
    proof = _consistency(first, second)
    assert proof == reference_consistency_proof(_tree(MAX)[0][:second], first)
    verify_consistency(first, second, _root(first), _root(second), proof)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), second=st.integers(min_value=2, max_value=MAX))
def test_altered_consistency_proofs_fail(data: st.DataObject, second: int) -> None:
    first = data.draw(st.integers(1, second - 1), label="first")
    proof = _consistency(first, second)
    r1, r2 = _root(first), _root(second)
    kind = data.draw(st.sampled_from(["flip", "first", "second", "truncate", "extend", "root"]))
    if kind == "flip":
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        with pytest.raises(VerificationError):
            verify_consistency(first, second, r1, r2, _flip(proof, position, bit))
    elif kind == "first":
        other = data.draw(st.integers(1, second - 1).filter(lambda f: f != first))
        with pytest.raises(VerificationError):
            verify_consistency(other, second, _root(other), r2, proof)
    elif kind == "second":
        other = data.draw(st.integers(first + 1, MAX).filter(lambda s: s != second))
        with pytest.raises(VerificationError):
            verify_consistency(first, other, r1, _root(other), proof)
    elif kind == "truncate":
        cut = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(VerificationError):
            verify_consistency(first, second, r1, r2, proof[:cut])
    elif kind == "extend":
        extra = data.draw(st.lists(st.sampled_from([r1, r2, EMPTY_ROOT, proof[0]]), min_size=1))
        at = data.draw(st.sampled_from(["front", "back"]))
        longer = [*extra, *proof] if at == "front" else [*proof, *extra]
        with pytest.raises(VerificationError):
            verify_consistency(first, second, r1, r2, longer)
    elif kind == "root":
        wrong = data.draw(st.sampled_from([EMPTY_ROOT, _root(second - 1), _tree(MAX)[0][0]]))
        if wrong != r1:
            with pytest.raises(VerificationError):
                verify_consistency(first, second, wrong, r2, proof)
        if wrong != r2:
            with pytest.raises(VerificationError):
                verify_consistency(first, second, r1, wrong, proof)
