"""Sender processes, the raw ceilings, and CPU accounting for the ingest benchmark.

Senders are separate processes (the node's cores are shared with them, as with any client
on the same machine), one thread per keep-alive HTTP connection, each connection sending its
own file's wire lines in requests of ``lines_per_request`` lines, one request at a time (a
key's batches therefore arrive in counter order). Request bodies are built before the start
signal; a sender checks that every line of every answer is ``accepted``.

The ceilings run the same signatures / batches in two processes (one per core), without a
node: ``verify`` calls ``cryptography``'s P-256 verify directly on the decoded payload and
signature bytes; ``pipeline`` runs metrocloud's ``split_wire`` + ``parse_payload`` +
``verify_batch`` on the wire lines.
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import re
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import orjson
import psutil
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["CeilingResult", "CpuWatch", "SendResult", "run_ceiling", "run_senders"]

URL_PATH = "/api/v1/ingest/batches"
_HEAD = re.compile(rb'\{"accepted":(\d+),"duplicate":(\d+),"rejected":(\d+),')
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- CPU accounting --------------------------------------------------------------------------


def _busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _thread_switches(pid: int) -> int:
    """Context switches of all threads of ``pid`` (/proc/PID/status counts the first only)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return 0
    for task in tasks:
        try:
            for line in (task / "status").read_text().splitlines():
                if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _tree_cpu_s(pid: int) -> tuple[float, int]:
    """CPU seconds and context switches of ``pid`` and its descendants."""
    total = 0.0
    switches = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        switches += _thread_switches(p.pid)
    return total, switches


@dataclass
class CpuWatch:
    """Cores used during a measurement: by the node's processes, by the benchmark's own
    processes (senders, ceilings, this one), and by everything else on the machine (noise)."""

    node_pid: int | None = None
    wall_s: float = 0.0
    node_cores: float = 0.0
    node_switches: int = 0
    own_cores: float = 0.0
    others_cores: float = 0.0
    _t0: float = 0.0
    _busy0: float = 0.0
    _node0: float = 0.0
    _switches0: int = 0
    _self0: float = 0.0
    #: CPU seconds of helper processes (they report their own), added before stop()
    helpers_s: float = 0.0

    def start(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._busy0 = _busy_s()
        self._node0, self._switches0 = _tree_cpu_s(self.node_pid) if self.node_pid else (0.0, 0)
        self._self0 = _cpu_s()
        return self

    def stop(self) -> CpuWatch:
        self.wall_s = time.monotonic() - self._t0
        busy = _busy_s() - self._busy0
        node_s, switches = _tree_cpu_s(self.node_pid) if self.node_pid else (0.0, 0)
        node = node_s - self._node0
        self.node_switches = switches - self._switches0
        own = _cpu_s() - self._self0 + self.helpers_s
        w = max(self.wall_s, 1e-9)
        self.node_cores = node / w
        self.own_cores = own / w
        self.others_cores = max(0.0, busy - node - own) / w
        return self

    def describe(self) -> str:
        return (
            f"{self.wall_s:.1f} s; cores: node {self.node_cores:.2f}, benchmark "
            f"{self.own_cores:.2f}, others {self.others_cores:.2f}"
        )


# -- senders ---------------------------------------------------------------------------------


@dataclass
class SendResult:
    batches: int = 0
    readings: int = 0
    requests: int = 0
    first_send: float = 0.0  #: time.monotonic() (system-wide on Linux)
    last_ack: float = 0.0
    cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _bodies(path: Path, per_request: int) -> list[tuple[bytes, int]]:
    lines = path.read_bytes().splitlines()
    return [
        (b"\n".join(lines[i : i + per_request]) + b"\n", len(lines[i : i + per_request]))
        for i in range(0, len(lines), per_request)
    ]


def _connection(
    port: int,
    token: str,
    bodies: list[tuple[bytes, int]],
    readings: int,
    keep_alive: bool,
    go: Event,
    out: SendResult,
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    if not keep_alive:
        headers["Connection"] = "close"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.connect()
    go.wait()
    out.first_send = time.monotonic()
    try:
        for body, n in bodies:
            t0 = time.monotonic()
            if conn.sock is None:
                conn.connect()
            conn.request("POST", URL_PATH, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if not keep_alive:
                conn.close()
            out.last_ack = time.monotonic()
            out.latencies_ms.append((out.last_ack - t0) * 1000)
            out.requests += 1
            if resp.status != 200:
                out.errors.append(f"HTTP {resp.status}: {data[:300]!r}")
                return
            head = _HEAD.match(data)  # the counts lead the answer; no need to decode it all
            if head is None or int(head[1]) != n:
                bad = [o for o in orjson.loads(data)["outcomes"] if o["status"] != "accepted"]
                out.errors.append(f"{len(bad)} of {n} not accepted, e.g. {bad[:2]}")
                return
            out.batches += n
            out.readings += n * readings
    finally:
        conn.close()


def _sender(
    files: list[str],
    port: int,
    token: str,
    per_request: int,
    readings: int,
    keep_alive: bool,
    ready: Any,
    go: Event,
    q: Any,
) -> None:
    payloads = [_bodies(Path(f), per_request) for f in files]
    results = [SendResult() for _ in files]
    threads = [
        threading.Thread(target=_connection, args=(port, token, b, readings, keep_alive, go, r))
        for b, r in zip(payloads, results, strict=True)
    ]
    for t in threads:
        t.start()
    ready.release()
    go.wait()
    cpu0 = _cpu_s()
    for t in threads:
        t.join()
    total = SendResult(cpu_s=_cpu_s() - cpu0)
    total.first_send = min(r.first_send for r in results)
    total.last_ack = max(r.last_ack for r in results)
    for r in results:
        total.batches += r.batches
        total.readings += r.readings
        total.requests += r.requests
        total.latencies_ms += r.latencies_ms
        total.errors += r.errors
    q.put(total)


def run_senders(
    files: list[Path],
    port: int,
    token: str,
    *,
    processes: int,
    per_request: int,
    readings: int,
    keep_alive: bool = False,
    on_start: Any = None,
    while_waiting: Any = None,
) -> tuple[float, SendResult]:
    """Send every file (one connection each) from ``processes`` processes; (t0, totals).

    ``on_start()`` runs right after the start signal; ``while_waiting()`` is called every
    20 ms until every sender is done (the caller polls the lake there).
    """
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    q = ctx.Queue()
    groups = [[str(f) for f in files[k::processes]] for k in range(processes)]
    groups = [g for g in groups if g]
    procs = [
        ctx.Process(
            target=_sender,
            args=(g, port, token, per_request, readings, keep_alive, ready, go, q),
        )
        for g in groups
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    time.sleep(0.2)  # every connection is open and waits
    t0 = time.monotonic()
    go.set()
    if on_start is not None:
        on_start()
    results: list[SendResult] = []
    while len(results) < len(procs):
        try:
            results.append(q.get(timeout=0.02))
        except Exception:  # queue.Empty
            if while_waiting is not None:
                while_waiting()
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a sender process failed") from None
    for p in procs:
        p.join()
    total = SendResult()
    total.first_send = min(r.first_send for r in results)
    total.last_ack = max(r.last_ack for r in results)
    for r in results:
        total.batches += r.batches
        total.readings += r.readings
        total.requests += r.requests
        total.cpu_s += r.cpu_s
        total.latencies_ms += r.latencies_ms
        total.errors += r.errors
    return t0, total


# -- ceilings --------------------------------------------------------------------------------


def _public_keys(seed: int, indexes: range) -> dict[str, Any]:
    from _ingest_gen import device_key
    from metrocloud.trust.keys import PublicKey

    out = {}
    for i in indexes:
        pub = PublicKey(device_key(seed, i).public_key())
        out[pub.key_id] = pub
    return out


def _ceiling_worker(
    kind: str, lines: list[bytes], seed: int, keys: range, ready: Any, go: Event, q: Any
) -> None:
    from metrocloud.formats.batches import parse_payload, split_wire, verify_batch

    pubs = _public_keys(seed, keys)
    readings = 0
    if kind == "verify":
        alg = ec.ECDSA(hashes.SHA256())
        items = []
        for line in lines:
            payload, sig = split_wire(line)
            p = parse_payload(payload)
            readings += len(p)
            items.append((pubs[p.key]._key, sig, payload))  # the cryptography key itself
        ready.release()
        go.wait()
        t0, c0 = time.monotonic(), _cpu_s()
        for key, sig, payload in items:
            key.verify(sig, payload, alg)
    else:
        by_key = pubs
        ready.release()
        go.wait()
        t0, c0 = time.monotonic(), _cpu_s()
        for line in lines:
            payload, sig = split_wire(line)
            p = parse_payload(payload)
            verify_batch(payload, sig, by_key[p.key])
            readings += len(p)
    q.put((len(lines), readings, t0, time.monotonic(), _cpu_s() - c0))


@dataclass
class CeilingResult:
    batches: int
    readings: int
    seconds: float  #: from the start signal until the last process finished
    cpu_s: float  #: CPU time of the processes while measuring
    watch: CpuWatch


def run_ceiling(
    kind: str, files: list[Path], limit: int, seed: int, keys: range, processes: int = 2
) -> CeilingResult:
    """``kind`` ("verify" or "pipeline") over up to ``limit`` of the workload's lines, split
    over ``processes`` processes."""
    lines: list[bytes] = []
    per_file = -(-limit // len(files))
    for f in files:
        lines += f.read_bytes().splitlines()[:per_file]
    lines = lines[:limit]
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    q = ctx.Queue()
    procs = [
        ctx.Process(
            target=_ceiling_worker, args=(kind, lines[k::processes], seed, keys, ready, go, q)
        )
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    watch = CpuWatch().start()
    go.set()
    out = [q.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    watch.helpers_s = sum(o[4] for o in out)
    watch.stop()
    return CeilingResult(
        batches=sum(o[0] for o in out),
        readings=sum(o[1] for o in out),
        seconds=max(o[3] for o in out) - min(o[2] for o in out),
        cpu_s=watch.helpers_s,
        watch=watch,
    )
