"""A metrocloud node for the AAS benchmark: init, serve, seed over HTTP, export.

The node runs as ``metrocloud serve`` in its own process (the process whose peak RSS is
measured). Seeding goes through the real REST API like ``bench/registry.py``: parties are
admitted by the node admin, a notified body issues a few EU-type examination certificates
(each one an instrument-type shell) and a manufacturer bulk-registers instruments, 10,000 per
request (each one an instrument shell).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "AAS_PREFIX",
    "CERTIFICATES",
    "Node",
    "free_port",
    "peak_rss_mib",
    "seed",
]

AAS_PREFIX = "/aas/api/v3.0"
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_SW = {"name": "FW", "version": "1.0.0", "algorithm": "sha256", "checksum": "ab" * 32}
CERTIFICATES = 4
_BATCH = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vmhwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def peak_rss_mib(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process plus its worker processes, summed."""
    import psutil

    total = _vmhwm_mib(pid)
    for child in psutil.Process(pid).children(recursive=True):
        try:
            total += _vmhwm_mib(child.pid)
        except FileNotFoundError:  # a child that just exited
            continue
    return total


def wait_http(url: str, proc: subprocess.Popen[Any], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout_s} s")
        time.sleep(0.2)


class Node:
    """``metrocloud init`` once, then ``metrocloud serve`` started and stopped at will."""

    def __init__(self, data_dir: Path, workers: int = 1) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.env = {**os.environ, "METROCLOUD_DATA_DIR": str(data_dir)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.cli("init", "--data-dir", str(data_dir))
        creds = json.loads((data_dir / "credentials.json").read_text())
        self.admin_token: str = creds["node_admin"]["token"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "metrocloud.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"metrocloud {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metrocloud.cli",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/api/v1/health", self.proc, "metrocloud serve", 60)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _instruments_body(cert_id: str, start: int, n: int) -> bytes:
    keys = [base64.b64encode(_ED25519_SPKI_PREFIX + os.urandom(32)).decode() for _ in range(n)]
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


def seed(node: Node, n_instruments: int, progress: Any = None) -> str:
    """Seed a running node with ``n_instruments``; the authority's bearer token."""
    with httpx.Client(base_url=f"{node.url}/api/v1", timeout=600) as http:
        admin = {"Authorization": f"Bearer {node.admin_token}"}

        def party(name: str, role: str, nb: str | None = None) -> dict[str, str]:
            r = http.post(
                "/parties", json={"name": name, "role": role, "nb_number": nb}, headers=admin
            )
            r.raise_for_status()
            t = http.post(f"/parties/{r.json()['id']}/tokens", headers=admin)
            t.raise_for_status()
            return {"Authorization": f"Bearer {t.json()['token']}"}

        nb = party("Notified Body", "notified_body", "0102")
        man = party("Maker GmbH", "manufacturer")
        auth = party("Market Surveillance", "authority")
        me = http.get("/me", headers=man).json()
        certs = []
        for k in range(CERTIFICATES):
            r = http.post(
                "/certificates",
                headers=nb,
                json={
                    "number": f"DE-0102-26-{k + 1:04d}",
                    "holder_id": me["party_id"],
                    "category": "MI-003",
                    "model": f"EM-{k + 1}",
                    "accuracy_class": "B",
                    "software": [_SW],
                },
            )
            r.raise_for_status()
            certs.append(r.json()["certificate"]["id"])
        hdr = {**man, "Content-Type": "application/json"}
        for i, start in enumerate(range(0, n_instruments, _BATCH)):
            n = min(_BATCH, n_instruments - start)
            r = http.post(
                "/instruments",
                content=_instruments_body(certs[i % len(certs)], start, n),
                headers=hdr,
            )
            r.raise_for_status()
            if progress is not None:
                progress(start + n, n_instruments)
        return auth["Authorization"]
