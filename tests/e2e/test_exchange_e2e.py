"""Acceptance (issue #6, confidential exchange), end to end with real processes: a node from
``metrocloud init`` and ``metrocloud serve``, two parties using the ``metrocloud exchange``
commands with their own key directories. The plaintext reaches the recipient and nothing of
it is in the node's data directory (database, WAL, ciphertext files) or its log."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metrocloud.trust import _files
from metrocloud.trust.keys import KeyStore, PrivateKey

from ._cli import cli_command, cli_env, free_port, wait_healthy

pytestmark = pytest.mark.e2e
PASSPHRASE = "e2e exchange passphrase"


def _env() -> dict[str, str]:
    return {**cli_env(), "METROCLOUD_KEY_PASSPHRASE": PASSPHRASE}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, data directory, server log) of a node serving on a free port."""
    data_dir = tmp_path / "node"
    init = subprocess.run(
        cli_command("init", data_dir=data_dir),
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    log = tmp_path / "serve.log"
    proc = None
    for _ in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cli_command("serve", "--host", "127.0.0.1", "--port", str(port), data_dir=data_dir),
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        if wait_healthy(proc, base, log):
            break
    else:
        pytest.fail(log.read_text(errors="replace")[-4000:])
    try:
        yield base, data_dir, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _party(
    base: str, admin: str, name: str, role: str, keys: Path, nb: str | None
) -> dict[str, str]:
    """Admit a party with a key made here, keep the key in its key directory, get a token."""
    key = PrivateKey.generate()
    body = {"name": name, "role": role, "public_key": key.public_key.to_spki_b64()}
    if nb:
        body["nb_number"] = nb
    auth = {"Authorization": f"Bearer {admin}"}
    party = httpx.post(f"{base}/api/v1/parties", json=body, headers=auth, trust_env=False)
    assert party.status_code == 201, party.text
    pid = party.json()["id"]
    token = httpx.post(f"{base}/api/v1/parties/{pid}/tokens", headers=auth, trust_env=False)
    assert token.status_code == 201, token.text
    store = KeyStore(keys, PASSPHRASE.encode())
    _files.ensure_private_directory(keys)
    _files.write_new_file(store.path(pid), key.to_pem(PASSPHRASE.encode()))
    return {"id": pid, "token": token.json()["token"], "keys": str(keys)}


def _exchange(base: str, who: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **_env(),
        "METROCLOUD_NODE_URL": base,
        "METROCLOUD_TOKEN": who["token"],
        "METROCLOUD_PARTY_KEYS": who["keys"],
    }
    return subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", "exchange", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_document_travels_end_to_end_and_the_node_never_holds_it(
    served: tuple[str, Path, Path], tmp_path: Path
) -> None:
    base, data_dir, log = served
    admin = json.loads((data_dir / "credentials.json").read_text())["node_admin"]["token"]
    man = _party(base, admin, "Meter Maker", "manufacturer", tmp_path / "man-keys", None)
    nb = _party(base, admin, "Prüfstelle", "notified_body", tmp_path / "nb-keys", "0102")

    marker = ("CONFIDENTIAL-" + secrets.token_hex(24)).encode()
    document = tmp_path / "technical-file.pdf"
    document.write_bytes(os.urandom(2_000_000) + marker + os.urandom(1_000_000))

    steps = [
        (nb, ("keygen", "--party", nb["id"])),
        (man, ("send", "--to", nb["id"], str(document))),
    ]
    for who, args in steps:
        done = _exchange(base, who, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    message = done.stdout.split()[1].rstrip(":")
    listed = _exchange(base, nb, "list", "--json")
    assert json.loads(listed.stdout)["items"][0]["id"] == message
    received = tmp_path / "received" / "file.pdf"
    fetched = _exchange(base, nb, "fetch", message, "-o", str(received), "--ack")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert received.read_bytes() == document.read_bytes()
    receipts = _exchange(base, man, "receipts", message, "--json")
    assert receipts.returncode == 0, receipts.stderr
    assert [r["recipient_id"] for r in json.loads(receipts.stdout)] == [nb["id"]]

    kept = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ct" for p in kept)  # the ciphertext is there ...
    for path in [*kept, log]:  # ... and nowhere a byte of the plaintext
        data = path.read_bytes()
        assert marker not in data and marker.hex().encode() not in data, path
    assert "Application startup complete" in log.read_text(errors="replace")
    audit = subprocess.run(
        cli_command("audit", data_dir=data_dir),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
