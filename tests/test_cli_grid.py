"""``metrocloud grid ...``: the anchor's and the operator's commands, one clear line for every
refusal (docs/grid.md)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from metrocloud.cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _refused(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 2, r.output
    return r.output


def test_anchor_admission_join_peers_status_sync(tmp_path: Path) -> None:
    anchor, de, fr = tmp_path / "anchor", tmp_path / "de", tmp_path / "fr"
    assert "grid anchor" in _ok("grid", "init-anchor", "--dir", str(anchor))
    assert "already holds a grid anchor" in _refused("grid", "init-anchor", "--dir", str(anchor))
    assert (anchor / "anchor.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "ENCRYPTED PRIVATE KEY" in (anchor / "keys" / "anchor.key.pem").read_text()
    admissions = {}
    for d, c in ((de, "DE"), (fr, "FR")):
        _ok("init", "--data-dir", str(d), "--country", c)
        pem = tmp_path / f"{c}.pub.pem"
        assert f"({c})" in _ok("grid", "identity", "--data-dir", str(d), "-o", str(pem))
        admissions[c] = tmp_path / f"{c}.admission.json"
        out = _ok(
            "grid",
            "admit",
            "--anchor",
            str(anchor),
            "--node-key-file",
            str(pem),
            "--country",
            c,
            "--base-url",
            "http://127.0.0.1:9",
            "-o",
            str(admissions[c]),
        )
        assert f"node-{c}-" in out
    assert "exactly one of" in _refused(
        "grid", "admit", "--anchor", str(anchor), "--country", "DE", "-o", str(tmp_path / "x")
    )
    anchor_key = str(anchor / "anchor.pub.pem")
    # a node cannot join with another node's admission
    assert "the admission is for node" in _refused(
        "grid", "join", str(admissions["FR"]), "--anchor-key", anchor_key, "--data-dir", str(de)
    )
    assert "has not joined a grid" in _refused(
        "grid", "peers", "add", str(admissions["FR"]), "--data-dir", str(de)
    )
    assert "joined the grid" in _ok(
        "grid", "join", str(admissions["DE"]), "--anchor-key", anchor_key, "--data-dir", str(de)
    )
    out = _ok("grid", "peers", "add", str(admissions["FR"]), "--data-dir", str(de))
    assert "added; 0 statements" in out
    listed = _ok("grid", "peers", "list", "--data-dir", str(de))
    assert "this node" in listed and "FR" in listed
    # FR does not listen (port 9): the sync retries later, and the status says so
    synced = _ok("grid", "sync", "--data-dir", str(de))
    assert "unreachable 1" in synced
    status = json.loads(_ok("grid", "status", "--json", "--data-dir", str(de)))
    (peer,) = status["peers"]
    assert peer["country"] == "FR" and peer["last_error"]
    assert "peers" in _ok("grid", "status", "--data-dir", str(de))
    removed = _ok(
        "grid", "peers", "remove", peer["node_id"], "--reason", "test", "--data-dir", str(de)
    )
    assert "removed" in removed
    assert "not an admitted peer" in _refused(
        "grid", "peers", "remove", peer["node_id"], "--reason", "again", "--data-dir", str(de)
    )
