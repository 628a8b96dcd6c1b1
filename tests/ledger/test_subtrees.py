"""The two-phase proof planner and the append computation, against the in-memory oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput
from metrocloud.ledger import subtrees
from metrocloud.ledger.merkle import root_from_leaves
from metrocloud.ledger.schema import MAX_LEAVES, node_id, node_key

from ._support import all_nodes, leaf_hashes


def test_range_keys_decompose_aligned_ranges() -> None:
    assert subtrees.range_keys(0, 1) == ((0, 0),)
    assert subtrees.range_keys(0, 7) == ((2, 0), (1, 2), (0, 6))
    assert subtrees.range_keys(8, 13) == ((2, 2), (0, 12))
    assert subtrees.range_keys(16, 32) == ((4, 1),)
    hashes = leaf_hashes(40)
    nodes = all_nodes(hashes)
    for start, stop in [(0, 40), (32, 40), (32, 37), (8, 13), (24, 31)]:
        keys = subtrees.range_keys(start, stop)
        assert subtrees.fold(keys, nodes) == root_from_leaves(hashes[start:stop])


@pytest.mark.parametrize(("start", "stop"), [(1, 3), (4, 9), (3, 3), (5, 4), (-1, 2)])
def test_range_keys_reject_ranges_no_rfc_recursion_asks_for(start: int, stop: int) -> None:
    with pytest.raises(InvalidInput):
        subtrees.range_keys(start, stop)


def test_planner_rejects_out_of_range_arguments() -> None:
    with pytest.raises(InvalidInput, match="leaf index 5 is not inside a tree of size 5"):
        subtrees.inclusion_path_keys(5, 5)
    with pytest.raises(InvalidInput, match=r"0 < first <= second, got first=0"):
        subtrees.consistency_proof_keys(0, 5)
    with pytest.raises(InvalidInput, match=r"got first=6, second=5"):
        subtrees.consistency_proof_keys(6, 5)
    assert subtrees.consistency_proof_keys(5, 5) == ()
    assert subtrees.root_keys(0) == ()


def test_plan_keys_and_assemble() -> None:
    plan = subtrees.inclusion_path_keys(3, 7)
    assert plan == (((0, 2),), ((1, 0),), ((1, 2), (0, 6)))
    assert subtrees.plan_keys(plan) == {(0, 2), (1, 0), (1, 2), (0, 6)}
    with pytest.raises(KeyError):
        subtrees.assemble(plan, {})


def test_node_id_encoding() -> None:
    assert node_id(0, 17) == 17
    assert node_id(3, 5) == 3 * 2**48 + 5
    assert node_key(node_id(48, 0)) == (48, 0)
    assert node_key(node_id(0, MAX_LEAVES - 1)) == (0, MAX_LEAVES - 1)
    assert node_id(48, 0) < 2**63


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8))
def test_extend_completes_exactly_the_new_subtrees(sizes: list[int]) -> None:
    """Appending batches of any sizes yields every perfect subtree once, equal to the oracle."""
    total = sum(sizes)
    hashes = leaf_hashes(total)
    stored: dict[tuple[int, int], bytes] = {}
    size = 0
    for batch in sizes:
        frontier = {key: stored[key] for key in subtrees.root_keys(size)}
        for level, first, run in subtrees.extend(size, frontier, hashes[size : size + batch]):
            assert first == size >> level
            assert len(run) == ((size + batch) >> level) - (size >> level)
            for offset, digest in enumerate(run):
                assert (level, first + offset) not in stored
                stored[(level, first + offset)] = digest
        size += batch
    assert stored == all_nodes(hashes)
