"""``metrocloud exchange``: keygen, send, list, fetch, ack, receipts against a node (the real
app in-process through the CLI's own HTTP client), the keys in the parties' directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from metrocloud.cli import _exchange_client as client_mod
from metrocloud.cli import app
from metrocloud.services._exchange_files import ciphertext_path
from metrocloud.trust import _files
from metrocloud.trust.encryption import encryption_key_path
from metrocloud.trust.keys import KeyStore
from tests.conftest import Member, World

runner = CliRunner()
PASSPHRASE = "exchange test passphrase"


@pytest.fixture
def cli(client: TestClient, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """The CLI talks to the test node; each party's signing key sits in its key directory."""

    def make(node: str | None, token: str | None) -> client_mod.Client:
        assert node == "http://node.test" and token
        http = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
        return client_mod.Client(http, node)

    monkeypatch.setattr(client_mod, "make_client", make)
    monkeypatch.setenv("METROCLOUD_KEY_PASSPHRASE", PASSPHRASE)
    for member in world.members.values():
        store = KeyStore(keys_of(tmp_path, member), PASSPHRASE.encode())
        _files.ensure_private_directory(store.directory)
        _files.write_new_file(store.path(member.id), member.key.to_pem(PASSPHRASE.encode()))
    return world


def keys_of(tmp_path: Path, member: Member) -> Path:
    return tmp_path / "keys" / member.party["name"]


def run(tmp_path: Path, member: Member, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        ["exchange", *args],
        env={
            "METROCLOUD_NODE_URL": "http://node.test",
            "METROCLOUD_TOKEN": member.token,
            "METROCLOUD_PARTY_KEYS": str(keys_of(tmp_path, member)),
            "COLUMNS": "250",
        },
    )
    return result.exit_code, result.stdout, result.stderr


def test_send_fetch_acknowledge(cli: World, tmp_path: Path) -> None:
    man1, nb1, auth1 = cli.man1, cli.nb1, cli.auth1
    for member in (nb1, auth1):
        code, out, err = run(tmp_path, member, "keygen", "--party", member.id)
        assert code == 0, err
        assert "registered at http://node.test" in out
        assert encryption_key_path(keys_of(tmp_path, member), member.id).exists()
    document = tmp_path / "technical-file.pdf"
    document.write_bytes(b"%PDF-1.7 type examination file " + os.urandom(3 * 1024 * 1024))

    code, out, err = run(tmp_path, man1, "send", "--to", nb1.id, "--to", auth1.id, str(document))
    assert code == 0, err
    message_id = out.split()[1].rstrip(":")
    assert message_id.startswith("xch-DE-") and "application/pdf" in out

    code, out, err = run(tmp_path, nb1, "list", "--json")
    assert code == 0, err
    [listed] = json.loads(out)["items"]
    assert listed["id"] == message_id and listed["size"] == document.stat().st_size
    code, out, _ = run(tmp_path, man1, "list", "--box", "out")
    assert code == 0 and message_id in out

    received = tmp_path / "inbox" / "file.pdf"
    code, out, err = run(tmp_path, nb1, "fetch", message_id, "-o", str(received), "--ack")
    assert code == 0, err
    assert received.read_bytes() == document.read_bytes()
    assert oct(received.stat().st_mode & 0o777) == oct(0o600)
    assert "signature and all 4 chunks verified" in out and "acknowledged" in out

    code, out, err = run(tmp_path, auth1, "ack", message_id)
    assert code == 0, err
    code, out, err = run(tmp_path, man1, "receipts", message_id, "--json")
    assert code == 0, err
    assert {r["recipient_id"] for r in json.loads(out)} == {nb1.id, auth1.id}
    code, out, err = run(tmp_path, man1, "receipts", message_id)
    assert code == 0 and out.count("verified") == 2, out


def test_refusals_are_one_line_and_leave_no_plaintext(cli: World, tmp_path: Path) -> None:
    man1, nb1, man2 = cli.man1, cli.nb1, cli.man2
    assert run(tmp_path, nb1, "keygen", "--party", nb1.id)[0] == 0
    document = tmp_path / "report.txt"
    document.write_bytes(b"inspection report " * 1000)
    code, _, err = run(tmp_path, man1, "send", "--to", man2.id, str(document))
    assert code == 2 and "no encryption key" in err and err.count("\n") == 1
    code, out, err = run(tmp_path, man1, "send", "--to", nb1.id, str(document))
    assert code == 0, err
    message_id = out.split()[1].rstrip(":")
    # not a party to the message: the node says it does not exist
    code, _, err = run(tmp_path, man2, "fetch", message_id, "-o", str(tmp_path / "x"))
    assert code == 2 and "404" in err
    # the stored ciphertext damaged: refused, and nothing is written
    path = ciphertext_path(cli.node.settings.data_dir, message_id)
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(data)
    target = tmp_path / "out" / "report.txt"
    code, _, err = run(tmp_path, nb1, "fetch", message_id, "-o", str(target))
    assert code == 2 and "damaged" in err
    assert not target.exists() and list(target.parent.iterdir()) == []
    # keygen for a party whose signing key is not in the directory
    code, _, err = run(tmp_path, man2, "keygen", "--party", nb1.id)
    assert code == 2 and "no signing key" in err


def test_keygen_offline_creates_both_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METROCLOUD_KEY_PASSPHRASE", PASSPHRASE)
    party = "pty-DE-01M85V4ZZ70009HDV0WED1ZQ2K"
    keys = tmp_path / "new-party"
    result = runner.invoke(
        app,
        ["exchange", "keygen", "--party", party, "--keys", str(keys), "--new-signing-key"],
        env={"METROCLOUD_NODE_URL": "", "METROCLOUD_TOKEN": ""},
    )
    assert result.exit_code == 0, result.stderr
    assert "not registered" in result.stdout and "public key" in result.stdout
    assert (keys / f"{party}.key.pem").exists()
    assert encryption_key_path(keys, party).exists()
