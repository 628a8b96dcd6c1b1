"""Helpers of the intake end-to-end tests: a node process with MQTT, its API, real devices.

Nothing here is a mock: the node is ``metrocloud serve --mqtt`` in its own process, the
broker is Mosquitto, the devices are :class:`metrocloud.device.Device` with their own keys
and state directories, and the checks read what the node wrote (its SQLite file, its lake).
"""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrocloud.device import Approval, Device, SoftwareImage, reference_software
from metrocloud.device.device import KEY_NAME
from metrocloud.formats.batches import SignedBatch, parse_payload, split_wire
from metrocloud.ingest.mqtt import stop_loop
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.trust.keys import KeyStore, PrivateKey, PublicKey
from tests._mqtt import Listener, client, publish, wait_until

from ._cli import cli_command, cli_env, free_port, run_cli, wait_healthy

PASSPHRASE = b"e2e device passphrase"
QUARTER_MS = 15 * 60 * 1000


# -- the node process ---------------------------------------------------------------------------


class NodeProcess:
    """``metrocloud serve --mqtt URL`` on one data directory (and, with ``db``, on that
    PostgreSQL database in schema ``schema``); killable, restartable."""

    def __init__(
        self,
        data_dir: Path,
        mqtt_url: str,
        *,
        workers: int = 1,
        db: str | None = None,
        schema: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.mqtt_url = mqtt_url
        self.workers = workers
        self.db = db
        self.schema = schema
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.starts = 0
        init = run_cli("init", data_dir=data_dir, db=db, schema=schema)
        assert init.returncode == 0, init.stdout + init.stderr
        self.admin = _credentials(data_dir)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        for _attempt in range(3):
            self.starts += 1
            log = self.data_dir.parent / f"serve-{self.starts}.log"
            cmd = cli_command(
                "serve",
                "--port",
                str(self.port),
                "--mqtt",
                self.mqtt_url,
                "--workers",
                str(self.workers),
                data_dir=self.data_dir,
                db=self.db,
            )
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    cmd,
                    env=cli_env(self.schema),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if wait_healthy(self.proc, self.base_url, log):
                return
            self.port = free_port()  # most likely another process took the port
        pytest.fail(f"metrocloud serve did not start:\n{log.read_text(errors='replace')[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the server's whole process group: no shutdown code runs."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def lake_writer(self) -> int:
        """The pid of the worker process holding the lake's writer lock (and so the MQTT
        subscription)."""
        import psutil

        assert self.proc is not None
        lock = str((self.data_dir / "lake" / ".writer.lock").resolve())
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if any(f.path == lock for f in child.open_files()):
                    return int(child.pid)
            except psutil.Error:
                continue
        raise AssertionError("no worker holds the lake's writer lock")

    def log(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.data_dir.parent.glob("serve-*.log"))
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)

    # -- what the node holds (read from its files, as an auditor would) ----------------------

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``?`` placeholders) in the node's database, SQLite or PostgreSQL."""
        if self.db is None:
            with sqlite3.connect(self.data_dir / "registry.sqlite3", timeout=30) as conn:
                return list(conn.execute(sql, args).fetchall())
        import psycopg

        url = self.db.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            rows = conn.execute(sql.replace("?", "%s"), args).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def stored(self) -> list[tuple[str, int, str]]:
        """(key_id, counter, digest) of every batch in the intake's durable log."""
        return [
            (k, c, d)
            for k, c, d in self.query("SELECT key_id, counter, digest FROM intake_batches")
        ]

    def quarantined(self) -> list[tuple[str, str, str | None, bytes]]:
        """(reason, transport, instrument_id, wire) of every quarantined line."""
        return [
            (r, t, i, bytes(w))
            for r, t, i, w in self.query(
                "SELECT reason, transport, instrument_id, wire FROM quarantine ORDER BY id"
            )
        ]

    def wait_flushed(self, batches: int, timeout: float = 60) -> None:
        """Until the intake log holds ``batches`` batches and the flusher moved them all."""

        def done() -> bool:
            [(total,)] = self.query("SELECT count(*) FROM intake_batches")
            [(pending,)] = self.query("SELECT count(*) FROM intake_rounds")
            return total >= batches and pending == 0

        wait_until(done, timeout, f"{batches} batches flushed into the lake")

    def lake_readings(self) -> list[tuple[str, int, float, int, int]]:
        """(instrument, t ms, value, status, batch_counter) of every reading in the lake."""
        lake = Lake.open(self.data_dir / "lake")
        try:
            with DuckDBEngine(lake, memory_limit="512MiB", threads=1) as engine:
                table = engine.sql(
                    "SELECT instrument::VARCHAR AS i, epoch_ms(t) AS t, value, status, "
                    "batch_counter FROM readings"
                )
        finally:
            lake.close()
        cols = [table[c].to_pylist() for c in ("i", "t", "value", "status", "batch_counter")]
        return list(zip(*cols, strict=True))


def run_device(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``metrocloud device ARGS`` to completion (no --data-dir: a device is not a node)."""
    return subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", "device", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _credentials(data_dir: Path) -> str:
    import json

    return str(json.loads((data_dir / "credentials.json").read_text())["node_admin"]["token"])


# -- the node's API, as the parties use it --------------------------------------------------------


@dataclass
class Party:
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.admin = Party("admin", node.admin)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.node.base_url}/api/v1", timeout=60, trust_env=False)

    def call(self, method: str, path: str, who: Party, **kw: Any) -> Any:
        with self.http() as h:
            r = h.request(method, path, headers=who.headers, **kw)
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def party(
        self, name: str, role: str, *, public_key: PublicKey | None = None, nb: str | None = None
    ) -> Party:
        body: dict[str, Any] = {"name": name, "role": role}
        if nb:
            body["nb_number"] = nb
        if public_key is not None:
            body["public_key"] = public_key.to_spki_b64()
        p = self.call("POST", "/parties", self.admin, json=body)
        t = self.call("POST", f"/parties/{p['id']}/tokens", self.admin, json={"label": "e2e"})
        return Party(p["id"], t["token"])

    def certificate(
        self, nb: Party, holder: Party, number: str, software: Iterable[SoftwareImage]
    ) -> dict[str, Any]:
        body = {
            "number": number,
            "holder_id": holder.id,
            "category": "MI-003",
            "model": "Reference meter",
            "accuracy_class": "B",
            "software": [s.identification.as_dict() for s in software],
        }
        return dict(self.call("POST", "/certificates", nb, json=body)["certificate"])

    def register(
        self, manufacturer: Party, cert: dict[str, Any], keys: list[PublicKey], prefix: str
    ) -> list[str]:
        body = {
            "instruments": [
                {
                    "serial": f"{prefix}{n:05d}",
                    "certificate_id": cert["id"],
                    "region": "DE21",
                    "device_keys": [k.to_spki_b64()],
                }
                for n, k in enumerate(keys)
            ]
        }
        refs = self.call("POST", "/instruments", manufacturer, json=body)["instruments"]
        return [r["id"] for r in refs]

    def ingest(self, sender: Party, lines: Iterable[bytes]) -> list[dict[str, Any]]:
        with self.http() as h:
            r = h.post(
                "/ingest/batches",
                content=b"\n".join(lines) + b"\n",
                headers={**sender.headers, "Content-Type": "application/x-ndjson"},
            )
        assert r.status_code == 200, r.text
        return list(r.json()["outcomes"])


@dataclass
class World:
    """A node with the parties of a metering story: a notified body, a manufacturer (whose
    software-package key the node's party directory holds) and an operator."""

    node: NodeProcess
    api: Api
    nb: Party
    manufacturer: Party
    manufacturer_key: PrivateKey
    operator: Party

    @classmethod
    def make(cls, node: NodeProcess) -> World:
        api = Api(node)
        key = PrivateKey.generate()
        return cls(
            node=node,
            api=api,
            nb=api.party("PTB", "notified_body", nb="0102"),
            manufacturer=api.party("Meter Works", "manufacturer", public_key=key.public_key),
            manufacturer_key=key,
            operator=api.party("Stadtwerke", "operator"),
        )


# -- devices --------------------------------------------------------------------------------------


def device_key(directory: Path) -> PublicKey:
    """Step 1 of a device's life: its key, made in its own directory (the manufacturer then
    registers the instrument with the public key)."""
    return KeyStore(directory / "keys", PASSPHRASE).load_or_create(KEY_NAME).public_key


def approval_of(cert: dict[str, Any], *software: SoftwareImage) -> Approval:
    """The device's view of its certificate (``software`` overrides the approved list)."""
    return Approval.from_dict(
        {
            "certificate": cert["number"],
            "status": cert["status"],
            "valid_until": cert["valid_until"],
            "software": [s.identification.as_dict() for s in software] or cert["software"],
        }
    )


def provision(
    directory: Path,
    instrument: str,
    approval: Approval,
    manufacturer: PublicKey,
    *,
    software: SoftwareImage | None = None,
    start: datetime,
    seed: int = 0,
) -> Device:
    """Step 3: provision the device (with the key of step 1) for the registered instrument."""
    return Device.provision(
        directory,
        instrument=instrument,
        manufacturer_key=manufacturer,
        software=software or reference_software(),
        approval=approval,
        passphrase=PASSPHRASE,
        seed=seed,
        start_ms=int(start.timestamp() * 1000),
    )


def day_start(days_back: float = 1) -> datetime:
    """A quarter-hour boundary ``days_back`` days ago: a register started then has a day of
    readings in the past."""
    now = datetime.now(UTC) - timedelta(days=days_back)
    ms = int(now.timestamp() * 1000)
    return datetime.fromtimestamp((ms - ms % QUARTER_MS) / 1000, UTC)


def patched_software(version: str, note: bytes) -> SoftwareImage:
    """The reference software with one more legally relevant module (another checksum)."""
    ref = reference_software()
    return SoftwareImage(
        name=ref.name,
        version=version,
        legally_relevant={**ref.legally_relevant, "metrocloud/device/patch.py": note},
        other=ref.other,
    )


def readings_of(batches: Iterable[SignedBatch]) -> list[tuple[str, int, float, int, int]]:
    """(instrument, t, value, status, counter) of every reading in ``batches``."""
    out: list[tuple[str, int, float, int, int]] = []
    for b in batches:
        p = b.parse()
        out += [
            (p.instrument, t, float(v), s, p.counter)
            for t, v, s in zip(p.t, p.value, p.status, strict=True)
        ]
    return out


def identity(b: SignedBatch) -> tuple[str, int, str]:
    """(key_id, counter, digest): how the node's intake log names a batch."""
    p = b.parse()
    return p.key, p.counter, b.digest


def tampered(b: SignedBatch) -> bytes:
    """The wire line with one reading changed and the signature kept (still canonical)."""
    p = parse_payload(split_wire(b.wire())[0])
    old = f'"value":[{_json_number(p.value[0])}'.encode()
    new = f'"value":[{_json_number(p.value[0] + 1)}'.encode()
    payload = b.payload.replace(old, new, 1)
    assert payload != b.payload
    return b"MCB1." + _b64(payload) + b"." + _b64(b.signature)


def _json_number(x: float) -> str:
    from metrocloud.trust.canonical import canonical_json

    return canonical_json(x).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


# -- MQTT ---------------------------------------------------------------------------------------


@dataclass
class MqttSide:
    """A head-end's MQTT connection: publishes batches, hears every outcome."""

    url: str
    topics: Any
    listener: Listener
    publisher: Any
    probes: int = 0

    def publish(self, instrument: str, payload: bytes) -> None:
        publish(self.publisher, self.topics.batches(instrument), payload)

    def outcomes(self) -> list[tuple[str, dict[str, Any]]]:
        """(instrument of the topic, outcome) of every answer heard, probes left out."""
        return [
            (t.rsplit("/", 1)[1], o)
            for t, o in self.listener.json()
            if not t.rsplit("/", 1)[1].startswith("probe-")
        ]

    def wait_outcomes(self, n: int, timeout: float = 60) -> list[tuple[str, dict[str, Any]]]:
        """Until at least ``n`` answers (probes left out) were heard."""
        wait_until(lambda: len(self.outcomes()) >= n, timeout, f"{n} MQTT outcomes")
        return self.outcomes()

    def wait_subscribed(self, timeout: float = 60) -> None:
        """Until the node answers on MQTT: a probe (quarantined as malformed) gets its answer.
        Messages published before the node first subscribed would never reach it."""
        self.probes += 1
        probe = f"probe-{self.probes}"
        seen = lambda ms: any(t == self.topics.outcomes(probe) for t, _ in ms)  # noqa: E731
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        while not self.listener.wait_for(seen, 1.0):
            assert datetime.now(UTC) < deadline, "the node never answered on MQTT"
            self.publish(probe, f"MCB1.{probe}".encode())

    def close(self) -> None:
        self.listener.close()
        self.publisher.disconnect()
        stop_loop(self.publisher)


@contextmanager
def mqtt_side(url: str, country: str = "DE") -> Iterator[MqttSide]:
    from metrocloud.ingest.mqtt import parse_broker_url

    topics = parse_broker_url(url).topics(country)
    side = MqttSide(url, topics, Listener(topics.all_outcomes, url=url), client(url=url))
    try:
        yield side
    finally:
        side.close()
