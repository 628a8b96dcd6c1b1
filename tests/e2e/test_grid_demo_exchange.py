"""``metrocloud demo --grid 3``: a newcomer can try the confidential exchange on it.

One grid demo, served, for the whole module (three processes: slow). The demo keeps the
keys of each party it hands a token to in that party's own key directory, named in
``grid.json``, and seeds one exchange: the German manufacturer's technical file to the
French notified body, opened and acknowledged. Here: the file opens with the notified
body's key directory and equals the sender's copy; the receipt verifies under the notified
body's signing key; no node's files or logs hold the document or a party's private key;
each key directory holds its own party's keys only, 0700/0600; and a new document sent with
the ``metrocloud exchange`` CLI, from the Dutch authority to the German manufacturer, with
keys and tokens from ``grid.json``, arrives, opens and is acknowledged back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from metrocloud.domain.errors import VerificationError
from metrocloud.services.demo import ROLES
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.encryption import encryption_key_path, load_or_create_encryption_key
from metrocloud.trust.keys import KeyStore, PublicKey
from metrocloud.trust.receipts import Receipt

from ._cli import cli_command, cli_env, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GRID_ENV = {  # short delivery rounds for the served nodes (the demo passes them on)
    "METROCLOUD_GRID_OUTBOX_INTERVAL_S": "0.2",
    "METROCLOUD_GRID_RETRY_BASE_S": "0.2",
    "METROCLOUD_GRID_RETRY_MAX_S": "1",
}
DEADLINE = 60.0  # seconds a delivery across the grid may take on a loaded machine
EXCHANGE_ROLES = {"notified_body", "manufacturer", "operator", "authority"}


@dataclass(frozen=True)
class Demo:
    data_dir: Path
    grid: dict[str, Any]
    output: Path  # what the demo process printed (stdout and stderr)

    def cred(self, country: str, role: str) -> dict[str, str]:
        node = next(n for n in self.grid["nodes"] if n["country"] == country)
        return dict(node["credentials"][role])

    def url(self, country: str) -> str:
        return str(next(n["base_url"] for n in self.grid["nodes"] if n["country"] == country))


def _three_free_ports() -> int:
    """A port P with P, P+1 and P+2 free on the loopback interface a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base > 65000:
            continue
        try:
            for p in (base + 1, base + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no three consecutive free ports")


def _env() -> dict[str, str]:
    env = {**cli_env(), **GRID_ENV}
    # the demo's key directories carry their own passphrase files; a passphrase in the
    # environment would be used instead (docs/exchange.md#demo)
    env.pop("METROCLOUD_KEY_PASSPHRASE", None)
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("grid-demo")
    data_dir, output = root / "demo", root / "demo.out"
    port = _three_free_ports()
    cmd = cli_command(
        "demo", "--grid", "3", "--port", str(port), "--instruments", "70", data_dir=data_dir
    )
    with output.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # seeding three nodes, then starting them
        while not (data_dir / "grid.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the grid demo did not seed:\n{output.read_text()[-4000:]}")
            time.sleep(0.5)
        grid = json.loads((data_dir / "grid.json").read_text())
        for n in grid["nodes"]:
            log = data_dir / f"{n['country'].lower()}.log"
            assert wait_healthy(proc, n["base_url"], log), output.read_text()[-4000:]
        yield Demo(data_dir, grid, output)
    finally:
        proc.send_signal(signal.SIGTERM)  # stops the nodes like Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exchange(demo: Demo, country: str, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``metrocloud exchange ARGS`` as the party of ``role`` on ``country``'s node, with the
    token and key directory grid.json names (what the docs' walkthrough does)."""
    c = demo.cred(country, role)
    cmd = [sys.executable, "-m", "metrocloud.cli", "exchange", *args]
    cmd += ["--node", demo.url(country), "--token", c["token"]]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def _api(demo: Demo, country: str, role: str, path: str) -> Any:
    r = httpx.get(
        f"{demo.url(country)}/api/v1{path}",
        headers={"Authorization": f"Bearer {demo.cred(country, role)['token']}"},
        timeout=10,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE:.0f} s: {what}")
        time.sleep(0.5)


def _forms(secret: bytes) -> list[bytes]:
    """A secret as it would show in a file: in the clear, hex, base64, base64url."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def _holders(paths: list[Path], secrets_: dict[str, bytes]) -> list[str]:
    """``file: secret`` for every file under ``paths`` holding one of ``secrets_``."""
    found = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            data = path.read_bytes()
            for name, secret in secrets_.items():
                if any(form in data for form in _forms(secret)):
                    found.append(f"{path}: {name}")
    return found


def test_the_seeded_technical_file_opens_with_the_notified_bodys_key_directory(
    demo: Demo, tmp_path: Path
) -> None:
    x = demo.grid["exchange"]
    man, nb = demo.cred("DE", "manufacturer"), demo.cred("FR", "notified_body")
    assert (x["sender_id"], x["recipient_ids"]) == (man["party_id"], [nb["party_id"]])
    sent = Path(x["document"])
    assert stat.S_IMODE(sent.stat().st_mode) == 0o600
    document = sent.read_bytes()
    assert document.startswith(b"%PDF-1.4") and document.rstrip().endswith(b"%%EOF")
    assert hashlib.sha256(document).hexdigest() == x["sha256"]

    inbox = _json(_exchange(demo, "FR", "notified_body", "list", "--json"))["items"]
    seeded = next(m for m in inbox if m["id"] == x["message_id"])
    assert seeded["sender_id"] == man["party_id"] and seeded["content_type"] == "application/pdf"
    assert [r["acknowledged_at"] is not None for r in seeded["recipients"]] == [True]

    out = tmp_path / "technical-file.pdf"
    fetched = _exchange(
        demo, "FR", "notified_body", "fetch", x["message_id"], "-o", str(out), "--keys", nb["keys"]
    )
    assert "signature and all 1 chunks verified" in fetched.stdout
    assert out.read_bytes() == document

    # the receipt, back on the sender's node: checked by the CLI, and here offline under the
    # notified body's own signing key (from its key directory) and the message's header
    receipts = _json(_exchange(demo, "DE", "manufacturer", "receipts", x["message_id"], "--json"))
    assert [r["recipient_id"] for r in receipts] == [nb["party_id"]]
    receipt = Receipt.from_json(receipts[0]["receipt"])
    keys = Path(nb["keys"])
    signing = KeyStore(keys, KeyStore.passphrase_from(keys)).load(nb["party_id"])
    receipt.verify(signing.public_key)
    envelope = Envelope.from_json(
        _api(demo, "DE", "manufacturer", f"/exchange/messages/{x['message_id']}")["envelope"]
    )
    assert (receipt.message_id, receipt.header_sha256) == (envelope.id, envelope.header_sha256)
    other = KeyStore(Path(man["keys"]), KeyStore.passphrase_from(Path(man["keys"])))
    with pytest.raises(VerificationError):
        receipt.verify(other.load(man["party_id"]).public_key)


def test_no_node_holds_the_document_or_a_partys_private_key(demo: Demo) -> None:
    x = demo.grid["exchange"]
    document = Path(x["document"]).read_bytes()
    reference = re.search(rb"TD-DE-[0-9A-F]{16}", document)
    assert reference is not None
    hidden = {"document": document, "its reference": reference.group()}
    for n in demo.grid["nodes"]:
        for role, c in n["credentials"].items():
            for pem in Path(c["keys"]).glob("*.pem"):
                hidden[f"{n['country']} {role} {pem.name}"] = pem.read_bytes()
            hidden[f"{n['country']} {role} passphrase"] = (
                (Path(c["keys"]) / "passphrase").read_bytes().strip()
            )
    nodes = [Path(n["data_dir"]) for n in demo.grid["nodes"]]
    logs = sorted(demo.data_dir.glob("*.log"))
    assert len(logs) == 3
    # the search finds what is there: the sender's copy and the keys in their directories
    assert _holders([Path(x["document"])], {"document": document}) != []
    in_keys = {h.rsplit(": ", 1)[1] for h in _holders([demo.data_dir / "parties"], hidden)}
    assert in_keys == set(hidden) - {"document", "its reference"}
    # the nodes hold the ciphertext (sender's and recipient's node), nothing that opens it
    for country in ("de", "fr"):
        stored = list((demo.data_dir / country / "exchange").rglob(f"{x['message_id']}.ct"))
        assert len(stored) == 1 and stored[0].stat().st_size == len(document) + 16
    assert _holders([*nodes, *logs, demo.output], hidden) == []


def test_each_key_directory_holds_its_own_partys_keys_only(demo: Demo) -> None:
    parties = demo.data_dir / "parties"
    for d in (parties, *parties.iterdir()):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    seen: set[Path] = set()
    for n in demo.grid["nodes"]:
        country = n["country"]
        assert set(n["credentials"]) == set(ROLES)
        for role, c in n["credentials"].items():
            assert set(c) == {"party_id", "token", "keys"}
            keys, pid = Path(c["keys"]), c["party_id"]
            assert keys == parties / country / role and keys not in seen
            seen.add(keys)
            assert stat.S_IMODE(keys.stat().st_mode) == 0o700
            expected = {"passphrase", f"{pid}.key.pem"}
            if role in EXCHANGE_ROLES:  # the node admin takes no part in the exchange
                expected.add(f"{pid}.x25519.key.pem")
            assert {p.name for p in keys.iterdir()} == expected, keys
            for p in keys.iterdir():
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
                if p.suffix == ".pem":
                    assert p.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            passphrase = KeyStore.passphrase_from(keys)
            signing = KeyStore(keys, passphrase).load(pid)
            party = _api(demo, country, "node_admin", f"/parties/{pid}")
            assert PublicKey.from_spki_b64(party["public_key"]) == signing.public_key
            if role in EXCHANGE_ROLES:
                key = load_or_create_encryption_key(keys, passphrase, pid, create=False)
                registered = _api(demo, country, role, f"/exchange/keys/{pid}")
                assert registered["key_id"] == key.key_id
                assert encryption_key_path(keys, pid).exists()


def test_a_new_document_from_the_dutch_authority_reaches_the_german_manufacturer(
    demo: Demo, tmp_path: Path
) -> None:
    auth, man = demo.cred("NL", "authority"), demo.cred("DE", "manufacturer")
    report = tmp_path / "inspection-report.txt"
    report.write_bytes(b"Inspection report " + secrets.token_hex(16).encode() + b"\n" * 3)
    sent = _exchange(
        demo,
        "NL",
        "authority",
        "send",
        str(report),
        "--to",
        man["party_id"],
        "--keys",
        auth["keys"],
    )
    found = re.search(r"sent (xch-NL-[0-9A-Z]+)", sent.stdout)
    assert found is not None, sent.stdout
    message_id = found.group(1)

    def arrived() -> bool:
        inbox = _json(_exchange(demo, "DE", "manufacturer", "list", "--json"))["items"]
        return any(m["id"] == message_id for m in inbox)

    _until(f"{message_id} in the German manufacturer's inbox", arrived)
    out = tmp_path / "received.txt"
    fetched = _exchange(
        demo,
        "DE",
        "manufacturer",
        "fetch",
        message_id,
        "-o",
        str(out),
        "--ack",
        "--keys",
        man["keys"],
    )
    assert f"acknowledged {message_id}" in fetched.stdout
    assert out.read_bytes() == report.read_bytes()

    def acknowledged() -> bool:
        done = _exchange(demo, "NL", "authority", "receipts", message_id, "--json")
        return [r["recipient_id"] for r in _json(done)] == [man["party_id"]]

    _until(f"the receipt of {message_id} back on the Dutch node", acknowledged)
    # a party of the grid that is not a recipient cannot even see it
    r = httpx.get(
        f"{demo.url('FR')}/api/v1/exchange/messages/{message_id}",
        headers={"Authorization": f"Bearer {demo.cred('FR', 'notified_body')['token']}"},
        timeout=10,
        trust_env=False,
    )
    assert r.status_code == 404
