"""The durable log on SQLite and PostgreSQL: appends, roots, proofs, heads, transactions."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.ledger import (
    EMPTY_ROOT,
    TransparencyLog,
    check_consistency_between,
    create_schema,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.ledger.merkle import (
    reference_consistency_proof,
    reference_inclusion_path,
    root_from_leaves,
)
from metrocloud.trust.keys import PrivateKey

from ._support import Clock, entry_bytes, leaf_hashes


def _fill(engine: Engine, log: TransparencyLog, batches: list[int], *, sign: bool = True) -> int:
    size = 0
    for batch in batches:
        with engine.begin() as conn:
            got = log.append(conn, [entry_bytes(i) for i in range(size, size + batch)])
            assert got == list(range(size, size + batch))
            size += batch
            if sign:
                log.sign_head(conn)
    return size


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    seen: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        seen.append((sql, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_empty_log(engine: Engine, log: TransparencyLog) -> None:
    with engine.begin() as conn:
        assert log.tree_size(conn) == 0
        assert log.root_hash(conn) == EMPTY_ROOT
        assert log.latest_head(conn) is None
        assert list(log.entries(conn, 0, 10)) == []
        assert log.append(conn, []) == []
        with pytest.raises(NotFound, match="has no entry 0: it holds 0"):
            log.entry(conn, 0)
        with pytest.raises(InvalidInput, match="tree size 1 asked of log"):
            log.inclusion_proof(conn, 0, 1)
        head = log.sign_head(conn)
        assert (head.tree_size, head.root_hash) == (0, EMPTY_ROOT)
        assert log.latest_head(conn) == head == log.head(conn, 0)


def test_append_stores_entries_in_order(engine: Engine, log: TransparencyLog) -> None:
    size = _fill(engine, log, [1, 5, 0, 17, 3], sign=False)
    with engine.begin() as conn:
        assert log.tree_size(conn) == size == 26
        assert log.entry(conn, 25) == entry_bytes(25)
        expected = [(i, entry_bytes(i)) for i in range(26)]
        assert list(log.entries(conn, 0, 26, chunk=4)) == expected
        assert list(log.entries(conn, 3, 100, chunk=7)) == expected[3:]
        assert list(log.entries(conn, 5, 5)) == []
        with pytest.raises(NotFound, match="has no entry 26: it holds 26"):
            log.entry(conn, 26)
        with pytest.raises(NotFound):
            log.entry(conn, -1)
        with pytest.raises(InvalidInput, match=r"0 <= start <= stop, got \[5, 4\)"):
            log.entries(conn, 5, 4)


def test_roots_and_proofs_equal_the_in_memory_reference(
    engine: Engine, log: TransparencyLog
) -> None:
    rng = random.Random(20240)
    batches = [rng.choice([1, 2, 3, 7, 16, 31, 64]) for _ in range(12)]
    size = _fill(engine, log, batches, sign=False)
    hashes = leaf_hashes(size)
    with engine.begin() as conn:
        for n in range(size + 1):
            assert log.root_hash(conn, n) == root_from_leaves(hashes[:n])
        assert log.root_hash(conn) == root_from_leaves(hashes)
        for _ in range(150):
            n = rng.randrange(1, size + 1)
            index = rng.randrange(n)
            proof = log.inclusion_proof(conn, index, n)
            assert proof == reference_inclusion_path(hashes[:n], index)
            first = rng.randrange(1, n + 1)
            assert log.consistency_proof(conn, first, n) == reference_consistency_proof(
                hashes[:n], first
            )


def test_proofs_between_all_pairs_of_heads(engine: Engine, log: TransparencyLog) -> None:
    _fill(engine, log, [1, 1, 2, 4, 5, 16, 3, 32, 1, 60])
    with engine.begin() as conn:
        heads = [log.head(conn, size) for size in (1, 2, 4, 8, 13, 29, 32, 64, 65, 125)]
        assert log.latest_head(conn) == heads[-1]
        for old, new in itertools.combinations_with_replacement(heads, 2):
            proof = log.consistency_proof(conn, old.tree_size, new.tree_size)
            verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
            check_consistency_between(old, new, proof, log.verifier)  # type: ignore[arg-type]
        for head in heads:
            head.verify(log.verifier)  # type: ignore[arg-type]
            for index in {0, head.tree_size // 2, head.tree_size - 1}:
                proof = log.inclusion_proof(conn, index, head.tree_size)
                leaf = leaf_hash(log.entry(conn, index))
                verify_inclusion(leaf, index, head.tree_size, proof, head.root_hash)


def test_invalid_proof_arguments_carry_evidence(engine: Engine, log: TransparencyLog) -> None:
    _fill(engine, log, [10], sign=False)
    with engine.begin() as conn:
        with pytest.raises(InvalidInput, match="leaf index 10 is not inside the tree of size 10"):
            log.inclusion_proof(conn, 10, 10)
        with pytest.raises(InvalidInput, match="leaf index -1"):
            log.inclusion_proof(conn, -1, 10)
        with pytest.raises(InvalidInput, match=r"at tree size 11 asked of log .* holds 10"):
            log.inclusion_proof(conn, 0, 11)
        with pytest.raises(InvalidInput, match="at tree size 11 asked"):
            log.consistency_proof(conn, 1, 11)
        with pytest.raises(InvalidInput, match=r"first=5, second=4 \(RFC 9162 §2\.1\.4\.1\)"):
            log.consistency_proof(conn, 5, 4)
        with pytest.raises(InvalidInput, match="first=0"):
            log.consistency_proof(conn, 0, 4)
        with pytest.raises(InvalidInput, match="root hash at tree size 12"):
            log.root_hash(conn, 12)
        assert log.consistency_proof(conn, 10, 10) == []


def test_sign_head_is_idempotent_and_monotonic(
    engine: Engine, log: TransparencyLog, clock: Clock
) -> None:
    _fill(engine, log, [3], sign=False)
    with engine.begin() as conn:
        first = log.sign_head(conn)
        assert log.sign_head(conn) == first
        log.append(conn, [b"x"])
        clock.now -= 10_000  # the clock jumps back
        second = log.sign_head(conn)
        assert second.tree_size == 4
        assert second.timestamp == first.timestamp
        with pytest.raises(NotFound, match="no signed tree head at size 2"):
            log.head(conn, 2)


def test_append_is_part_of_the_callers_transaction(engine: Engine, log: TransparencyLog) -> None:
    _fill(engine, log, [5], sign=False)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert log.append(conn, [b"a", b"b"]) == [5, 6]
        log.sign_head(conn)
        raise RuntimeError("the registry write failed")
    with engine.begin() as conn:
        assert log.tree_size(conn) == 5
        assert log.latest_head(conn) is None
        assert log.append(conn, [b"c"]) == [5]
        assert log.entry(conn, 5) == b"c"
        assert log.verify_storage(conn).ok


def test_append_reads_only_the_frontier(engine: Engine, log: TransparencyLog) -> None:
    _fill(engine, log, [1000, 23], sign=False)
    with engine.begin() as conn, _statements(engine) as seen:
        log.append(conn, [b"one", b"two"])
    selects = [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]
    assert len(seen) == 5, seen  # lock state, frontier, 2 executemany inserts, update state
    assert len(selects) == 2
    frontier_sql, frontier_params = selects[1]
    assert "ledger_nodes" in frontier_sql
    assert len(str(frontier_params).split(",")) <= 48  # bin(1023) has 10 one bits


def test_proofs_and_roots_are_one_node_query(engine: Engine, log: TransparencyLog) -> None:
    _fill(engine, log, [777], sign=False)
    with engine.begin() as conn:
        for call in (
            lambda: log.inclusion_proof(conn, 300, 777),
            lambda: log.consistency_proof(conn, 300, 777),
            lambda: log.root_hash(conn, 600),
        ):
            with _statements(engine) as seen:
                call()
            node_queries = [sql for sql, _ in seen if "ledger_nodes" in sql]
            assert len(node_queries) == 1
            assert len(seen) == 2  # plus the tree size


def test_input_validation(engine: Engine, key: PrivateKey, other_key: PrivateKey) -> None:
    with pytest.raises(InvalidInput, match="log_id must be a non-empty string"):
        TransparencyLog(log_id="")
    with pytest.raises(InvalidInput, match="does not match verifier key"):
        TransparencyLog(log_id="l", signer=key, verifier=other_key.public_key)
    reader = TransparencyLog(log_id="l")
    with engine.begin() as conn:
        with pytest.raises(InvalidInput, match="entry 1 is str"):
            reader.append(conn, [b"ok", "not bytes"])  # type: ignore[list-item]
        assert reader.tree_size(conn) == 0
        with pytest.raises(InvalidInput, match="without a signer"):
            reader.sign_head(conn)
        with pytest.raises(InvalidInput, match="needs a verifier"):
            reader.verify_storage(conn)
    verifier_only = TransparencyLog(log_id="l", verifier=key.public_key)
    assert verifier_only.verifier == key.public_key
    assert "key_id=" in repr(verifier_only)


def test_create_schema_is_idempotent_and_state_row_is_optional(engine: Engine) -> None:
    log = TransparencyLog(log_id="l")
    with engine.begin() as conn:
        create_schema(conn)
        conn.exec_driver_sql("DELETE FROM ledger_state")
        assert log.tree_size(conn) == 0
        assert log.append(conn, [b"a", b"b"]) == [0, 1]
        assert log.append(conn, [b"c"]) == [2]
        assert log.tree_size(conn) == 3
