"""``metrocloud aas export``: files the IDTA test engines accept, read back by basyx."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aas_core3 import jsonization, xmlization
from aas_core3 import types as aas
from aas_test_engines import file as engines
from basyx.aas import model as basyx_model
from basyx.aas.adapter.aasx import AASXReader, DictSupplementaryFileContainer
from basyx.aas.adapter.json import read_aas_json_file
from sqlalchemy import event
from typer.testing import CliRunner

from metrocloud import twin
from metrocloud.cli import app
from metrocloud.domain.errors import InvalidInput
from metrocloud.services import aas_export
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.twin.ids import shell_id, submodel_id
from tests.conftest import World

from .conftest import Fleet, register


def _export(settings: Settings, out: Path, *args: str) -> Any:
    argv = ["aas", "export", *args, "-o", str(out), "--data-dir", str(settings.data_dir)]
    if settings.db:
        argv += ["--db", settings.db]
    env = {"METROCLOUD_DB_SCHEMA": settings.db_schema} if settings.db_schema else {}
    return CliRunner().invoke(app, argv, env=env)


def _check(path: Path, fmt: str) -> None:
    """The IDTA aas-test-engines: metamodel, constraints and (Nameplate) template checks."""
    if fmt == "aasx":
        with path.open("rb") as f:
            result = engines.check_aasx_file(f)
    else:
        with path.open() as f:
            result = (engines.check_json_file if fmt == "json" else engines.check_xml_file)(f)
    assert result.ok(), "\n".join(str(line) for line in result.to_lines())


def _read_back(path: Path, fmt: str) -> tuple[set[str], set[str], int]:
    """Shell ids, submodel ids and concept count, as a reader other than ours sees them."""
    if fmt == "json":
        store = read_aas_json_file(path, failsafe=False)
    elif fmt == "aasx":
        store = basyx_model.DictIdentifiableStore()
        with AASXReader(str(path), failsafe=False) as reader:
            reader.read_into(store, DictSupplementaryFileContainer())
    else:
        env = xmlization.environment_from_str(path.read_text())
        assert twin.verify(env) == []
        return (
            {s.id for s in env.asset_administration_shells or ()},
            {s.id for s in env.submodels or ()},
            len(env.concept_descriptions or ()),
        )
    kinds: dict[type, set[str]] = {}
    for obj in store:
        kinds.setdefault(type(obj), set()).add(obj.id)
    return (
        kinds.get(basyx_model.AssetAdministrationShell, set()),
        kinds.get(basyx_model.Submodel, set()),
        len(kinds.get(basyx_model.ConceptDescription, set())),
    )


def _expected(fleet: Fleet) -> tuple[set[str], set[str]]:
    records = [(i, twin.INSTRUMENT_SUBMODELS) for i in fleet.instruments]
    records += [(c["id"], twin.TYPE_SUBMODELS) for c in fleet.certificates]
    return (
        {shell_id(r) for r, _ in records},
        {submodel_id(r, n) for r, names in records for n in names},
    )


@pytest.mark.parametrize("fmt", ["aasx", "json", "xml"])
def test_all_of_every_category_passes_the_test_engines_and_reads_back(
    fleet: Fleet, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"fleet.{fmt}"
    result = _export(settings, out, "--all", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "exported 24 shells, 120 submodels" in result.output
    _check(out, fmt)
    shells, submodels = _expected(fleet)
    assert _read_back(out, fmt) == (shells, submodels, len(twin.CONCEPTS))


@pytest.mark.parametrize("fmt", ["aasx", "json", "xml"])
def test_one_instrument_comes_with_its_type(
    fleet: Fleet, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    iid, cert = fleet.instruments[3], fleet.certificates[1]
    out = tmp_path / f"one.{fmt}"
    result = _export(settings, out, "--instrument", iid)  # format from the suffix
    assert result.exit_code == 0, result.output
    _check(out, fmt)
    shells, submodels, concepts = _read_back(out, fmt)
    assert shells == {shell_id(iid), shell_id(cert["id"])}
    assert len(submodels) == 9 and submodel_id(iid, "LifeCycle") in submodels
    assert concepts == len(twin.CONCEPTS)


def test_one_type(fleet: Fleet, settings: Settings, tmp_path: Path) -> None:
    cert = fleet.certificates[5]
    out = tmp_path / "type.json"
    result = _export(settings, out, "--type", cert["id"], "--format", "json")
    assert result.exit_code == 0, result.output
    _check(out, "json")
    shells, submodels, _ = _read_back(out, "json")
    assert shells == {shell_id(cert["id"])}
    assert submodels == {submodel_id(cert["id"], n) for n in twin.TYPE_SUBMODELS}


@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)
def test_all_streams_a_few_hundred_instruments_in_keyset_batches(
    node: Node, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = world.certificate(world.nb1, world.man1)
    ids = register(world, cert, [f"S{i:04d}" for i in range(300)])
    monkeypatch.setattr(aas_export, "CHUNK", 64)
    monkeypatch.setattr(aas_export, "AASX_PART", 64)
    executed: list[tuple[str, Any]] = []
    event.listen(node.db.engine, "before_cursor_execute", lambda *a: executed.append(a[2:4]))
    seen: list[tuple[str, int, int]] = []
    late: list[str] = []

    def progress(what: str, done: int, total: int) -> None:
        seen.append((what, done, total))
        if (what, done) == ("submodels", 0):  # between the passes: a registration lands
            late.extend(register(world, cert, ["LATE1"]))

    out = tmp_path / "all.json"
    report = aas_export.export(node, all_=True, fmt="json", out=out, progress=progress)
    assert late and (report.shells, report.submodels) == (301, 300 * 6 + 3)
    data = json.loads(out.read_bytes())
    env = jsonization.environment_from_jsonable(data)
    assert twin.verify(env) == []
    assert [s.id for s in env.asset_administration_shells or ()][1:] == [shell_id(i) for i in ids]
    assert len(env.submodels or ()) == 1803 and len(env.concept_descriptions or ()) > 40
    assert not any(late[0] in sm.id for sm in env.submodels or ())  # the export's cut holds
    _check(out, "json")
    # keyset, never OFFSET: batches of 64 after the last id (SQLite renders LIMIT ? OFFSET 0)
    walks = [(s, p) for s, p in executed if "ORDER BY instruments.id" in s]
    assert len(walks) == 2 * 6  # shells, then submodels: 5 batches and the empty probe each
    assert all("instruments.id > ?" in s for s, _ in walks if s is not walks[0][0])
    assert all(p[-1] == 0 for s, p in executed if "OFFSET" in s)
    assert ("shells", 301, 301) in seen and ("submodels", 301, 301) in seen
    assert ("submodels", 65, 301) in seen  # the type, then the first batch of 64

    package = tmp_path / "all.aasx"
    report = aas_export.export(node, all_=True, fmt="aasx", out=package)
    assert report.parts == 1 + 5  # the type (with the concepts), then 301 in batches of 64
    with zipfile.ZipFile(package) as z:
        assert sum(n.startswith("aasx/data") and n.endswith(".json") for n in z.namelist()) == 6
    shells, submodels, concepts = _read_back(package, "aasx")
    assert len(shells) == 302 and len(submodels) == 1809 and concepts == len(twin.CONCEPTS)


def test_bad_requests_are_one_line_errors_and_leave_no_file(
    fleet: Fleet, settings: Settings, tmp_path: Path
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    out = target / "x.json"
    cases = [
        ((), "exactly one of"),
        (("--all", "--type", fleet.certificates[0]["id"]), "got type and all"),
        (("--instrument", "ins-DE-00000000000000000000000000"), "does not exist"),
        (("--all", "--format", "pdf"), "--format must be one of"),
    ]
    for args, message in cases:
        result = _export(settings, out, *args)
        assert result.exit_code == 2, result.output
        assert message in result.output
    result = _export(settings, target / "x.bin", "--all")
    assert result.exit_code == 2 and "give --format" in result.output
    result = _export(settings, target / "missing" / "x.json", "--all")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert list(target.iterdir()) == []  # not even a temporary file


def test_environment_stream_writes_as_it_goes_and_keeps_the_schema_order() -> None:
    buf = io.BytesIO()
    cds = twin.concept_descriptions()
    stream = twin.EnvironmentStream(buf, twin.AasFormat.JSON)
    sizes = []
    for cd in cds[:3]:
        stream.write(cd)
        sizes.append(buf.tell())
    assert sizes[0] < sizes[1] < sizes[2]  # nothing is held back until close
    shell = aas.AssetAdministrationShell(
        id="urn:x", asset_information=aas.AssetInformation(aas.AssetKind.INSTANCE, "urn:y")
    )
    with pytest.raises(InvalidInput, match="assetAdministrationShells must all come before"):
        stream.write(shell)
    stream.close()
    env = json.loads(buf.getvalue())
    assert list(env) == ["conceptDescriptions"] and len(env["conceptDescriptions"]) == 3
    empty = io.BytesIO()
    twin.EnvironmentStream(empty, twin.AasFormat.XML).close()
    assert twin.verify(xmlization.environment_from_str(empty.getvalue().decode())) == []
