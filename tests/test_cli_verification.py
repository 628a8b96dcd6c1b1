"""``metrocloud verification run``: evaluate, sign with the authority's key file, record."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.domain.instruments import EventKind
from metrocloud.services import events as ev
from metrocloud.services import verification as ver
from metrocloud.services.node import Node
from metrocloud.trust.keys import PrivateKey
from tests.conftest import Member, World
from tests.services import _verification_fleet as vf

runner = CliRunner()


def _run(node: Node, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    s = node.settings
    options = ["--data-dir", str(s.data_dir)] + (["--db", s.db] if s.db else [])
    environment = {"METROCLOUD_DB_SCHEMA": s.db_schema} if s.db_schema else {}
    result = runner.invoke(
        app, ["verification", "run", *args, *options], env={**environment, **(env or {})}
    )
    return result.exit_code, result.stdout, result.stderr


def _key_file(tmp_path: Path, member: Member, passphrase: bytes | None = None) -> Path:
    path = tmp_path / f"{member.id}.key.pem"
    path.write_bytes(member.key.to_pem(passphrase))
    path.chmod(0o600)
    return path


@pytest.fixture
def fleet(world: World) -> vf.Fleet:
    fleet = vf.register(world, world.certificate(world.nb1, world.man1), 5)
    vf.upload_logs(fleet)
    ev.record_events(
        world.node,
        world.op1.actor,
        [ev.EventDraft(instrument_id=fleet.ids[3], kind=EventKind.SEAL_BROKEN)],
    )
    return fleet


def test_a_lot_file_is_verified_signed_and_recorded(
    node: Node, world: World, fleet: vf.Fleet, tmp_path: Path
) -> None:
    lot = tmp_path / "lot.txt"
    lot.write_text("# the lot\n" + "\n".join(fleet.ids) + "\n\n")
    key = _key_file(tmp_path, world.auth1, b"correct horse battery staple")
    code, out, err = _run(
        node,
        "--lot",
        str(lot),
        "--key",
        str(key),
        "--party",
        world.auth1.id,
        "--part",
        "2",
        env={"METROCLOUD_AUTHORITY_KEY_PASSPHRASE": "correct horse battery staple"},
    )
    assert code == 1, (out, err)  # one instrument failed: a script sees it
    assert "5 verified: 4 passed, 1 failed" in out.replace("\n", " ")
    assert fleet.ids[3] in out and "seal-broken" in out
    assert "1 of 5 instrument(s) failed verification" in err
    for i, iid in enumerate(fleet.ids):
        items = ver.list_verifications(node, world.auth1.actor, iid).items
        assert [v["outcome"] for v in items] == ["fail" if i == 3 else "pass"]
        signed = ver.SignedResult.from_json(
            {"result": items[0]["result"], "signature": items[0]["signature"]}
        )
        ver.verify_result(signed, world.auth1.key.public_key)
    # the passing ones again, named one by one, with an unencrypted key: exit 0
    (tmp_path / "plain").mkdir()
    plain = _key_file(tmp_path / "plain", world.auth1)
    args = [a for iid in fleet.ids[:2] for a in ("--instrument", iid)]
    code, out, err = _run(node, *args, "--key", str(plain), "--party", world.auth1.id)
    assert code == 0, (out, err)
    assert "2 verified: 2 passed, 0 failed" in out.replace("\n", " ")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong key", "is not the key registered for"),
        ("not an authority", "only an authority verifies"),
        ("encrypted, no passphrase", "is encrypted: set $METROCLOUD_AUTHORITY_KEY_PASSPHRASE"),
        ("both", "not both"),
        ("unknown instrument", "does not exist"),
    ],
)
def test_refusals_are_one_line_and_record_nothing(
    node: Node, world: World, fleet: vf.Fleet, tmp_path: Path, case: str, message: str
) -> None:
    key, party, lot = _key_file(tmp_path, world.auth1), world.auth1.id, ["-i", fleet.ids[0]]
    if case == "wrong key":
        key = _key_file(tmp_path, world.auth2)
    elif case == "not an authority":
        key, party = _key_file(tmp_path, world.man1), world.man1.id
    elif case == "encrypted, no passphrase":
        key = tmp_path / "enc.key.pem"
        key.write_bytes(PrivateKey.generate().to_pem(b"some passphrase here"))
    elif case == "both":
        lot = [*lot, "--lot", str(tmp_path / "lot.txt")]
    elif case == "unknown instrument":
        lot = ["-i", "ins-DE-00000000000000000000000000"]
    with node.db.read() as conn:
        before = node.log.tree_size(conn)
    code, out, err = _run(node, *lot, "--key", str(key), "--party", party)
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err  # one line (beside the progress)
    with node.db.read() as conn:
        assert node.log.tree_size(conn) == before
