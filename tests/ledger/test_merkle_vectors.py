"""Golden tests: the RFC 6962 / RFC 9162 reference vectors of the Go implementations.

Inputs, roots and proofs are those of transparency-dev/merkle (``proof/verify_test.go``; the
same data as certificate-transparency-go and Trillian). There, inclusion vectors number the
leaf from 1; here ``index`` is the 0-based RFC leaf index.
"""

from __future__ import annotations

import hashlib

import pytest

from metrocloud.domain.errors import VerificationError
from metrocloud.ledger import merkle, subtrees
from metrocloud.ledger.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    reference_consistency_proof,
    reference_inclusion_path,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

from ._support import all_nodes

INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAVES = [leaf_hash(d) for d in INPUTS]

ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (first, second, proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def _root(n: int) -> bytes:
    return bytes.fromhex(ROOTS[n])


def test_hash_definitions_are_rfc_9162_section_2_1_1() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT == _root(0)
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize("n", range(9))
def test_roots_of_the_reference_tree(n: int) -> None:
    assert root_from_leaves(LEAVES[:n]).hex() == ROOTS[n]
    if n:
        assert subtrees.fold(subtrees.root_keys(n), all_nodes(LEAVES[:n])).hex() == ROOTS[n]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    assert reference_inclusion_path(LEAVES[:size], index) == proof
    plan = subtrees.inclusion_path_keys(index, size)
    assert subtrees.assemble(plan, all_nodes(LEAVES[:size])) == proof
    verify_inclusion(LEAVES[index], index, size, proof, _root(size))


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_consistency_vectors(first: int, second: int, path: list[str]) -> None:
    proof = [bytes.fromhex(h) for h in path]
    assert reference_consistency_proof(LEAVES[:second], first) == proof
    plan = subtrees.consistency_proof_keys(first, second)
    assert subtrees.assemble(plan, all_nodes(LEAVES[:second])) == proof
    verify_consistency(first, second, _root(first), _root(second), proof)


def test_every_proof_of_the_reference_tree_verifies() -> None:
    for size in range(1, 9):
        nodes = all_nodes(LEAVES[:size])
        for index in range(size):
            proof = subtrees.assemble(subtrees.inclusion_path_keys(index, size), nodes)
            verify_inclusion(LEAVES[index], index, size, proof, _root(size))
        for first in range(1, size + 1):
            proof = subtrees.assemble(subtrees.consistency_proof_keys(first, size), nodes)
            verify_consistency(first, size, _root(first), _root(size), proof)


def test_corrupted_reference_inclusion_proofs_fail() -> None:
    """The probes of the Go tests (corruptInclusionProof)."""
    index, size, path = INCLUSION[2]
    proof = [bytes.fromhex(h) for h in path]
    leaf, root = LEAVES[index], _root(size)
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes = [
        (leaf, index - 1, size, proof, root),
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (b"WrongLeaf", index, size, proof, root),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, some),
        (leaf, index, size, [*proof, b""], root),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [b"", *proof], root),
        (leaf, index, size, [root, *proof], root),
        (leaf, index, size, proof[:-1], root),
        (leaf, index, size, [proof[0], some, *proof[1:]], root),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((leaf, index, size, flipped, root))
    for probe in probes:
        with pytest.raises(VerificationError):
            verify_inclusion(*probe)


def test_corrupted_reference_consistency_proofs_fail() -> None:
    """The probes of the Go tests (corruptConsistencyProof)."""
    first, second, path = CONSISTENCY[2]
    proof = [bytes.fromhex(h) for h in path]
    r1, r2 = _root(first), _root(second)
    probes = [
        (first - 1, second, r1, r2, proof),
        (first + 1, second, r1, r2, proof),
        (first ^ 2, second, r1, r2, proof),
        (first, second * 2, r1, r2, proof),
        (first, second // 2, r1, r2, proof),
        (first, second, b"WrongRoot", r2, proof),
        (first, second, r1, b"WrongRoot", proof),
        (first, second, r2, r1, proof),
        (first, second, r1, r2, []),
        (first, second, r1, r2, [*proof, b""]),
        (first, second, r1, r2, [*proof, r1]),
        (first, second, r1, r2, [*proof, r2]),
        (first, second, r1, r2, [b"", *proof]),
        (first, second, r1, r2, [r1, *proof]),
        (first, second, r1, r2, [r2, *proof]),
        (first, second, r1, r2, [proof[0], *proof]),
        (first, second, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, r1, r2, flipped))
    for probe in probes:
        with pytest.raises(VerificationError):
            verify_consistency(*probe)


def test_trivial_consistency_cases() -> None:
    """Outside 0 < first < second the RFC defines no proof; only empty proofs are accepted."""
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, _root(5), [])
    verify_consistency(3, 3, _root(3), _root(3), [])
    with pytest.raises(VerificationError, match="expected 0, got 1"):
        verify_consistency(3, 3, _root(3), _root(3), [EMPTY_ROOT])
    with pytest.raises(VerificationError, match="expected 0, got 1"):
        verify_consistency(0, 1, EMPTY_ROOT, _root(1), [EMPTY_ROOT])
    with pytest.raises(VerificationError):
        verify_consistency(3, 3, _root(3), _root(4), [])
    with pytest.raises(VerificationError):
        verify_consistency(0, 4, _root(1), _root(4), [])
    with pytest.raises(VerificationError, match="first <= second"):
        verify_consistency(2, 1, _root(2), _root(1), [])


def test_messages_carry_evidence_and_cite_the_rfc() -> None:
    index, size, path = INCLUSION[1]
    proof = [bytes.fromhex(h) for h in path]
    with pytest.raises(VerificationError) as info:
        verify_inclusion(LEAVES[index], index, size, proof[:2], _root(size))
    assert str(info.value) == (
        "inclusion proof has wrong length: expected 3, got 2 (RFC 9162 §2.1.3.2)"
    )
    assert info.value.rule == "RFC 9162 §2.1.3.2"
    with pytest.raises(VerificationError, match=r"yields root [0-9a-f]{64}, expected " + ROOTS[7]):
        verify_inclusion(LEAVES[index], index, size, proof, _root(7))
    with pytest.raises(VerificationError, match=r"not inside a tree of size 8"):
        verify_inclusion(LEAVES[0], 8, 8, proof, _root(8))
    with pytest.raises(VerificationError, match=r"element 1 has 31 bytes.*§2\.1\.3\.2"):
        verify_inclusion(LEAVES[0], 0, 8, [proof[0], proof[1][:31], proof[2]], _root(8))
    first, second, cpath = CONSISTENCY[2]
    cproof = [bytes.fromhex(h) for h in cpath]
    # element 2 enters both recomputed roots (RFC 9162 §2.1.4.2 step 6, fn == sn)
    with pytest.raises(VerificationError, match=r"yields old root .* says " + ROOTS[6]):
        verify_consistency(first, second, _root(6), _root(8), [cproof[0], cproof[1], cproof[0]])
    # element 1 enters only the new root
    with pytest.raises(VerificationError, match=r"yields new root .* says " + ROOTS[8]):
        verify_consistency(first, second, _root(6), _root(8), [cproof[0], cproof[0], cproof[2]])
    with pytest.raises(VerificationError, match=r"§2\.1\.4\.2"):
        verify_consistency(first, second, _root(6), _root(8), cproof[:2])


def test_proof_lengths_match_the_generated_proofs() -> None:
    for size in range(1, 70):
        for index in range(size):
            assert len(subtrees.inclusion_path_keys(index, size)) == (
                merkle.inclusion_proof_length(index, size)
            )
        for first in range(1, size):
            assert len(subtrees.consistency_proof_keys(first, size)) == (
                merkle.consistency_proof_length(first, size)
            )
