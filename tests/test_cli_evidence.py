"""``metrocloud evidence``: export on the local node, verify offline in another process with
the node's data directory gone, the timeline; one clear stderr line for every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.domain.parties import PartyRole
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.schema import access_log
from metrocloud.trust.keys import PrivateKey
from tests._evidence import populate
from tests.conftest import World

runner = CliRunner()


@dataclass(frozen=True)
class Exported:
    data_dir: Path
    bundle: Path
    instrument: str
    node_id: str
    key_pem: Path  # the node's public key, kept apart from the data directory


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    root = tmp_path_factory.mktemp("cli-evidence")
    data_dir = root / "node"
    node = Node.open(Settings(data_dir=data_dir, country="DE"))
    world = World(node)
    for name, role in (
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
        ("auth2", PartyRole.AUTHORITY),
    ):
        world.admit(name, role)
    case = populate(world)
    key_pem = root / "node-key.pem"
    key_pem.write_text(node.key.public_key.to_pem())
    node_id = node.node_id
    node.close()
    bundle = root / "evidence.zip"
    result = runner.invoke(
        app,
        ["evidence", "export", "--instrument", case.instrument, "-o", str(bundle),
         "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"evidence bundle of {case.instrument}" in result.stdout
    yield Exported(data_dir, bundle, case.instrument, node_id, key_pem)


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    """``metrocloud evidence verify`` in a fresh process (no node object, no database)."""
    return subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", "evidence", "verify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("METROCLOUD_")},
            "COLUMNS": "200",
            "NO_COLOR": "1",
        },
    )


def test_the_export_is_in_the_owners_access_log_as_the_node_itself(exported: Exported) -> None:
    node = Node.open(Settings(data_dir=exported.data_dir, country="DE"), create=False)
    try:
        with node.db.read() as conn:
            readers = set(
                conn.execute(
                    select(access_log.c.reader_id, access_log.c.reader_role).where(
                        access_log.c.action == "evidence.export"
                    )
                ).all()
            )
    finally:
        node.close()
    assert readers == {(exported.node_id, "authority")}


def test_timeline_prints_a_table_or_json(exported: Exported) -> None:
    base = ["evidence", "timeline", "--instrument", exported.instrument]
    result = runner.invoke(app, [*base, "--json", "--data-dir", str(exported.data_dir)])
    assert result.exit_code == 0, result.output
    story = json.loads(result.stdout)
    assert story["instrument"]["id"] == exported.instrument
    assert "verification" in {e["type"] for e in story["entries"]}
    table = runner.invoke(
        app, [*base, "--data-dir", str(exported.data_dir)], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    assert "verified (passed)" in table.stdout and "1-0:1.8.0" in table.stdout
    windowed = runner.invoke(
        app, [*base, "--json", "--from", "2000-01-01", "--to", "2000-01-02",
              "--data-dir", str(exported.data_dir)],
    )  # fmt: skip
    assert windowed.exit_code == 0, windowed.output
    assert json.loads(windowed.stdout)["entries"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instrument", "ins-DE-00000000000000000000000000"], "does not exist"),
        (["--instrument", "X", "--from", "yesterday"], "--from must be an ISO 8601 date"),
        (["--instrument", "X", "--from", "2026-01-02", "--to", "2026-01-01"], "must be after"),
    ],
)
def test_export_refusals_are_one_line(
    exported: Exported, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "b.zip"
    result = runner.invoke(
        app, ["evidence", "export", *args, "-o", str(out), "--data-dir", str(exported.data_dir)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_verify_offline_in_another_process(exported: Exported, tmp_path: Path) -> None:
    # the node is gone: its data directory (keys, database, lake) deleted
    bundle = tmp_path / "evidence.zip"
    shutil.copy(exported.bundle, bundle)
    shutil.rmtree(exported.data_dir)

    ok = _verify(str(bundle))
    assert ok.returncode == 0, ok.stderr
    for n in range(1, 11):
        assert f"({n:>2}) PASS" in ok.stdout, ok.stdout
    assert "VALID" in ok.stdout and "not pinned" in ok.stdout and ok.stderr == ""

    pinned = _verify(str(bundle), "--trusted-key", str(exported.key_pem), "--json")
    assert pinned.returncode == 0, pinned.stderr
    report = json.loads(pinned.stdout)
    assert (report["verdict"], report["key_pinned"]) == ("valid", True)
    assert report["instrument_id"] == exported.instrument

    stranger = tmp_path / "stranger.pem"
    stranger.write_text(PrivateKey.generate().public_key.to_pem())
    foreign = _verify(str(bundle), "--trusted-key", str(stranger))
    assert foreign.returncode == 1
    assert "FAIL" in foreign.stdout
    [line] = foreign.stderr.strip().splitlines()
    assert "NOT valid" in line and "check (2)" in line and "trusted key" in line

    broken = bytearray(bundle.read_bytes())
    broken[len(broken) // 2] ^= 0x20
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(bytes(broken))
    failed = _verify(str(tampered), "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["verdict"] == "invalid"
    [line] = failed.stderr.strip().splitlines()
    assert "NOT valid" in line and "failed:" in line


def test_verify_refuses_unusable_input_with_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["evidence", "verify", str(tmp_path / "none.zip")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key")
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(b"PK")
    bad_key = runner.invoke(app, ["evidence", "verify", str(bundle), "--trusted-key", str(garbage)])
    assert bad_key.exit_code == 2 and len(bad_key.stderr.strip().splitlines()) == 1
    not_a_bundle = runner.invoke(app, ["evidence", "verify", str(bundle)])
    assert not_a_bundle.exit_code == 1
    assert "check (1)" in not_a_bundle.stderr


def test_the_verifier_needs_no_node_no_store_and_no_lake() -> None:
    """What ``verify_bundle`` imports: the formats, ledger and trust layers and below."""
    code = (
        "import sys, metrocloud.formats.evidence\n"
        "print(' '.join(sorted({m.split('.')[1] for m in sys.modules"
        " if m.startswith('metrocloud.')})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    layers = set(done.stdout.split())
    assert layers <= {"domain", "trust", "ledger", "formats", "_fs"}, layers
