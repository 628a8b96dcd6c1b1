"""``metrocloud compliance report``: the three reports to a file, and its one-line errors."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from metrocloud.cli import app
from metrocloud.domain.parties import PartyRole
from metrocloud.services import access
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from tests.conftest import World
from tests.services._compliance_registry import EXPECTED, Registry, build

runner = CliRunner()


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """A node on disk (SQLite) holding the compliance test registry; closed before the CLI
    opens it."""
    node = Node.open(Settings(data_dir=tmp_path / "node", country="DE"))
    world = World(node)
    for name, role in (
        ("admin", PartyRole.NODE_ADMIN),
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("nb2", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("man2", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("op2", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
        ("auth2", PartyRole.AUTHORITY),
    ):
        world.admit(name, role)
    registry = build(world)
    node.close()
    yield registry
    node.close()


def run(reg: Registry, *args: str) -> tuple[int, str, str]:
    data_dir = str(reg.node.settings.data_dir)
    result = runner.invoke(app, ["compliance", "report", *args, "--data-dir", data_dir])
    return result.exit_code, result.stdout, result.stderr


def test_manufacturer_report_as_html(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "man1.html"
    code, out, err = run(reg, "--manufacturer", reg.world.man1.id, "-o", str(path))
    assert code == 0, err
    assert f"verdict fail, {len(EXPECTED)} instruments, 6 failing" in out.replace("\n", " ")
    assert "criteria" in err and "render" in err  # the progress bars
    root = ET.fromstring(path.read_text().split("\n", 1)[1])
    assert len(list(root.iter("{http://www.w3.org/2000/svg}svg"))) == 3
    # the node read man1's data as its authority: that is in man1's access log
    log = access.list_access_log(reg.node, reg.world.man1.actor, limit=1000, cursor=None)
    assert (reg.node.node_id, "compliance.manufacturer") in {
        (e["reader_id"], e["action"]) for e in log.items
    }


def test_instrument_report_as_json_and_type_report_as_pdf(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "report.out"
    code, out, err = run(
        reg, "--instrument", reg.ids["VERI-1"], "--format", "json", "-o", str(path)
    )
    assert code == 0, err
    doc = json.loads(path.read_text())
    assert doc["instrument"]["serial"] == "VERI-1"
    assert [c["criterion"] for c in doc["criteria"] if c["outcome"] == "fail"] == [
        "verification_current"
    ]
    pdf = tmp_path / "type.pdf"
    code, out, err = run(reg, "--type", reg.cert_w["id"], "-o", str(pdf), "--limit", "1")
    assert code == 0, err
    assert "type Test meter" in out and "1 instruments, 1 failing" in out
    reader = PdfReader(io.BytesIO(pdf.read_bytes()))
    assert "DE-W-0001" in reader.pages[0].extract_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --instrument, --manufacturer and --type"),
        (["--instrument", "x", "--type", "y"], "exactly one of"),
        (["--type", "cer-DE-00000000000000000000000000"], "does not exist"),
        (["--instrument", "ins-DE-00000000000000000000000000"], "does not exist"),
        (["--manufacturer", "pty-DE-00000000000000000000000000"], "not a party"),
    ],
)
def test_errors_are_one_line_and_leave_no_file(
    reg: Registry, tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "r.html"
    code, _out, err = run(reg, *args, "-o", str(path))
    assert code == 2 and message in err and err.count("error:") == 1, (code, err)
    assert not path.exists()


def test_format_from_the_suffix_or_refused(reg: Registry, tmp_path: Path) -> None:
    code, _, err = run(reg, "--type", reg.cert_a["id"], "-o", str(tmp_path / "r.docx"))
    assert code == 2 and "give --format" in err
    code, _, err = run(reg, "--type", reg.cert_a["id"], "-f", "xml", "-o", str(tmp_path / "r"))
    assert code == 2 and "--format must be one of json, html, pdf" in err
    assert list(tmp_path.glob("r*")) == []
