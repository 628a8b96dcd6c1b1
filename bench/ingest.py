"""Ingest benchmark (issue #4): prints one JSON line per figure.

    python bench/ingest.py            # full scale (about 15 minutes, lake query at 10^8)
    python bench/ingest.py --quick    # the same code at a small scale (about a minute)

What is measured, each figure beside a ceiling measured in the same run:

(a) per-reading signing: batches of ONE reading, each signed with the instrument's own
    ECDSA P-256 key, through the node's intake, against the raw ``cryptography`` P-256
    verify rate of the same signatures in two processes (target: 70 %);
(b) batch signing: 96 readings a batch (a day of 15-minute readings), end to end into the
    lake, in readings/s (target 500,000), beside the raw split + parse + verify rate of the
    same batches in two processes;
(c) the lake's fleet aggregate over 10^8 readings (10^6 with ``--quick``) against direct
    DuckDB SQL (``bench/_lake.run_fleet_aggregates``, target 1.5x), in its own process;
and the peak RSS of the node's processes (target 4 GiB), and of (c)'s process.

"End to end" here: a real node, ``metrocloud serve --workers 2`` on loopback (SQLite,
the lake in its data directory, the lake writer in the worker that holds the lake lock),
fed by sender processes on the same machine posting NDJSON requests of
``--lines-per-request`` wire lines (200) on ``--connections`` HTTP/1.1 connections (16,
each its own instruments, one request at a time, a new TCP connection per request so that
the kernel hands it to a worker that is free to accept it). The clock starts when the
senders are released (request bodies built, connections open) and stops when the lake's
committed manifest counts every reading sent (polled every 20 ms): readings are durable in
the intake log when acknowledged and queryable in Parquet at the stop. Intake throughput
(until the last durable acknowledgement) is reported separately. Each phase starts on an
idle node whose lake holds everything sent before; with ``--repeat`` (2 in the full run)
each phase runs again on fresh instruments and the least disturbed repetition counts.

The two cores are shared with the senders (about 2 % of the work) and with whatever else
runs on the machine. Every phase records the cores used by the node, by the benchmark's own
processes and by others (``/proc/stat`` less ours): ``others`` above 0.2 cores means the
figure was disturbed; the ceilings are measured right before and right after each phase,
and the ratio uses the higher (stricter) one. ``*_efficiency`` compares CPU time instead
(the node's readings per CPU-second over the ceiling's), which noise does not skew.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _aas_node import Node, peak_rss_mib
from _ingest_gen import SOFTWARE, Workload, generate, public_keys
from _ingest_send import CpuWatch, run_ceiling, run_senders

NOISE_CORES = 0.2
SEED = 4
REGISTER_PER_REQUEST = 10_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(
    name: str, value: float, unit: str, target: float | None, better: str, scale: str
) -> dict[str, Any]:
    line = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "target": target,
        "better": better,
        "scale": scale,
    }
    print(json.dumps(line), flush=True)
    return line


# -- the node ------------------------------------------------------------------------------


def _seed(
    node: Node, pool: Any, counts: dict[str, int]
) -> tuple[str, dict[str, list[str]], dict[str, int]]:
    """Parties, one certificate, the instruments (each with its own P-256 key); the
    manufacturer's token, the instrument ids and the first key index per workload."""
    with httpx.Client(base_url=f"{node.url}/api/v1", timeout=600) as http:
        admin = {"Authorization": f"Bearer {node.admin_token}"}

        def party(name: str, role: str, nb: str | None = None) -> str:
            r = http.post(
                "/parties", json={"name": name, "role": role, "nb_number": nb}, headers=admin
            )
            r.raise_for_status()
            t = http.post(f"/parties/{r.json()['id']}/tokens", headers=admin)
            t.raise_for_status()
            return str(t.json()["token"])

        nb = {"Authorization": f"Bearer {party('Notified Body', 'notified_body', '0102')}"}
        man_token = party("Meter Maker GmbH", "manufacturer")
        man = {"Authorization": f"Bearer {man_token}"}
        me = http.get("/me", headers=man).json()
        r = http.post(
            "/certificates",
            headers=nb,
            json={
                "number": "DE-0102-26-0401",
                "holder_id": me["party_id"],
                "category": "MI-003",
                "model": "EM-P256",
                "accuracy_class": "B",
                "software": [
                    {"name": "FW", "version": "1.0.0", "algorithm": "sha256", "checksum": SOFTWARE}
                ],
            },
        )
        r.raise_for_status()
        cert = r.json()["certificate"]["id"]
        ids: dict[str, list[str]] = {}
        first_keys: dict[str, int] = {}
        first = 0
        for name, n in counts.items():
            first_keys[name] = first
            keys = public_keys(pool, SEED, range(first, first + n))
            got: list[str] = []
            for start in range(0, n, REGISTER_PER_REQUEST):
                chunk = keys[start : start + REGISTER_PER_REQUEST]
                body = {
                    "instruments": [
                        {
                            "serial": f"{name}-{first + start + i:08d}",
                            "certificate_id": cert,
                            "region": "DE21",
                            "device_keys": [k],
                        }
                        for i, k in enumerate(chunk)
                    ]
                }
                r = http.post("/instruments", json=body, headers=man)
                r.raise_for_status()
                got += [x["id"] for x in r.json()["instruments"]]
            ids[name] = got
            first += n
        return man_token, ids, first_keys


class LakeWatch:
    """Readings committed in the node's lake (its manifest), re-read when it changes."""

    def __init__(self, root: Path) -> None:
        self.path = root / "manifest.json"
        self._stamp: tuple[int, int] | None = None
        self.rows = 0
        self.reached_at: float | None = None
        self.goal = 0

    def poll(self) -> int:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.rows
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp != self._stamp:
            self._stamp = stamp
            body = orjson.loads(self.path.read_bytes())
            self.rows = sum(f["rows"] for f in body["datasets"].get("readings", []))
        if self.reached_at is None and self.goal and self.rows >= self.goal:
            self.reached_at = time.monotonic()
        return self.rows

    def wait(self, goal: int, timeout_s: float) -> float:
        self.goal = goal
        deadline = time.monotonic() + timeout_s
        while self.poll() < goal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lake holds {self.rows} readings, not {goal}")
            time.sleep(0.02)
        assert self.reached_at is not None
        return self.reached_at


# -- one phase -----------------------------------------------------------------------------


@dataclass
class Ceiling:
    """A raw rate of the same signatures / lines in two processes, without a node."""

    batches_per_s: float
    readings_per_s: float
    #: per CPU-second of the two processes (independent of how many cores they got)
    batches_per_cpu_s: float
    readings_per_cpu_s: float
    others_cores: float


@dataclass
class Run:
    """One phase: a workload sent to the node, from the start signal."""

    workload: Workload
    intake_s: float
    e2e_s: float
    watch: CpuWatch

    @property
    def node_cpu_s(self) -> float:
        return self.watch.node_cores * self.watch.wall_s


def _ceiling(kind: str, files: list[Path], limit: int, w: Workload, label: str) -> Ceiling:
    keys = range(w.first_key, w.first_key + len(w.instruments))
    r = run_ceiling(kind, files, limit, SEED, keys)
    bps, rps = r.batches / r.seconds, r.readings / r.seconds
    log(f"  ceiling {label}: {bps:,.0f} batches/s, {rps:,.0f} readings/s ({r.watch.describe()})")
    cpu = max(r.cpu_s, 1e-9)
    return Ceiling(bps, rps, r.batches / cpu, r.readings / cpu, r.watch.others_cores)


def _phase(
    node: Node,
    token: str,
    w: Workload,
    files: list[Path],
    lake: LakeWatch,
    args: argparse.Namespace,
) -> Run:
    goal = lake.poll() + w.total_readings
    watch = CpuWatch(node.pid)
    lake.goal = goal
    lake.reached_at = None
    spy = _py_spy(node, args, w.name)
    t0, sent = run_senders(
        files,
        node.port,
        token,
        processes=args.senders,
        per_request=args.lines_per_request,
        readings=w.readings,
        keep_alive=args.keep_alive,
        on_start=watch.start,
        while_waiting=lake.poll,
    )
    if sent.errors:
        raise RuntimeError(f"{w.name}: the node refused batches: {sent.errors[:3]}")
    if sent.batches != w.total_batches or sent.readings != w.total_readings:
        raise RuntimeError(f"{w.name}: {sent.batches} batches acknowledged, not all")
    intake_s = sent.last_ack - t0
    done = lake.wait(goal, timeout_s=max(600.0, 20 * intake_s))
    watch.helpers_s = sent.cpu_s
    watch.stop()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    run = Run(w, intake_s, done - t0, watch)
    lat = sorted(sent.latencies_ms)
    log(
        f"  {w.name}: {w.total_batches:,} batches ({w.total_readings:,} readings) acknowledged "
        f"in {intake_s:.2f} s, in the lake after {run.e2e_s:.2f} s; {sent.requests} requests, "
        f"p50 {statistics.median(lat):.0f} ms, p99 {lat[int(len(lat) * 0.99)]:.0f} ms"
    )
    log(
        f"  cpu: {watch.describe()}; node {run.node_cpu_s / w.total_batches * 1e6:.0f} us CPU "
        f"and {watch.node_switches / w.total_batches:.1f} context switches per batch; "
        f"senders {sent.cpu_s / w.total_batches * 1e6:.1f} us per batch"
    )
    if watch.others_cores > NOISE_CORES:
        log(f"  warning: disturbed, other processes used {watch.others_cores:.2f} cores")
    return run


def _py_spy(node: Node, args: argparse.Namespace, name: str) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the node's processes during a phase (``--profile DIR``)."""
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    out = args.profile / f"{name}.txt"
    cmd = [str(spy), "record", "--subprocesses", "--pid", str(node.pid), "--format", "raw"]
    cmd += ["--rate", "250", "--output", str(out), "--nonblocking"]
    if args.gil:
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    log(f"  py-spy recording into {out}")
    return proc


def _measure(
    node: Node,
    token: str,
    runs: list[tuple[Workload, list[Path]]],
    kind: str,
    limit: int,
    lake: LakeWatch,
    args: argparse.Namespace,
) -> tuple[Run, Ceiling]:
    """Each repetition between two ceilings; the least disturbed repetition, and the higher
    (stricter) of the ceilings around it."""
    label = "raw verify" if kind == "verify" else "split+parse+verify"
    w0, f0 = runs[0]
    before = _ceiling(kind, f0, limit, w0, f"{label}, before")
    best: tuple[Run, Ceiling] | None = None
    for i, (w, files) in enumerate(runs):
        if len(runs) > 1:
            log(f"  repetition {i + 1} of {len(runs)}")
        run = _phase(node, token, w, files, lake, args)
        after = _ceiling(kind, files, limit, w, f"{label}, after")
        ceiling = max(before, after, key=lambda c: c.batches_per_s)
        if best is None or run.watch.others_cores < best[0].watch.others_cores:
            best = (run, ceiling)
        before = after
    assert best is not None
    return best


def _figures(run: Run, ceiling: Ceiling, name: str, target: float | None) -> None:
    w = run.workload
    if w.readings == 1:
        scale = f"{w.total_batches} batches of 1 reading"
        intake, e2e = w.total_batches / run.intake_s, w.total_batches / run.e2e_s
        emit(
            f"{name}_raw_verify_ceiling", ceiling.batches_per_s, "verifies/s", None, "higher", scale
        )
        emit(f"{name}_intake_batches_per_s", intake, "batches/s", None, "higher", scale)
        emit(f"{name}_e2e_batches_per_s", e2e, "batches/s", None, "higher", scale)
        emit(
            f"{name}_intake_vs_raw_verify",
            intake / ceiling.batches_per_s,
            "x",
            target,
            "higher",
            scale,
        )
        emit(f"{name}_e2e_vs_raw_verify", e2e / ceiling.batches_per_s, "x", None, "higher", scale)
        per_cpu = w.total_batches / run.node_cpu_s
        emit(f"{name}_efficiency", per_cpu / ceiling.batches_per_cpu_s, "x", None, "higher", scale)
    else:
        scale = f"{w.total_readings} readings in batches of {w.readings}"
        e2e = w.total_readings / run.e2e_s
        emit(f"{name}_e2e_readings_per_s", e2e, "readings/s", target, "higher", scale)
        emit(
            f"{name}_intake_readings_per_s",
            w.total_readings / run.intake_s,
            "readings/s",
            None,
            "higher",
            scale,
        )
        emit(
            f"{name}_raw_pipeline_ceiling",
            ceiling.readings_per_s,
            "readings/s",
            None,
            "higher",
            scale,
        )
        emit(f"{name}_e2e_vs_ceiling", e2e / ceiling.readings_per_s, "x", None, "higher", scale)
        per_cpu = w.total_readings / run.node_cpu_s
        emit(f"{name}_efficiency", per_cpu / ceiling.readings_per_cpu_s, "x", None, "higher", scale)
    emit(
        f"{name}_node_us_per_batch",
        run.node_cpu_s / w.total_batches * 1e6,
        "us",
        None,
        "lower",
        scale,
    )
    emit(f"{name}_others_cores", run.watch.others_cores, "cores", NOISE_CORES, "lower", scale)
    emit(f"{name}_ceiling_others_cores", ceiling.others_cores, "cores", NOISE_CORES, "lower", scale)


def run(args: argparse.Namespace, work: Path) -> None:
    pool = mp.get_context("spawn").Pool(2)
    a_n, a_b = args.single
    b_n, b_b = args.batched
    phases = [p for p in ("a", "b") if args.only in (None, p)]
    counts = {}
    for r in range(args.repeat):
        if "a" in phases:
            counts[f"single{r}"] = a_n
        if "b" in phases:
            counts[f"batched{r}"] = b_n
    node = Node(work / "node", workers=args.workers)
    now = datetime.now(UTC)
    try:
        node.start()
        log(f"node serving on {node.url} ({args.workers} workers); registering instruments")
        token, ids, first_keys = _seed(node, pool, counts)
        t_a = int((now - timedelta(minutes=a_b + 30)).timestamp() * 1000)
        day0 = (now - timedelta(days=b_b + 2)).replace(hour=0, minute=0, second=0, microsecond=0)
        t_b = int(day0.timestamp() * 1000)
        work_a: list[tuple[Workload, list[Path]]] = []
        work_b: list[tuple[Workload, list[Path]]] = []
        t = time.monotonic()
        for name in counts:
            single = name.startswith("single")
            w = Workload(
                name,
                SEED,
                tuple(ids[name]),
                first_keys[name],
                a_b if single else b_b,
                1 if single else 96,
                t_a if single else t_b,
                60_000 if single else 900_000,
            )
            files = generate(pool, w, args.connections, work / "wire")
            (work_a if single else work_b).append((w, files))
        log(
            f"signed {sum(w.total_batches for w, _ in work_a + work_b):,} batches in "
            f"{time.monotonic() - t:.1f} s"
        )
        pool.close()
        pool.join()
        lake = LakeWatch(node.data_dir / "lake")
        if work_a:
            log(f"(a) {work_a[0][0].total_batches:,} single-reading P-256 batches")
            run_a, ceiling_a = _measure(
                node, token, work_a, "verify", args.ceiling_limit, lake, args
            )
            _figures(run_a, ceiling_a, "p256_single", 0.7)
        if work_b:
            log(f"(b) {work_b[0][0].total_batches:,} batches of 96 readings")
            run_b, ceiling_b = _measure(
                node, token, work_b, "pipeline", max(1, args.ceiling_limit // 4), lake, args
            )
            _figures(run_b, ceiling_b, "batch96", 500_000)
        emit(
            "node_peak_rss_mib",
            peak_rss_mib(node.pid),
            "MiB",
            4096,
            "lower",
            f"{args.workers} workers + supervisor, summed",
        )
    finally:
        node.stop()
    if args.lake_readings:
        _lake_figures(args.lake_readings, work)


def _lake_child(readings: int, work: str, q: Any) -> None:
    from _lake import run_fleet_aggregates

    q.put(run_fleet_aggregates(readings, Path(work), rounds=2))


def _lake_figures(readings: int, work: Path) -> None:
    """(c) in a fresh process, so its peak RSS is the lake's, not the senders' data."""
    log(f"(c) fleet aggregates over {readings:,} readings")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_lake_child, args=(readings, str(work / "lakebench"), q))
    p.start()
    figures = q.get()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"the lake benchmark failed ({p.exitcode})")
    for figure in figures:
        name = figure["name"]
        print(json.dumps({**figure, "name": name if name.startswith("lake_") else f"lake_{name}"}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scale, about a minute")
    ap.add_argument("--workers", type=int, default=2, help="node worker processes")
    ap.add_argument("--senders", type=int, default=2, help="sender processes")
    ap.add_argument("--connections", type=int, default=16, help="HTTP connections in all")
    ap.add_argument("--lines-per-request", type=int, default=200)
    ap.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse connections (default: one per request, so that the kernel "
        "hands each request to an idle worker)",
    )
    ap.add_argument(
        "--single",
        type=int,
        nargs=2,
        metavar=("INSTRUMENTS", "BATCHES"),
        help="(a): instruments, batches of one reading each",
    )
    ap.add_argument(
        "--batched",
        type=int,
        nargs=2,
        metavar=("INSTRUMENTS", "BATCHES"),
        help="(b): instruments, batches of 96 readings each",
    )
    ap.add_argument("--lake-readings", type=int, default=None, help="(c) scale; 0 skips it")
    ap.add_argument(
        "--ceiling-limit",
        type=int,
        default=None,
        help="signatures in the (a) ceiling (a quarter of it in (b)'s)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir in /tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--repeat", type=int, default=None, help="repetitions of each phase (fresh instruments)"
    )
    ap.add_argument("--only", choices=("a", "b"), default=None, help="run one phase only")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy record the node's processes during each phase into DIR",
    )
    ap.add_argument("--gil", action="store_true", help="with --profile: GIL holders only")
    args = ap.parse_args(argv)
    if args.quick:
        args.single = args.single or (2_000, 10)
        args.batched = args.batched or (1_000, 10)
        args.lake_readings = 1_000_000 if args.lake_readings is None else args.lake_readings
        args.ceiling_limit = args.ceiling_limit or 20_000
        args.repeat = args.repeat or 1
    else:
        args.single = args.single or (10_000, 60)
        args.batched = args.batched or (10_000, 21)
        args.lake_readings = 100_000_000 if args.lake_readings is None else args.lake_readings
        args.ceiling_limit = args.ceiling_limit or 200_000
        args.repeat = args.repeat or 2
    work = Path(tempfile.mkdtemp(prefix="metrocloud-ingest-bench-", dir=args.workdir))
    try:
        run(args, work)
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
