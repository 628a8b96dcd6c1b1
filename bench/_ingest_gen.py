"""Signed batches for the ingest benchmark, made before anything is timed.

Every instrument has its own ECDSA P-256 device key, derived from the run's seed and the
key's index (so worker processes rebuild the keys without shipping them). A workload is a set
of instruments, each sending ``batches`` batches of ``readings`` readings in counter order.
The instruments are split over the sender connections (disjoint key sets, so each key's
chain arrives in order); a connection's file holds its wire lines in the order it sends
them: counter-major, so consecutive lines come from different instruments.

Payloads are built with orjson (sorted keys, compact) and checked once per file against the
reference RFC 8785 encoder; values are kept non-integral so both agree.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.formats.batches import GENESIS_PREV, SignedBatch
from metrocloud.trust.canonical import canonical_json

__all__ = ["SOFTWARE", "Workload", "device_key", "generate", "public_keys"]

#: the approved software checksum the benchmark's certificate lists
SOFTWARE = "ab" * 32
_CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA = ec.ECDSA(hashes.SHA256())


def device_key(seed: int, index: int) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(f"metrocloud-bench-ingest/{seed}/{index}".encode()).digest()
    scalar = int.from_bytes(digest, "big") % (_CURVE_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _spki(args: tuple[int, int]) -> str:
    seed, index = args
    der = (
        device_key(seed, index)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def public_keys(pool: Pool, seed: int, indexes: range) -> list[str]:
    """Base64 SPKI of the device keys ``indexes`` (what registration takes)."""
    return pool.map(_spki, [(seed, i) for i in indexes], chunksize=500)


@dataclass(frozen=True)
class Workload:
    """``len(instruments)`` instruments x ``batches`` batches x ``readings`` readings."""

    name: str
    seed: int
    instruments: tuple[str, ...]
    first_key: int  #: device key index of instruments[0]; the others follow
    batches: int
    readings: int
    t0_ms: int  #: the first reading's time
    step_ms: int  #: between readings of one instrument
    quantity: str = "1-0:1.8.0"
    unit: str = "kWh"

    @property
    def total_batches(self) -> int:
        return len(self.instruments) * self.batches

    @property
    def total_readings(self) -> int:
        return self.total_batches * self.readings


@dataclass(frozen=True)
class _Task:
    workload: Workload
    members: tuple[int, ...]  #: positions in workload.instruments
    path: Path


def _payload(fields: dict[str, object]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _write(task: _Task) -> tuple[str, int]:
    w = task.workload
    n = w.readings
    keys = {m: device_key(w.seed, w.first_key + m) for m in task.members}
    key_ids = {
        m: hashlib.sha256(
            k.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
        for m, k in keys.items()
    }
    prev = dict.fromkeys(task.members, GENESIS_PREV)
    checked = False
    lines = 0
    with task.path.open("wb") as out:
        for c in range(1, w.batches + 1):
            for m in task.members:
                start = w.t0_ms + (c - 1) * n * w.step_ms
                base = 1000 * (m % 50_000) + 1 + (c - 1) * n * 250  # milli-units, never x.000
                fields: dict[str, object] = {
                    "v": 1,
                    "instrument": w.instruments[m],
                    "key": key_ids[m],
                    "counter": c,
                    "prev": prev[m],
                    "software": SOFTWARE,
                    "quantity": w.quantity,
                    "unit": w.unit,
                    "t": [start + i * w.step_ms for i in range(n)],
                    "value": [(base + 250 * i) / 1000 for i in range(n)],
                    "status": [0] * n,
                }
                payload = _payload(fields)
                if not checked:  # the fast encoder must give the reference's bytes
                    if payload != canonical_json(fields):
                        raise AssertionError("orjson payload is not RFC 8785 canonical")
                    checked = True
                batch = SignedBatch(payload, keys[m].sign(payload, _ECDSA))
                prev[m] = batch.digest
                out.write(batch.wire() + b"\n")
                lines += 1
    return str(task.path), lines


def generate(pool: Pool, workload: Workload, connections: int, directory: Path) -> list[Path]:
    """One file of wire lines per sender connection (disjoint instruments)."""
    directory.mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(
            workload,
            tuple(range(k, len(workload.instruments), connections)),
            directory / f"{workload.name}-{k:02d}.ndjson",
        )
        for k in range(connections)
    ]
    done = pool.map(_write, tasks, chunksize=1)
    if sum(n for _, n in done) != workload.total_batches:
        raise AssertionError("generated fewer batches than planned")
    return [t.path for t in tasks]
