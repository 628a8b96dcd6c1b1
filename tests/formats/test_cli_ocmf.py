"""``metrocloud ocmf verify``: exit codes, JSON lines, stderr lines for unreadable files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrocloud import cli
from metrocloud.cli import app

from ._support import FIXTURES, Signer, payload, record

KEYS = ["file", "index", "verdict", "reason", "algorithm", "meter_serial", "readings"]
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ocmf", "verify", *args])
    return result.exit_code, result.stdout, result.stderr


def lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_valid_file_exits_0_with_one_json_line_per_value() -> None:
    code, out, err = run("--json", str(FIXTURES / "brainpoolP256r1.xml"))
    assert (code, err) == (0, "")
    records = lines(out)
    assert [list(r) for r in records] == [KEYS, KEYS]
    assert [(r["index"], r["verdict"], r["reason"]) for r in records] == [
        (0, "valid", None),
        (1, "valid", None),
    ]
    assert records[0]["readings"] == [
        {
            "time": "2021-10-26T11:15:09,000+0000 S",
            "transaction": "B",
            "value": "1833",
            "unit": "Wh",
            "obis": "1-0:1.8.1",
            "status": "G",
        }
    ]


def test_any_value_not_valid_exits_1() -> None:
    code, out, err = run(
        "--json",
        str(FIXTURES / "test_ocmf_keba_kcp30.xml"),
        str(FIXTURES / "test_ocmf_keba_kcp30_fail.xml"),
    )
    assert (code, err) == (1, "")
    assert [r["verdict"] for r in lines(out)] == ["valid", "invalid"]


def test_non_ocmf_values_are_error_verdicts() -> None:
    code, out, _ = run("--json", str(FIXTURES / "edl-40-01.xml"))
    assert code == 1
    (r,) = lines(out)
    assert r["verdict"] == "error" and str(r["reason"]).startswith("not OCMF")


def test_unreadable_files_one_stderr_line_each_after_reporting_the_others(tmp_path: Path) -> None:
    missing = tmp_path / "missing.xml"
    code, out, err = run(
        "--json",
        str(missing),
        str(FIXTURES / "test_ocmf_ebee_01.xml"),
        str(FIXTURES / "test_input_invalid_xml.xml"),
    )
    assert code == 2
    assert [r["verdict"] for r in lines(out)] == ["valid", "valid"]
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 2
    assert err_lines[0] == f"error: {missing}: cannot read: No such file or directory"
    assert err_lines[1].startswith(
        f"error: {FIXTURES / 'test_input_invalid_xml.xml'}: invalid XML at line 1, column 1"
    )


def test_bare_ocmf_file_with_key_option(tmp_path: Path) -> None:
    signer = Signer.generate("secp256k1")
    path = tmp_path / "record.ocmf"
    path.write_text(record(signer, payload()) + "\n")
    code, out, _ = run("--json", str(path))
    assert code == 1
    assert str(lines(out)[0]["reason"]).startswith("no public key")
    code, out, _ = run("--json", "--key", signer.public_der().hex(), str(path))
    assert code == 0
    assert lines(out)[0]["algorithm"] == "ECDSA-secp256k1-SHA256"


def test_neither_xml_nor_ocmf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    code, out, err = run(str(path))
    assert (code, out) == (2, "")
    assert "neither a Transparenzsoftware XML container nor an OCMF record" in err


def test_table_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.out, "_width", 300)  # the console measured its terminal at import
    code, out, _ = run(str(FIXTURES / "test_ocmf_ebee_02.xml"), str(FIXTURES / "ocmf_sec.xml"))
    assert code == 1
    assert "2 valid, 2 invalid" in out
    assert "verdict" in out and "ECDSA-secp256k1-SHA256" in out


def test_table_does_not_interpret_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.out, "_width", 300)
    path = tmp_path / "[bold]meter[red].xml"
    shutil.copy(FIXTURES / "test_ocmf_keba_kcp30.xml", path)
    code, out, _ = run(str(path))
    assert code == 0
    assert "[bold]meter[red].xml" in out
    assert "B 0.2596 kWh, E 0.2597 kWh" in out


def test_as_a_process() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "metrocloud.cli",
            "ocmf",
            "verify",
            "--json",
            str(FIXTURES / "nistP384_0Wh.xml"),
            str(FIXTURES / "second_key_fail_ocmf.xml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    records = lines(proc.stdout)
    assert [list(r) for r in records] == [KEYS] * 4
    assert [r["verdict"] for r in records] == ["valid", "valid", "invalid", "invalid"]


def test_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metrocloud.formats import ocmf

    monkeypatch.setattr(ocmf, "MAX_BYTES", 10)
    path = tmp_path / "big.xml"
    path.write_text("<values>" + " " * 20 + "</values>")
    code, _, err = run(str(path))
    assert code == 2
    assert f"error: {path}: larger than the 10 bytes accepted" in err
