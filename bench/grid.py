"""The Legal Metrology Grid (issue #6): prints one JSON line per figure.

    python bench/grid.py            # 10,000 certificate changes, 2,000 look-ups, 10 MB documents
    python bench/grid.py --quick    # the same code: 300 changes, 300 look-ups, under a minute

1. Three member-state nodes (DE = A, FR = B, NL = C) as ``metrocloud serve`` processes on
   loopback in a temporary directory, built with the real command line (``init``, ``grid
   init-anchor``, ``identity``, ``admit``, ``join``, ``peers add``), outbox every 0.1 s.
2. **Replication lag.** A's notified body issues certificates for B's manufacturer, then makes
   N certificate changes (suspend, reinstate, revise, in turn per certificate) over the API,
   one request per change (there is no bulk change) from a few concurrent clients. The lag of
   a change on a receiver is the time from its append to A's log (``ledger_entries.
   appended_at``, just before A's commit) until the benchmark first sees its
   ``grid_replicated`` row in the receiver's database (read-only SQLite, polled every 20 ms:
   one indexed query per node, the resolution of the figure). A change counts as replicated
   when it is on B *and* C. Printed: p50, p99, max (no target was given) and the replication
   throughput (changes / s from A's first append until the last change is on both). Then the
   certificates' status and revision on B and C must equal A's, over the API. Last, the lag
   on an idle grid: changes one at a time, each once the one before is on B and C.
3. **Cross-border look-up.** C's authority GETs ``/api/v1/instruments/{id}`` of instruments
   homed on B (routed to B, signed node to node, answered with ``home_node``), on a few
   keep-alive connections; beside it the same requests to B by B's authority: p50, p99, req/s
   and the ratio of the two p99.
4. **Exchange.** ``seal_document`` and ``open_envelope(...).decrypt`` of 10 MB in memory
   against raw AES-256-GCM of the same bytes in the same rounds (target: 0.5 of raw, each);
   then upload + download through node A's exchange API (``POST /exchange/messages``, ``GET
   .../content``, sealing and opening included for end to end), MB/s, no target.
5. Peak RSS (VmHWM) of each node process.

Noise: the machine's cores are shared. Each phase reports the cores the nodes used and the
cores every other process used meanwhile (``*_others_cores``; 0.2 or more: disturbed), and
the CPU time of each node per change or look-up (independent of the share it got).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid_exchange import http_exchange, in_memory
from _grid_nodes import CpuWatch, GridNode, build_grid, parallel, read_db, stop_all
from _grid_replication import POLL_S, burst, check_states, paced
from metrocloud.trust.keys import PrivateKey

ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
SW = {"name": "FW", "version": "1.0.0", "algorithm": "sha256", "checksum": "ab" * 32}
NOISE_CORES = 0.2


def emit(name: str, value: float, unit: str, target: float | None, better: str, scale: str) -> None:
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value, 4),
                "unit": unit,
                "target": target,
                "better": better,
                "scale": scale,
            }
        ),
        flush=True,
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def eventually(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def noise(prefix: str, watch: CpuWatch, scale: str) -> None:
    """The noise of a phase: cores the nodes used, cores everything else used."""
    emit(f"{prefix}_nodes_cores", watch.nodes_cores, "cores", None, "lower", scale)
    emit(f"{prefix}_others_cores", watch.others_cores, "cores", NOISE_CORES, "lower", scale)
    if watch.others_cores >= NOISE_CORES:
        say(f"  warning: disturbed, other processes used {watch.others_cores:.2f} cores")


# -- set-up ---------------------------------------------------------------------------------


def setup_parties(a: GridNode, b: GridNode, c: GridNode) -> dict[str, PrivateKey]:
    """A: notified body and manufacturer (with signing keys, for the exchange); B: the
    manufacturer holding A's certificates, an authority; C: an authority."""
    keys = {"a.nb": PrivateKey.generate(), "a.man": PrivateKey.generate()}
    spki = {k: v.public_key.to_spki_b64() for k, v in keys.items()}
    a.admit("nb", "PTB", "notified_body", "0102", spki["a.nb"])
    a.admit("man", "Hansa Zähler GmbH", "manufacturer", None, spki["a.man"])
    b.admit("man", "Compteurs Bleus SA", "manufacturer")
    b.admit("auth", "DGE Métrologie", "authority")
    c.admit("auth", "Agentschap Telecom", "authority")
    with a.client("nb") as http:
        eventually(
            "B's manufacturer replicated to A",
            lambda: http.get(f"/parties/{b.parties['man']}").status_code == 200,
            120,
        )
    return keys


def issue_certificates(a: GridNode, holder: str, count: int) -> list[str]:
    ids = []
    with a.client("nb") as http:
        for i in range(count):
            r = http.post(
                "/certificates",
                json={
                    "number": f"DE-0102-26-{i + 1:04d}",
                    "holder_id": holder,
                    "category": "MI-003",
                    "model": "EM-340",
                    "accuracy_class": "B",
                    "software": [SW],
                },
            )
            if r.status_code != 201:
                raise RuntimeError(f"certificate {i}: {r.status_code} {r.text[:300]}")
            ids.append(r.json()["certificate"]["id"])
    return ids


def count_certificates(node: GridNode, nb: str) -> int:
    return int(
        read_db(node, "SELECT count(*) FROM certificates WHERE notified_body_id = ?", (nb,))[0][0]
    )


def register_fleet(b: GridNode, certificate: str, count: int) -> list[str]:
    ids: list[str] = []
    with b.client("man", timeout=300) as http:
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            body = {
                "instruments": [
                    {
                        "serial": f"FR{start + i:08d}",
                        "certificate_id": certificate,
                        "region": "FR10",
                        "device_keys": [
                            base64.b64encode(ED25519_SPKI_PREFIX + os.urandom(32)).decode()
                        ],
                    }
                    for i in range(n)
                ]
            }
            r = http.post("/instruments", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"registration: {r.status_code} {r.text[:300]}")
            ids += [x["id"] for x in r.json()["instruments"]]
    return ids


# -- replication ----------------------------------------------------------------------------


def replication(
    nodes: Sequence[GridNode], certs: list[str], args: argparse.Namespace, spare: str
) -> None:
    scale = f"{args.changes} certificate changes on {len(certs)} certificates, 3 nodes"
    say(f"replication: {args.changes:,} changes from {args.clients} clients ...")
    r = burst(nodes, certs, args.changes, args.clients, args.timeout)
    for country in r.seen:
        seen, logged = r.seen[country], r.logged[country]
        say(
            f"  on {country}: p50 {pct(seen, 0.5):,.0f} ms, p99 {pct(seen, 0.99):,.0f} ms seen; "
            f"by its log's append times p50 {pct(logged, 0.5):,.0f} ms, p99 "
            f"{pct(logged, 0.99):,.0f} ms"
        )
    say(
        f"  A committed {r.origin_per_s:,.0f} changes/s; {r.polls:,} polls of each receiver "
        f"(every {POLL_S * 1000:.0f} ms)"
    )
    emit("replication_lag_p50_ms", statistics.median(r.lags), "ms", None, "lower", scale)
    emit("replication_lag_p99_ms", pct(r.lags, 0.99), "ms", None, "lower", scale)
    emit("replication_lag_max_ms", max(r.lags), "ms", None, "lower", scale)
    emit("replication_changes_per_s", r.replicated_per_s, "changes/s", None, "higher", scale)
    emit("origin_changes_per_s", r.origin_per_s, "changes/s", None, "higher", scale)
    noise("replication", r.watch, scale)
    for n in nodes:  # CPU time per change, whatever share of the cores a node got
        cpu_ms = r.watch.cpu_s[n.pid] * 1000 / r.changes
        name = f"replication_cpu_ms_per_change_{n.country.lower()}"
        emit(name, cpu_ms, "ms", None, "lower", scale)
    say(f"  B and C hold A's {check_states(nodes)} certificates with its status and revision")

    scale = f"{args.paced} changes one at a time, 3 nodes"
    say(f"replication, paced: {args.paced} changes, each once the last is on B and C ...")
    lags = paced(nodes, spare, args.paced)
    emit("replication_lag_paced_p50_ms", statistics.median(lags), "ms", None, "lower", scale)
    emit("replication_lag_paced_p99_ms", pct(lags, 0.99), "ms", None, "lower", scale)
    emit("replication_lag_paced_max_ms", max(lags), "ms", None, "lower", scale)


# -- look-ups -------------------------------------------------------------------------------


def lookups(
    node: GridNode, who: str, ids: list[str], count: int, connections: int, home: str | None
) -> tuple[list[float], float]:
    """``count`` GETs of random ``ids`` on ``connections`` keep-alive clients: latencies
    (ms) and the wall time. ``home``: the node id every answer must name (routed there)."""
    rng = random.Random(6)
    plan = [rng.choice(ids) for _ in range(count)]
    samples: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []

    def worker(k: int) -> None:
        try:
            with node.client(who) as http:
                for iid in plan[k::connections]:
                    t0 = time.perf_counter()
                    r = http.get(f"/instruments/{iid}")
                    samples[k].append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"GET {iid} on {node.country}: {r.status_code}")
                    if home is not None and r.json().get("home_node") != home:
                        raise RuntimeError(f"GET {iid} on {node.country} was not routed home")
        except Exception as exc:
            errors.append(repr(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"look-ups failed: {errors[:3]}")
    return [x for s in samples for x in s], wall


def lookup_phase(nodes: Sequence[GridNode], ids: list[str], count: int, connections: int) -> None:
    _, b, c = nodes
    scale = f"{count} GETs on {connections} connections, {len(ids)} instruments on B"
    figures = {}
    for label, node, home in (("cross_border", c, b.node_id), ("local", b, None)):
        lookups(node, "auth", ids, 4 * connections, connections, home)  # warm-up
        with CpuWatch([n.pid for n in nodes]) as watch:
            samples, wall = lookups(node, "auth", ids, count, connections, home)
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        figures[label] = (p99, count / wall)
        say(f"look-up {label} ({node.country} -> B): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        emit(f"lookup_{label}_p50_ms", p50, "ms", None, "lower", scale)
        emit(f"lookup_{label}_p99_ms", p99, "ms", None, "lower", scale)
        emit(f"lookup_{label}_req_per_s", count / wall, "req/s", None, "higher", scale)
        noise(f"lookup_{label}", watch, scale)
        for n in (c, b) if label == "cross_border" else (b,):
            cpu_ms = watch.cpu_s[n.pid] * 1000 / count
            name = f"lookup_{label}_cpu_ms_per_req_{n.country.lower()}"
            emit(name, cpu_ms, "ms", None, "lower", scale)
    emit(
        "lookup_cross_border_over_local_p99",
        figures["cross_border"][0] / figures["local"][0],
        "ratio",
        None,
        "lower",
        scale,
    )
    emit(
        "lookup_cross_border_over_local_req_per_s",
        figures["cross_border"][1] / figures["local"][1],
        "ratio",
        None,
        "higher",
        scale,
    )


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path, nodes: list[GridNode]) -> None:
    t_start = time.monotonic()
    say(f"building three nodes in {root} ...")
    nodes.extend(build_grid(root, ["DE", "FR", "NL"]))
    a, b, c = nodes
    parallel(lambda n: n.start(), nodes)
    say("  " + ", ".join(f"{n.country} {n.url} ({n.node_id})" for n in nodes))
    keys = setup_parties(a, b, c)
    *certs, spare = issue_certificates(a, b.parties["man"], args.certificates + 1)
    eventually(
        "the certificates on B and C",
        lambda: all(count_certificates(n, a.parties["nb"]) == len(certs) + 1 for n in (b, c)),
        180,
    )
    ids = register_fleet(b, certs[0], args.instruments)
    say(f"  {len(certs) + 1} certificates on every node, {len(ids):,} instruments on B")

    replication(nodes, certs, args, spare)
    lookup_phase(nodes, ids, args.lookups, args.connections)

    size = args.document_mb * 1_000_000
    scale = f"{args.document_mb} MB document, {args.rounds} rounds"
    say(f"exchange in memory: {scale} ...")
    with CpuWatch([n.pid for n in nodes]) as watch:
        mem = in_memory(size, args.rounds, say if args.verbose else lambda _: None)
    say(
        f"  seal {mem.seal_mb_s:,.0f} MB/s (raw AES-GCM {mem.raw_encrypt_mb_s:,.0f}), open "
        f"{mem.open_mb_s:,.0f} MB/s (raw {mem.raw_decrypt_mb_s:,.0f})"
    )
    emit("exchange_seal_over_raw_aesgcm", mem.seal_ratio, "ratio", 0.5, "higher", scale)
    emit("exchange_open_over_raw_aesgcm", mem.open_ratio, "ratio", 0.5, "higher", scale)
    emit("exchange_seal_mb_per_s", mem.seal_mb_s, "MB/s", None, "higher", scale)
    emit("exchange_open_mb_per_s", mem.open_mb_s, "MB/s", None, "higher", scale)
    emit("raw_aesgcm_encrypt_mb_per_s", mem.raw_encrypt_mb_s, "MB/s", None, "higher", scale)
    emit("raw_aesgcm_decrypt_mb_per_s", mem.raw_decrypt_mb_s, "MB/s", None, "higher", scale)
    noise("exchange_memory", watch, scale)

    scale = f"{args.document_mb} MB document, {args.http_rounds} rounds, one node"
    say(f"exchange over HTTP through A: {scale} ...")
    with a.client("man", timeout=300) as man, a.client("nb", timeout=300) as nb:
        web = http_exchange(
            man,
            a.parties["man"],
            keys["a.man"],
            nb,
            a.parties["nb"],
            keys["a.nb"],
            size=size,
            rounds=args.http_rounds,
            say=say,
        )
    emit("exchange_http_upload_mb_per_s", web.upload_mb_s, "MB/s", None, "higher", scale)
    emit("exchange_http_download_mb_per_s", web.download_mb_s, "MB/s", None, "higher", scale)
    emit("exchange_http_end_to_end_mb_per_s", web.end_to_end_mb_s, "MB/s", None, "higher", scale)

    for n in nodes:
        emit(
            f"node_peak_rss_{n.country.lower()}",
            n.peak_rss_mib(),
            "MiB",
            None,
            "lower",
            "the whole run",
        )
    say(f"done in {time.monotonic() - t_start:,.0f} s")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scale, under a minute")
    ap.add_argument("--changes", type=int, help="certificate changes (10,000; quick 300)")
    ap.add_argument("--certificates", type=int, help="certificates changed (200; quick 20)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent change clients")
    ap.add_argument("--paced", type=int, help="changes one at a time (100; quick 10)")
    ap.add_argument("--instruments", type=int, help="instruments on B (10,000; quick 500)")
    ap.add_argument("--lookups", type=int, help="GETs per side (2,000; quick 300)")
    ap.add_argument("--connections", type=int, default=4, help="keep-alive look-up clients")
    ap.add_argument("--document-mb", type=int, default=10, help="document size (MB)")
    ap.add_argument("--rounds", type=int, help="in-memory exchange rounds (200; quick 30)")
    ap.add_argument("--http-rounds", type=int, help="HTTP exchange rounds (10; quick 3)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for replication")
    ap.add_argument("--verbose", action="store_true", help="every in-memory round on stderr")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir in /tmp")
    args = ap.parse_args()
    q = args.quick
    args.changes = args.changes or (300 if q else 10_000)
    args.certificates = args.certificates or (20 if q else 200)
    args.paced = args.paced or (10 if q else 100)
    args.instruments = args.instruments or (500 if q else 10_000)
    args.lookups = args.lookups or (300 if q else 2_000)
    args.rounds = args.rounds or (30 if q else 200)
    args.http_rounds = args.http_rounds or (3 if q else 10)
    args.timeout = args.timeout or (120 if q else 1200)
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="metrocloud-grid-bench-", dir=args.workdir))
    nodes: list[GridNode] = []
    try:
        run(args, root, nodes)
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception:
        for n in nodes:  # what the nodes said, before the directory goes
            say(f"--- the {n.country} node's log (tail) ---\n{n.tail()}")
        raise
    finally:
        stop_all(nodes)
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
