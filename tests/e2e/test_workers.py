"""Several worker processes write to one node concurrently and nothing is lost or forked."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests._pg import PG_URL, fresh_schema

from ._cli import cli_command, cli_env, free_port, run_cli, wait_healthy

ED25519_PREFIX = bytes.fromhex("302a300506032b6570032100")
SW = {"name": "FW", "version": "1", "algorithm": "sha256", "checksum": "ab" * 32}


def _run(data_dir: Path, db: str | None, schema: str | None) -> None:
    assert run_cli("init", data_dir=data_dir, db=db, schema=schema).returncode == 0
    admin = json.loads((data_dir / "credentials.json").read_text())["node_admin"]["token"]
    port = free_port()
    log = data_dir.parent / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cli_command("serve", "--port", str(port), "--workers", "2", data_dir=data_dir, db=db),
            env=cli_env(schema),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(proc, base, log), log.read_text()
        with httpx.Client(base_url=f"{base}/api/v1", timeout=60, trust_env=False) as http:
            h = {"Authorization": f"Bearer {admin}"}

            def party(name: str, role: str, nb: str | None = None) -> tuple[dict[str, str], str]:
                p = http.post(
                    "/parties", json={"name": name, "role": role, "nb_number": nb}, headers=h
                )
                assert p.status_code == 201, p.text
                t = http.post(f"/parties/{p.json()['id']}/tokens", headers=h).json()["token"]
                return {"Authorization": f"Bearer {t}", "id": p.json()["id"]}

            nb, man = party("NB", "notified_body", "0102"), party("M", "manufacturer")
            cert = http.post(
                "/certificates",
                headers=nb,
                json={
                    "number": "C-1",
                    "holder_id": man.pop("id"),
                    "category": "MI-003",
                    "model": "E",
                    "accuracy_class": "B",
                    "software": [SW],
                },
            ).json()["certificate"]

            def register(batch: int) -> list[int]:
                body = {
                    "instruments": [
                        {
                            "serial": f"W{batch:02d}{i:05d}",
                            "certificate_id": cert["id"],
                            "device_keys": [
                                base64.b64encode(ED25519_PREFIX + os.urandom(32)).decode()
                            ],
                        }
                        for i in range(500)
                    ]
                }
                with httpx.Client(base_url=f"{base}/api/v1", timeout=60, trust_env=False) as c:
                    r = c.post("/instruments", json=body, headers=man)
                assert r.status_code == 201, r.text
                return [r.json()["leaf_index"]]

            with ThreadPoolExecutor(4) as pool:
                leaves = sorted(i for got in pool.map(register, range(16)) for i in got)
            assert len(set(leaves)) == 16  # one statement each, no index handed out twice
            found = http.get(
                "/instruments?limit=1000&serial=W0000000",
                headers={"Authorization": man["Authorization"]},
            )
            assert found.status_code == 200 and len(found.json()["items"]) == 1
            head = http.get("/ledger/head").json()
            assert head["tree_size"] == max(leaves) + 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    verify = run_cli("ledger", "verify", data_dir=data_dir, db=db, schema=schema)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    audit = run_cli("audit", data_dir=data_dir, db=db, schema=schema)
    assert audit.returncode == 0 and "audit ok" in audit.stdout, audit.stdout + audit.stderr


@pytest.mark.e2e
def test_two_workers_on_sqlite(tmp_path: Path) -> None:
    _run(tmp_path / "node", None, None)


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_workers_on_postgresql(tmp_path: Path) -> None:
    with fresh_schema() as schema:
        _run(tmp_path / "node", PG_URL, schema)
