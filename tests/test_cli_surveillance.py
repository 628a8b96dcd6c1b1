"""``metrocloud surveillance``: the commands act as the party of the token they are given,
record what the API records, and fail with one stderr line (exit 2) on bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.services import events as ev
from metrocloud.services import surveillance as svc
from metrocloud.services.audit import audit
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from tests.conftest import World

runner = CliRunner()


@dataclass
class Cli:
    world: World
    data_dir: Path
    ids: list[str]

    def run(self, *args: str, who: str = "auth1") -> tuple[int, str, str]:
        token = self.world.members[who].token
        result = runner.invoke(
            app,
            ["surveillance", *args, "--token", token, "--data-dir", str(self.data_dir)],
        )
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    data_dir = tmp_path / "node"
    node = Node.open(Settings(data_dir=data_dir, country="DE"))
    world = World(node)
    for name, role in (
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
    ):
        world.admit(name, role)
    cert = world.certificate(world.nb1, world.man1)
    ids = [r["id"] for r in world.instruments(world.man1, cert, 10)]
    for who, kind in (
        (world.man1, EventKind.PLACED_ON_MARKET),
        (world.op1, EventKind.PUT_INTO_SERVICE),
    ):
        ev.record_events(node, who.actor, [ev.EventDraft(instrument_id=i, kind=kind) for i in ids])
    ev.record_events(
        node, world.op1.actor, [ev.EventDraft(instrument_id=ids[4], kind=EventKind.SEAL_BROKEN)]
    )
    yield Cli(world, data_dir, ids)
    node.db.dispose()


def test_risk_and_plan(cli: Cli) -> None:
    code, out, err = cli.run("risk", "--instrument", cli.ids[4], "--no-lake", "--json")
    assert (code, err) == (0, ""), err
    risk = json.loads(out)
    assert risk["instrument_id"] == cli.ids[4] and risk["reasons"][0].startswith("critical")
    code, out, err = cli.run("plan", "--budget", "3", "--seed", "11", "--no-lake", "--json")
    assert (code, err) == (0, ""), err
    plan = json.loads(out)
    assert (
        plan["seed"] == 11 and plan["size"] == 3 and plan["items"][0]["instrument_id"] == cli.ids[4]
    )
    doc = {k: plan[k] for k in plan if k not in ("size", "digest", "leaf_index", "items")}
    doc["items"] = [
        {k: i[k] for k in ("rank", "instrument_id", "selection")} | {"score": i["score"]}
        for i in plan["items"]
    ]
    assert svc.plan_digest(doc) == plan["digest"]  # the committed digest can be recomputed
    code, out, err = cli.run("plan", "--budget", "3", "--no-lake")
    assert code == 0 and "committed at leaf" in " ".join(out.split()), err
    code, out, err = cli.run("risk", "--no-lake", "--top", "3", "--json")
    top = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(top) == 3 and top[0]["instrument_id"] == cli.ids[4]
    code, out, err = cli.run("risk", "--no-lake", "--top", "3")
    assert code == 0 and "the 3 riskiest instruments on the market" in out


def test_decide_notify_and_notices(cli: Cli, tmp_path: Path) -> None:
    lot = tmp_path / "lot.json"
    lot.write_text(
        json.dumps({"reference": "LOT-9", "lot_size": 10, "scheme": "iso2859", "aql": "6.5"})
    )
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            [
                {"instrument_id": cli.ids[0], "conforming": True},
                {"instrument_id": cli.ids[1], "conforming": False, "finding": "+5 %"},
            ]
        )
    )
    code, out, err = cli.run("decide", "--lot", str(lot), "--results", str(results), "--json")
    assert (code, err) == (0, ""), err
    decision = json.loads(out)
    assert (decision["decision"], decision["n"], decision["c"], decision["defects"]) == (
        "reject",
        2,
        0,
        1,
    )
    code, out, err = cli.run("decide", "--lot", str(lot), "--results", str(results), who="nb1")
    assert code == 0 and "REJECT" in out
    deadline = (cli.world.node.now() + timedelta(days=20)).date().isoformat()
    code, out, err = cli.run(
        "notify",
        "--instrument", cli.ids[1],
        "--instrument", cli.ids[2],
        "--finding", "error +5 % at Qmin",
        "--measure", "replace the meter",
        "--legal-basis", "MID 2014/32/EU Art. 40",
        "--deadline", deadline,
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert out.count("notice evt-") == 2
    code, out, err = cli.run("notices", "--json", who="op1")
    assert code == 0 and [json.loads(x)["instrument_id"] for x in out.splitlines()] == cli.ids[1:3]
    assert audit(cli.world.node).ok


def test_bad_input_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli.run("plan", "--budget", "3", "--no-lake", who="man1")
    assert code == 2 and err.startswith("error:") and "only authority" in err
    assert len(err.strip().splitlines()) == 1
    result = runner.invoke(
        app, ["surveillance", "plan", "--budget", "1", "--data-dir", str(cli.data_dir)], env={}
    )
    assert result.exit_code == 2 and "--token" in result.stderr
    code, _, err = cli.run("notify", "--instrument", cli.ids[0], "--finding", "x", "--measure", "y",
                           "--legal-basis", "z", "--deadline", "tomorrow")  # fmt: skip
    assert code == 2 and "YYYY-MM-DD" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = cli.run("decide", "--lot", str(bad), "--results", str(bad))
    assert code == 2 and "is not JSON" in err
    code, _, err = cli.run("notices", "--state", "maybe")
    assert code == 2 and "open, closed or all" in err
