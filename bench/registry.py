"""Registry benchmark (issue #2): prints one JSON line per figure.

    python bench/registry.py            # full scale: 10^6 instruments, 10^6 ledger leaves
    python bench/registry.py --quick    # the same code at a small scale (under a minute)

Figures, on SQLite (the embedded default), through the real HTTP API of a `metrocloud serve`
process where a party would use one:

- bulk registration rate, 10,000 instruments (each with an Ed25519 device key) per request;
- peak RSS of the node process while registering them (VmHWM);
- instrument look-up latency, p50/p99, by the owning manufacturer and by an authority
  (a foreign read, which also writes the owner's access log);
- ledger appends per second in batches of 10,000 (library level, no HTTP);
- inclusion proof generation, median and p99, at the full tree size.

Each line: {"name", "value", "unit", "target", "better", "scale"}; ``scale`` is the size the
figure was measured at. A baseline measured in the same run (raw sqlite3 executemany of the
same instrument rows) is printed beside the registration rate as a ratio.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ledger import bench_append, bench_inclusion

ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
SW = {"name": "FW", "version": "1.0.0", "algorithm": "sha256", "checksum": "ab" * 32}


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrocloud(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def batch_body(cert_id: str, start: int, n: int) -> bytes:
    keys = [base64.b64encode(ED25519_SPKI_PREFIX + os.urandom(32)).decode() for _ in range(n)]
    return json.dumps(
        {
            "instruments": [
                {
                    "serial": f"B{start + i:09d}",
                    "certificate_id": cert_id,
                    "region": "DE21",
                    "device_keys": [keys[i]],
                }
                for i in range(n)
            ]
        }
    ).encode()


def raw_sqlite_rate(rows: int) -> float:
    """Baseline: plain sqlite3 executemany of comparable rows into an indexed table."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.sqlite3")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, serial TEXT, m TEXT, c TEXT, k TEXT)")
        db.execute("CREATE UNIQUE INDEX u ON t (serial, m)")
        db.execute("CREATE TABLE k (key_id TEXT PRIMARY KEY, id TEXT)")
        t0 = time.perf_counter()
        for start in range(0, rows, 10_000):
            batch = [
                (f"ins-{start + i:012d}", f"B{start + i:09d}", "m", "c", os.urandom(32).hex())
                for i in range(10_000)
            ]
            db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", batch)
            db.executemany("INSERT INTO k VALUES (?, ?)", [(b[4], b[0]) for b in batch])
            db.commit()
        rate = rows / (time.perf_counter() - t0)
        db.close()
        return rate


def run_node(data_dir: Path, n_instruments: int, lookups: int) -> None:
    env = {**os.environ, "METROCLOUD_DATA_DIR": str(data_dir)}
    metrocloud("init", "--data-dir", str(data_dir), env=env)
    admin = json.loads((data_dir / "credentials.json").read_text())["node_admin"]["token"]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metrocloud.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("node did not start")
                time.sleep(0.1)

            def party(name: str, role: str, nb: str | None = None) -> dict[str, str]:
                h = {"Authorization": f"Bearer {admin}"}
                p = http.post(
                    "/parties", json={"name": name, "role": role, "nb_number": nb}, headers=h
                ).json()
                t = http.post(f"/parties/{p['id']}/tokens", headers=h).json()
                return {"Authorization": f"Bearer {t['token']}"}

            nb, man, auth = (
                party("NB", "notified_body", "0102"),
                party("Maker", "manufacturer"),
                party("MSA", "authority"),
            )
            me = http.get("/me", headers=man).json()
            cert = http.post(
                "/certificates",
                headers=nb,
                json={
                    "number": "DE-0102-26-0001",
                    "holder_id": me["party_id"],
                    "category": "MI-003",
                    "model": "EM",
                    "accuracy_class": "B",
                    "software": [SW],
                },
            ).json()["certificate"]

            ids: list[str] = []
            elapsed = 0.0
            hdr = {**man, "Content-Type": "application/json"}
            for start in range(0, n_instruments, 10_000):
                body = batch_body(cert["id"], start, min(10_000, n_instruments - start))
                t0 = time.perf_counter()
                r = http.post("/instruments", content=body, headers=hdr)
                elapsed += time.perf_counter() - t0
                r.raise_for_status()
                got = r.json()["instruments"]
                ids.extend(random.sample([g["id"] for g in got], min(len(got), 50)))
            scale = f"{n_instruments} instruments"
            emit(
                "bulk_registration_rate",
                n_instruments / elapsed,
                "instruments/s",
                20_000,
                "higher",
                scale,
            )
            emit("registration_peak_rss", peak_rss_mib(proc.pid), "MiB", 1024, "lower", scale)

            for who, headers, target in (("manufacturer", man, 5.0), ("authority", auth, None)):
                samples = []
                for iid in random.choices(ids, k=lookups):
                    t0 = time.perf_counter()
                    r = http.get(f"/instruments/{iid}", headers=headers)
                    samples.append((time.perf_counter() - t0) * 1000)
                    r.raise_for_status()
                samples.sort()
                p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
                emit(f"instrument_lookup_p99_{who}", p99, "ms", target, "lower", scale)
                emit(
                    f"instrument_lookup_p50_{who}",
                    statistics.median(samples),
                    "ms",
                    None,
                    "lower",
                    scale,
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scale, under a minute")
    args = ap.parse_args()
    n = 20_000 if args.quick else 1_000_000
    leaves = 20_000 if args.quick else 1_000_000
    lookups = 300 if args.quick else 2_000
    random.seed(2)

    with tempfile.TemporaryDirectory(prefix="metrocloud-bench-") as tmp:
        run_node(Path(tmp) / "node", n, lookups)
    raw = raw_sqlite_rate(min(n, 200_000))
    emit(
        "raw_sqlite_insert_rate_baseline", raw, "rows/s", None, "higher", f"{min(n, 200_000)} rows"
    )
    emit(
        "ledger_append_rate",
        bench_append(leaves, 10_000),
        "appends/s",
        50_000,
        "higher",
        f"{leaves} leaves",
    )
    median, p99 = bench_inclusion(leaves, 2_000)
    emit("inclusion_proof_median", median, "ms", 1.0, "lower", f"{leaves} leaves")
    emit("inclusion_proof_p99", p99, "ms", None, "lower", f"{leaves} leaves")


if __name__ == "__main__":
    main()
