"""Three member-state nodes as ``metrocloud serve`` processes on loopback (bench/grid.py).

The grid is built the way an operator builds one, with the real command line:
``metrocloud init`` per node, ``grid init-anchor``, ``grid identity`` and ``grid admit`` per
node, ``grid join`` and ``grid peers add`` on each (nodes in parallel, steps in order). Then
each node is served with short outbox intervals (``METROCLOUD_GRID_*``). Parties and their
tokens are created over the API with each node's admin token (``credentials.json``).

Also here: reading a node's SQLite database directly (what the benchmark may, and no node
sends: the log's append times and ``grid_replicated``), and :class:`CpuWatch`, the cores the
rest of the machine used meanwhile.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "CpuWatch",
    "GridNode",
    "build_grid",
    "free_port",
    "parallel",
    "read_db",
    "stop_all",
]

#: environment variables that would make a child open another node than the one meant
_SELECTORS = (
    "METROCLOUD_DB",
    "METROCLOUD_DB_SCHEMA",
    "METROCLOUD_DATA_DIR",
    "METROCLOUD_COUNTRY",
    "METROCLOUD_HOST",
    "METROCLOUD_PORT",
)
#: short intervals: a message leaves within 0.1 s of its commit; a peer that did not answer
#: is retried soon (docs/grid.md#outbox). Witnessing keeps its default (every 60 s).
GRID_ENV = {
    "METROCLOUD_GRID_OUTBOX_INTERVAL_S": "0.1",
    "METROCLOUD_GRID_RETRY_BASE_S": "0.2",
    "METROCLOUD_GRID_RETRY_MAX_S": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SELECTORS}
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


def metrocloud(*args: str) -> str:
    """Run ``metrocloud ARGS`` to completion; its stdout (a failure raises with stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"metrocloud {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def parallel(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


@dataclass
class GridNode:
    country: str
    data_dir: Path
    port: int
    node_id: str = ""
    admin: str = ""
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    parties: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.country.lower()}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, who: str, timeout: float = 60) -> httpx.Client:
        """A keep-alive client of ``/api/v1`` with the bearer token of ``who``."""
        token = self.admin if who == "admin" else self.tokens[who]
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    # -- the process -----------------------------------------------------------------------

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "metrocloud.cli",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--country",
            self.country,
            "--port",
            str(self.port),
        ]
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            cmd, env={**child_env(), **GRID_ENV}, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.country} node exited: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2, trust_env=False).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the {self.country} node did not answer within 90 s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.pid)

    # -- parties ---------------------------------------------------------------------------

    def admit(
        self, who: str, name: str, role: str, nb: str | None = None, public_key: str | None = None
    ) -> str:
        """Admit a party over the API (node admin) and keep its id and a fresh token."""
        with self.client("admin") as http:
            r = http.post(
                "/parties",
                json={"name": name, "role": role, "nb_number": nb, "public_key": public_key},
            )
            r.raise_for_status()
            party_id = str(r.json()["id"])
            t = http.post(f"/parties/{party_id}/tokens")
            t.raise_for_status()
        self.parties[who] = party_id
        self.tokens[who] = str(t.json()["token"])
        return party_id


def build_grid(root: Path, countries: Sequence[str]) -> list[GridNode]:
    """Initialise, admit, join and peer one node per country under ``root`` (not served)."""
    nodes = [GridNode(c, root / c.lower(), free_port()) for c in countries]
    anchor = root / "anchor"

    def init(n: GridNode) -> None:
        metrocloud("init", "--country", n.country, "--data-dir", str(n.data_dir))
        creds = json.loads((n.data_dir / "credentials.json").read_text())
        n.admin = creds["node_admin"]["token"]
        metrocloud("grid", "identity", "--data-dir", str(n.data_dir), "-o", str(root / pem(n)))

    def pem(n: GridNode) -> str:
        return f"{n.country.lower()}.pub.pem"

    def adm(n: GridNode) -> Path:
        return root / f"{n.country.lower()}.admission.json"

    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:
        done: list[Future[Any]] = [
            pool.submit(metrocloud, "grid", "init-anchor", "--dir", str(anchor))
        ]
        done += [pool.submit(init, n) for n in nodes]
        for f in done:
            f.result()
    parallel(
        lambda n: metrocloud(
            "grid",
            "admit",
            "--anchor",
            str(anchor),
            "--country",
            n.country,
            "--node-key-file",
            str(root / pem(n)),
            "--base-url",
            n.url,
            "-o",
            str(adm(n)),
        ),
        nodes,
    )
    for n in nodes:
        n.node_id = json.loads(adm(n).read_text())["admission"]["node_id"]

    def join_and_peer(n: GridNode) -> None:
        metrocloud(
            "grid", "join", str(adm(n)), "--anchor-key", str(anchor), "--data-dir", str(n.data_dir)
        )
        for other in nodes:
            if other is not n:
                metrocloud("grid", "peers", "add", str(adm(other)), "--data-dir", str(n.data_dir))

    parallel(join_and_peer, nodes)
    return nodes


def stop_all(nodes: Sequence[GridNode]) -> None:
    for n in nodes:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGINT)
    for n in nodes:
        n.stop()


def read_db(node: GridNode, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A read-only query on the node's SQLite database (WAL: the node keeps writing)."""
    db = sqlite3.connect(f"file:{node.data_dir / 'registry.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return list(db.execute(sql, args))
    finally:
        db.close()


# -- noise ---------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]  # less idle and iowait


def _process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def _self_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


class CpuWatch:
    """Cores the nodes used, and cores every other process (not the nodes, not this one)
    used meanwhile: on a shared machine, 0.2 or more means the measurement was disturbed."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.nodes_cores = 0.0
        self.others_cores = 0.0
        #: CPU seconds each node process used meanwhile (by pid)
        self.cpu_s: dict[int, float] = {}

    def __enter__(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._busy0 = _busy_ticks()
        self._self0 = _self_s()
        self._ticks0 = {p: _process_ticks(p) for p in self.pids}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t0
        self.cpu_s = {p: (_process_ticks(p) - self._ticks0[p]) / _TICK for p in self.pids}
        busy = (_busy_ticks() - self._busy0) / _TICK
        used_nodes = sum(self.cpu_s.values())
        used_self = _self_s() - self._self0
        if wall > 0:
            self.nodes_cores = used_nodes / wall
            self.others_cores = max(0.0, busy - used_nodes - used_self) / wall
