"""Ledger benchmarks on a SQLite file: append throughput and inclusion-proof latency.

The engine is configured like the platform's store (WAL, ``synchronous=NORMAL``); every batch
is one transaction that commits. Nothing here prints: the caller reports the figures.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from metrocloud.ledger import TransparencyLog, create_schema

__all__ = ["bench_append", "bench_inclusion"]

ENTRY_SIZE = 128  # bytes per entry, about a canonical-JSON statement digest record


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


@contextmanager
def _sqlite() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="metrocloud-ledger-bench-") as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}")
        event.listen(engine, "connect", _pragmas)
        with engine.begin() as conn:
            create_schema(conn)
        try:
            yield engine
        finally:
            engine.dispose()


def _entries(start: int, count: int, size: int) -> list[bytes]:
    pad = b"." * max(0, size - 24)
    return [b"statement %012d:" % i + pad for i in range(start, start + count)]


def _fill(engine: Engine, log: TransparencyLog, n: int, batch: int, entry_size: int) -> float:
    """Append ``n`` entries in batches; seconds spent in append + commit."""
    spent = 0.0
    for start in range(0, n, batch):
        entries = _entries(start, min(batch, n - start), entry_size)
        began = time.perf_counter()
        with engine.begin() as conn:
            log.append(conn, entries)
        spent += time.perf_counter() - began
    return spent


def bench_append(n: int, batch: int, *, entry_size: int = ENTRY_SIZE) -> float:
    """Appends per second: ``n`` entries in transactions of ``batch`` on a fresh SQLite file."""
    log = TransparencyLog(log_id="bench")
    with _sqlite() as engine:
        return n / _fill(engine, log, n, batch, entry_size)


def bench_inclusion(n: int, samples: int, *, seed: int = 9162) -> tuple[float, float]:
    """Median and p99 milliseconds of ``inclusion_proof`` at tree size ``n`` (random leaves)."""
    log = TransparencyLog(log_id="bench")
    rng = random.Random(seed)
    with _sqlite() as engine:
        _fill(engine, log, n, 10_000, ENTRY_SIZE)
        timings: list[float] = []
        with engine.connect() as conn:
            log.inclusion_proof(conn, 0, n)  # warm the statement cache
            for _ in range(samples):
                index = rng.randrange(n)
                began = time.perf_counter()
                log.inclusion_proof(conn, index, n)
                timings.append(time.perf_counter() - began)
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    return statistics.median(timings) * 1e3, p99 * 1e3
