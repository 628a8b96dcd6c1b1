"""``metrocloud sampling plan``: exit codes, the JSON keys, one stderr line on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.domain.sampling import iso2859_plan, mid_f_plan

MID_KEYS = ["scheme", "lot_size", "n", "c", "p_accept_at_1pct", "p_accept_at_7pct"]
ISO_KEYS = [*MID_KEYS, "code_letter", "re"]
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sampling", "plan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_mid_f_large_lot_json() -> None:
    code, out, err = run("--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert list(plan) == MID_KEYS
    assert plan["scheme"] == "mid-f" and plan["lot_size"] is None
    assert (plan["n"], plan["c"]) == (109, 3)
    assert plan["p_accept_at_1pct"] >= 0.95 and plan["p_accept_at_7pct"] <= 0.05


@pytest.mark.parametrize("lot", [5, 20, 100, 1000, 5000])
def test_mid_f_finite_lot_json_is_the_domain_plan(lot: int) -> None:
    code, out, err = run("--lot-size", str(lot), "--scheme", "mid-f", "--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert list(plan) == MID_KEYS
    expected = mid_f_plan(lot)
    assert (plan["lot_size"], plan["n"], plan["c"]) == (lot, expected.n, expected.c)
    assert abs(plan["p_accept_at_1pct"] - float(expected.p_accept_at_1pct)) < 1e-12
    assert abs(plan["p_accept_at_7pct"] - float(expected.p_accept_at_7pct)) < 1e-12


def test_iso2859_json() -> None:
    code, out, err = run("--lot-size", "1000", "--scheme", "iso2859", "--aql", "1.0", "--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert list(plan) == ISO_KEYS
    assert plan["scheme"] == "iso2859"
    assert (plan["lot_size"], plan["code_letter"], plan["n"], plan["c"], plan["re"]) == (
        1000,
        "J",
        80,
        2,
        3,
    )
    expected = iso2859_plan(1000, "1.0")
    assert abs(plan["p_accept_at_7pct"] - float(expected.p_accept_at_7pct)) < 1e-12


def test_iso2859_arrow_in_json() -> None:
    code, out, _ = run("--lot-size", "20", "--scheme", "iso2859", "--aql", "6.5", "--json")
    assert code == 0
    plan = json.loads(out)
    assert (plan["code_letter"], plan["n"], plan["c"], plan["re"]) == ("C", 8, 1, 2)


def test_readable_table_without_json() -> None:
    code, out, err = run("--lot-size", "8")
    assert (code, err) == (0, "")
    assert "sample size n" in out and "100 % inspection" in out
    code, out, _ = run("--lot-size", "600000", "--scheme", "iso2859", "--aql", "2.5")
    assert code == 0
    assert "code letter" in out and "Q (plan of letter N)" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--lot-size", "abc"], "--lot-size"),
        (["--lot-size", "0"], "lot size"),
        (["--lot-size", "-4", "--json"], "lot size"),
        (["--scheme", "iso"], "mid-f or iso2859"),
        (["--scheme", "iso2859", "--aql", "1.0"], "--lot-size and --aql"),
        (["--scheme", "iso2859", "--lot-size", "100"], "--lot-size and --aql"),
        (["--scheme", "iso2859", "--lot-size", "100", "--aql", "3"], "0.65, 1.0"),
        (["--scheme", "iso2859", "--lot-size", "1", "--aql", "1.0"], "Table"),
        (["--aql", "1.0"], "iso2859 only"),
    ],
)
def test_bad_input_is_one_stderr_line_and_exit_2(args: list[str], says: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
