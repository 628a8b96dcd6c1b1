"""Replication lag of certificate changes across the grid (bench/grid.py, issue #6).

A change is made on A over the API; its lag on a receiver runs from its append to A's log
(``ledger_entries.appended_at``, A's clock, just before A commits) until :class:`Watcher`
first sees its ``grid_replicated`` row in the receiver's database (read-only SQLite, one
indexed query per receiver every ``POLL_S``; the same machine's clock). Changes are matched
across nodes by the SHA-256 of the signed envelope (``grid_replicated.digest``).

* :func:`burst`: N changes as fast as a few concurrent clients make them (the lag then is
  mostly the queue behind the receivers), the replication throughput, and for reference the
  same lag by the receivers' own log append times (no polling in it);
* :func:`paced`: one change at a time, the next once the last is on every receiver (the
  lag of a change on an idle grid: outbox interval, delivery, application).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from _grid_nodes import CpuWatch, GridNode, read_db
from metrocloud.trust.canonical import canonical_json

__all__ = ["POLL_S", "Burst", "Watcher", "burst", "check_states", "paced"]

POLL_S = 0.02
_CYCLE = ("suspend", "reinstate", "revise")


def _digest(entry: bytes) -> str:
    return hashlib.sha256(canonical_json(json.loads(entry))).hexdigest()


def _wait(what: str, check: Callable[[], bool], timeout: float, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


class Watcher:
    """First sight of each ``grid_replicated`` row from ``origin`` on each receiver."""

    def __init__(self, receivers: Sequence[GridNode], origin: str) -> None:
        self.receivers = list(receivers)
        self.origin = origin
        self.seen: dict[str, dict[str, float]] = {n.country: {} for n in receivers}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        conns = {
            n.country: sqlite3.connect(
                f"file:{n.data_dir / 'registry.sqlite3'}?mode=ro", uri=True, timeout=30
            )
            for n in self.receivers
        }
        last = dict.fromkeys(conns, 0)
        try:
            while not self._stop.is_set():
                for country, db in conns.items():
                    rows = db.execute(
                        "SELECT rowid, digest FROM grid_replicated WHERE rowid > ? "
                        "AND origin_node_id = ? ORDER BY rowid",
                        (last[country], self.origin),
                    ).fetchall()
                    now = time.time()
                    seen = self.seen[country]
                    for rowid, digest in rows:
                        seen.setdefault(digest, now)
                        last[country] = rowid
                self.polls += 1
                self._stop.wait(POLL_S)
        finally:
            for db in conns.values():
                db.close()

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def has(self, digests: set[str]) -> bool:
        # membership tests only: the watcher thread may be adding to the dicts meanwhile
        return all(all(d in seen for d in digests) for seen in self.seen.values())

    def lag_ms(self, digest: str, at: float) -> float:
        """Until ``digest`` (appended on the origin at ``at``) was on every receiver."""
        return (max(seen[digest] for seen in self.seen.values()) - at) * 1000


def _change(http: Any, cert: str, step: int, note: str) -> int:
    action = _CYCLE[step % 3]
    body: dict[str, Any] = {"reason": f"benchmark {note} ({action})"}
    if action == "revise":
        body["model"] = f"EM-340 rev {step}"
    r = http.post(f"/certificates/{cert}/{action}", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{action} {cert}: {r.status_code} {r.text[:300]}")
    return int(r.json()["leaf_index"])


def _client(a: GridNode, certs: list[str], count: int, out: list[int], errors: list[str]) -> None:
    step = dict.fromkeys(certs, 0)
    try:
        with a.client("nb") as http:
            for i in range(count):
                cert = certs[i % len(certs)]
                out.append(_change(http, cert, step[cert], f"change {i}"))
                step[cert] += 1
    except Exception as exc:  # reported by the caller, after the other clients finished
        errors.append(repr(exc))


def _drive(a: GridNode, certs: list[str], changes: int, clients: int) -> list[int]:
    """``changes`` on A from ``clients`` threads, each on its own certificates (each one
    starts active: suspend, reinstate, revise, in turn): the leaf indexes."""
    clients = max(1, min(clients, len(certs)))  # each client owns at least one certificate
    results: list[list[int]] = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_client,
            args=(
                a,
                certs[k::clients],
                changes // clients + (k < changes % clients),
                results[k],
                errors,
            ),
        )
        for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"certificate changes failed: {errors[:3]}")
    return sorted(leaf for r in results for leaf in r)


@dataclass(frozen=True, kw_only=True)
class Burst:
    changes: int
    #: per change, ms until on B and on C
    lags: list[float]
    #: per receiver: ms until seen there, and by its log's append time
    seen: dict[str, list[float]]
    logged: dict[str, list[float]]
    #: changes per second from A's first append until the last change is on both
    replicated_per_s: float
    #: changes per second committed on A (the offered load)
    origin_per_s: float
    watch: CpuWatch
    polls: int


def burst(
    nodes: Sequence[GridNode], certs: list[str], changes: int, clients: int, timeout: float
) -> Burst:
    a, b, c = nodes
    with Watcher([b, c], a.node_id) as watcher, CpuWatch([n.pid for n in nodes]) as watch:
        t0 = time.time()
        leaves = _drive(a, certs, changes, clients)
        t_sent = time.time()
        chosen = set(leaves)
        origin = {
            _digest(entry): ms / 1000
            for idx, entry, ms in read_db(
                a,
                "SELECT idx, entry, appended_at FROM ledger_entries WHERE idx BETWEEN ? AND ?",
                (leaves[0], leaves[-1]),
            )
            if idx in chosen
        }
        wanted = set(origin)
        _wait("every change on B and C", lambda: watcher.has(wanted), timeout)
    seen = {
        n.country: [(watcher.seen[n.country][d] - at) * 1000 for d, at in origin.items()]
        for n in (b, c)
    }
    logged = {}
    for n in (b, c):
        times = dict(
            read_db(
                n,
                "SELECT r.digest, e.appended_at FROM grid_replicated r JOIN ledger_entries e "
                "ON e.idx = r.leaf_index WHERE r.origin_node_id = ?",
                (a.node_id,),
            )
        )
        logged[n.country] = [times[d] - at * 1000 for d, at in origin.items()]
    last = max(max(s[d] for s in watcher.seen.values()) for d in origin)
    return Burst(
        changes=len(origin),
        lags=[watcher.lag_ms(d, at) for d, at in origin.items()],
        seen=seen,
        logged=logged,
        replicated_per_s=len(origin) / (last - min(origin.values())),
        origin_per_s=len(origin) / (t_sent - t0),
        watch=watch,
        polls=watcher.polls,
    )


def paced(nodes: Sequence[GridNode], cert: str, count: int) -> list[float]:
    """``count`` changes of ``cert`` one at a time, each once the last is on B and C: the
    lag of each (ms)."""
    a, b, c = nodes
    lags = []
    with Watcher([b, c], a.node_id) as watcher, a.client("nb") as http:
        for i in range(count):
            leaf = _change(http, cert, i, f"paced change {i}")
            entry, ms = read_db(
                a, "SELECT entry, appended_at FROM ledger_entries WHERE idx = ?", (leaf,)
            )[0]
            digest = _digest(entry)
            _wait(f"paced change {i} on B and C", partial(watcher.has, {digest}), 60, 0.01)
            lags.append(watcher.lag_ms(digest, ms / 1000))
    return lags


def _states(node: GridNode, who: str, nb: str) -> dict[str, tuple[str, int]]:
    """Status and revision of ``nb``'s certificates on ``node``, over its API."""
    states: dict[str, tuple[str, int]] = {}
    cursor = None
    with node.client(who) as http:
        while True:
            params: dict[str, Any] = {"notified_body_id": nb, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/certificates", params=params).json()
            for x in page["items"]:
                states[x["id"]] = (x["status"], x["revision"])
            cursor = page["next_cursor"]
            if not cursor:
                return states


def check_states(nodes: Sequence[GridNode]) -> int:
    """Every certificate of A's notified body has on B and C the status and revision it has
    on A (over the API); returns how many certificates."""
    a, b, c = nodes
    want = _states(a, "nb", a.parties["nb"])
    for n in (b, c):
        got = _states(n, "auth", a.parties["nb"])
        if got != want:
            bad = [k for k in want if got.get(k) != want[k]][:3]
            raise RuntimeError(f"{n.country} differs from A on {bad}: {[got.get(k) for k in bad]}")
    return len(want)
