"""Concurrent appends on PostgreSQL: the state row lock serializes them, no index repeats."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from metrocloud.ledger import TransparencyLog

pytestmark = pytest.mark.postgres


def test_a_second_transaction_waits_for_the_first(pg_engine: Engine, log: TransparencyLog) -> None:
    first_appended = threading.Event()
    order: list[str] = []

    def first() -> list[int]:
        with pg_engine.begin() as conn:
            got = log.append(conn, [b"a0", b"a1", b"a2"])
            first_appended.set()
            time.sleep(0.5)  # the second append is now blocked on the state row
            order.append("first commits")
            return got

    def second() -> list[int]:
        assert first_appended.wait(10)
        with pg_engine.begin() as conn:
            got = log.append(conn, [b"b0", b"b1"])
            order.append("second appended")
            return got

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(first), pool.submit(second)
        assert a.result(30) == [0, 1, 2]
        assert b.result(30) == [3, 4]
    assert order == ["first commits", "second appended"]
    with pg_engine.begin() as conn:
        assert [e for _, e in log.entries(conn, 0, 5)] == [b"a0", b"a1", b"a2", b"b0", b"b1"]
        assert log.verify_storage(conn).ok


def test_many_concurrent_appends_produce_no_duplicate_indexes(
    pg_engine: Engine, log: TransparencyLog
) -> None:
    def worker(w: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for round_ in range(6):
            batch = [b"w%d r%d e%d" % (w, round_, i) for i in range(1 + (w + round_) % 5)]
            with pg_engine.begin() as conn:
                out.extend(zip(log.append(conn, batch), batch, strict=True))
                if round_ % 2:
                    log.sign_head(conn)
        return out

    with ThreadPoolExecutor(6) as pool:
        results = [
            r for future in [pool.submit(worker, w) for w in range(6)] for r in future.result(60)
        ]
    indexes = sorted(i for i, _ in results)
    assert indexes == list(range(len(results)))
    with pg_engine.begin() as conn:
        assert log.tree_size(conn) == len(results)
        for index, entry in results:
            assert log.entry(conn, index) == entry
        report = log.verify_storage(conn)
        assert report.ok, report.problems
        assert report.heads_checked >= 1
