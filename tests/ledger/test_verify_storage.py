"""verify_storage catches every kind of tampering; clients catch what it cannot: a rewrite."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, delete, update

from metrocloud.domain.errors import VerificationError
from metrocloud.ledger import (
    TransparencyLog,
    check_consistency_between,
    leaf_hash,
    sign_tree_head,
    storage,
)
from metrocloud.ledger.schema import (
    ledger_entries,
    ledger_heads,
    ledger_nodes,
    ledger_state,
    node_id,
)
from metrocloud.ledger.subtrees import extend
from metrocloud.trust.keys import PrivateKey

from ._support import entry_bytes

HEAD_SIZES = (1, 13, 64, 100, 120)


def _build(engine: Engine, log: TransparencyLog) -> None:
    size = 0
    for stop in HEAD_SIZES:
        with engine.begin() as conn:
            log.append(conn, [entry_bytes(i) for i in range(size, stop)])
            log.sign_head(conn)
        size = stop


def _report(engine: Engine, log: TransparencyLog) -> tuple[bool, tuple[str, ...]]:
    with engine.begin() as conn:
        report = log.verify_storage(conn)
    return report.ok, report.problems


def _set_node(conn: Connection, level: int, index: int, digest: bytes) -> None:
    conn.execute(
        update(ledger_nodes).where(ledger_nodes.c.id == node_id(level, index)).values(hash=digest)
    )


def test_an_intact_log_passes(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    calls: list[tuple[int, int]] = []
    with engine.begin() as conn:
        report = log.verify_storage(conn, progress=lambda done, total: calls.append((done, total)))
    assert report.ok, report.problems
    assert (report.tree_size, report.heads_checked, report.problems) == (120, 5, ())
    assert calls[-1] == (120, 120)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_a_changed_entry_is_caught(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(
            update(ledger_entries).where(ledger_entries.c.idx == 17).values(entry=b"forged")
        )
    ok, problems = _report(engine, log)
    assert not ok
    assert problems[0].startswith("entry 17: stored leaf hash ")
    assert "does not match the entry bytes (recomputed " in problems[0]
    # the consequences: every head covering entry 17, but no repeat for each ancestor node
    assert [p.split(" claims")[0] for p in problems[1:]] == [
        f"signed head at size {s}" for s in (64, 100, 120)
    ]


def test_a_changed_node_is_caught_once(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        _set_node(conn, 2, 3, b"\x00" * 32)
    ok, problems = _report(engine, log)
    assert not ok
    assert problems == (
        "subtree (level 2, index 3) over entries [12, 16): stored hash 000000000000… does not "
        f"match the entries (recomputed {_recomputed(engine, log, 2, 3)})",
    )


def _recomputed(engine: Engine, log: TransparencyLog, level: int, index: int) -> str:
    """The true hash of a subtree, as the report abbreviates it."""
    with engine.begin() as conn:
        stop = (index + 1) << level
        leaves = [leaf_hash(e) for _, e in log.entries(conn, index << level, stop)]
    run = extend(0, {}, leaves)
    return run[level][2][0][:6].hex() + "…"


def test_a_truncated_log_is_caught(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(delete(ledger_entries).where(ledger_entries.c.idx >= 100))
        doomed = [
            node_id(level, index)
            for level in range(8)
            for index in range(120 >> level)
            if (index + 1) << level > 100
        ]
        conn.execute(delete(ledger_nodes).where(ledger_nodes.c.id.in_(doomed)))
        conn.execute(update(ledger_state).values(tree_size=100))
    ok, problems = _report(engine, log)
    assert not ok
    assert problems == ("signed head at size 120 exceeds the log's 100 entries: log truncated",)


def test_a_truncation_that_forgot_the_state_row_is_caught(
    engine: Engine, log: TransparencyLog
) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(delete(ledger_entries).where(ledger_entries.c.idx >= 100))
    ok, problems = _report(engine, log)
    assert not ok
    assert "signed head at size 120 exceeds the log's 100 entries: log truncated" in problems
    assert "ledger_state.tree_size is 120 but the log holds 100 contiguous entries" in problems
    assert any("beyond the log's 100 entries" in p for p in problems)


def test_a_head_re_signed_with_another_key_is_caught(
    engine: Engine, log: TransparencyLog, other_key: PrivateKey
) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        genuine = log.head(conn, 64)
        forged = sign_tree_head(
            other_key,
            log_id=log.log_id,
            tree_size=64,
            root_hash=genuine.root_hash,
            timestamp=genuine.timestamp,
        )
        conn.execute(
            update(ledger_heads)
            .where(ledger_heads.c.tree_size == 64)
            .values(key_id=forged.key_id, signature=forged.signature)
        )
    ok, problems = _report(engine, log)
    assert not ok
    assert len(problems) == 1
    assert problems[0].startswith("signed head at size 64: tree head of log")
    assert f"names signing key {other_key.public_key.key_id!r}" in problems[0]


def test_a_forged_signature_under_the_right_key_id_is_caught(
    engine: Engine, log: TransparencyLog
) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(
            update(ledger_heads).where(ledger_heads.c.tree_size == 13).values(signature=b"\0" * 64)
        )
    ok, problems = _report(engine, log)
    assert not ok
    assert len(problems) == 1
    assert "signed head at size 13" in problems[0]
    assert "signature does not verify" in problems[0]


def test_missing_extra_and_gapped_rows_are_caught(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(delete(ledger_nodes).where(ledger_nodes.c.id == node_id(0, 5)))
        conn.execute(ledger_nodes.insert().values(id=node_id(3, 20), hash=b"\1" * 32))
    ok, problems = _report(engine, log)
    assert not ok
    assert problems == (
        "entry 5: stored leaf hash is missing from ledger_nodes",
        "ledger_nodes holds subtree (level 3, index 20) covering entries up to 167, beyond "
        "the log's 120 entries",
    )
    with engine.begin() as conn:
        conn.execute(delete(ledger_entries).where(ledger_entries.c.idx == 50))
    ok, problems = _report(engine, log)
    assert "entries are not contiguous: entry 50 is missing, the next stored one is 51" in problems


def test_problems_are_capped(engine: Engine, log: TransparencyLog) -> None:
    _build(engine, log)
    with engine.begin() as conn:
        conn.execute(update(ledger_nodes).where(ledger_nodes.c.id < 120).values(hash=b"\0" * 32))
        report = log.verify_storage(conn)
        assert not report.ok
        assert len(report.problems) == 101
        assert report.problems[-1] == "... and 20 more problems"


def test_a_consistently_rewritten_log_fools_itself_but_not_its_clients(
    engine: Engine, log: TransparencyLog, key: PrivateKey
) -> None:
    """Acceptance criterion: an operator with the REAL key rewrites history and recomputes
    every node and head. Its storage audit passes; the client that kept an old head does not."""
    _build(engine, log)
    with engine.begin() as conn:
        kept_by_client = log.head(conn, 64)  # fetched by a client before the rewrite
    with engine.begin() as conn:
        for idx in (3, 40):
            conn.execute(
                update(ledger_entries)
                .where(ledger_entries.c.idx == idx)
                .values(entry=b"rewritten history %d" % idx)
            )
        conn.execute(delete(ledger_nodes))
        leaves = [leaf_hash(e) for _, e in log.entries(conn, 0, 120)]
        conn.execute(
            ledger_nodes.insert(),
            [
                {"id": node_id(level, first + offset), "hash": digest}
                for level, first, run in extend(0, {}, leaves)
                for offset, digest in enumerate(run)
            ],
        )
        old_heads = [log.head(conn, size) for size in HEAD_SIZES]
        conn.execute(delete(ledger_heads))
        for old in old_heads:
            new = sign_tree_head(
                key,
                log_id=log.log_id,
                tree_size=old.tree_size,
                root_hash=log.root_hash(conn, old.tree_size),
                timestamp=old.timestamp,
            )
            storage.insert_head(conn, new)
    with engine.begin() as conn:
        report = log.verify_storage(conn)
        assert report.ok, report.problems
        assert report.heads_checked == len(HEAD_SIZES)
        new_head = log.latest_head(conn)
        assert new_head is not None
        new_head.verify(key.public_key)  # genuinely signed by the log's key
        proof = log.consistency_proof(conn, kept_by_client.tree_size, new_head.tree_size)
    with pytest.raises(VerificationError, match="not append-only between sizes 64 and 120"):
        check_consistency_between(kept_by_client, new_head, proof, key.public_key)
