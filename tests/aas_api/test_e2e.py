"""Acceptance: the IDTA test engine and a generic AAS client against ``metrocloud serve``.

A node seeded by ``metrocloud demo`` is served as a real process; the official
aas-test-engines (``aas_test_engines check_server``) run the AssetAdministrationShellRepository
and SubmodelRepository read profiles (SSP-002) against it with an authority's bearer token and
must find nothing to fail. Then basyx-python-sdk's JSON deserializer reads shells and
submodels over plain HTTP, and they equal what ``metrocloud aas export`` writes.

aas-test-engines 1.0.3 parses ``--header`` but never sends it (``HttpClient.send`` leaves
``additional_headers`` out of the request), so against a node that authenticates every AAS
route it could check nothing. The engine runs unmodified, as its console script, with a
``sitecustomize`` on its ``PYTHONPATH`` that adds the given headers to each request, which is
what ``--header`` documents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from basyx.aas.adapter.json import AASToJsonEncoder, StrictAASFromJsonDecoder, read_aas_json_file

from tests.e2e._cli import cli_command, cli_env, free_port, run_cli, wait_healthy

from .conftest import AAS, b64

pytestmark = pytest.mark.e2e

SSP = "https://admin-shell.io/aas/API/3/0/"
SUITES = [
    SSP + "AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    SSP + "SubmodelRepositoryServiceSpecification/SSP-002",
]
ENGINE = Path(sys.executable).parent / "aas_test_engines"
SEND_HEADERS = """\
import aas_test_engines.http as _http

_send = _http.HttpClient.send


def _send_with_headers(self, request):
    request.headers = {**self.additional_headers, **request.headers}
    return _send(self, request)


_http.HttpClient.send = _send_with_headers
"""


@dataclass(frozen=True)
class Served:
    base_url: str
    data_dir: Path
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("aas-e2e")
    data_dir = root / "demo"
    seeded = run_cli("demo", "--no-serve", "--instruments", "300", data_dir=data_dir)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    token = json.loads((data_dir / "credentials.json").read_text())["authority"]["token"]
    for attempt in range(3):
        port = free_port()
        log = root / f"serve-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cli_command("serve", "--port", str(port), data_dir=data_dir),
                env=cli_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        if wait_healthy(proc, url, log):
            break
    else:
        pytest.fail(f"metrocloud serve exited at start:\n{log.read_text(errors='replace')}")
    try:
        yield Served(url, data_dir, token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _failures(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """Every result the engine rated ERROR or CRITICAL (level >= 2), with where it was."""
    here = (*path, node["m"].strip().splitlines()[0][:120])
    subs = node.get("s", [])
    if node["l"] >= 2 and not any(s["l"] >= 2 for s in subs):
        return [" / ".join(here)]
    return [f for s in subs for f in _failures(s, here)]


@pytest.mark.parametrize("suite", SUITES, ids=["aas-repository", "submodel-repository"])
def test_the_idta_test_engine_finds_no_failure(served: Served, suite: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SEND_HEADERS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [
            str(ENGINE),
            "check_server",
            served.base_url + AAS,
            suite,
            "--header",
            f"Authorization: Bearer {served.token}",
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.stdout, run.stderr
    report = json.loads(run.stdout)
    failures = _failures(report)
    assert failures == [], "\n".join(failures)
    assert run.returncode == 0, run.stderr
    summary = next(s for s in report["s"] if s["m"].startswith("Summary"))
    for line in (t["m"] for t in summary["s"]):  # "Positive tests passed: 78 / 78"
        passed, total = (int(n) for n in line.rsplit(":", 1)[1].split("/"))
        assert passed == total > 0, line
    checked = [s["m"] for s in report["s"] if s["m"].startswith("Checking ")]
    assert len(checked) >= 20, checked  # every operation of the profile ran


def _get(served: Served, path: str) -> httpx.Response:
    r = httpx.get(
        served.base_url + AAS + path,
        headers={"Authorization": f"Bearer {served.token}"},
        timeout=30,
        trust_env=False,
    )
    assert r.status_code == 200, (path, r.text)
    return r


def _basyx_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, cls=AASToJsonEncoder))


def test_a_generic_client_reads_what_the_export_holds(served: Served, tmp_path: Path) -> None:
    shells = _get(served, "/shells?limit=40").json()["result"]
    instrument = next(s for s in shells if s["assetInformation"]["assetKind"] == "Instance")
    iid = instrument["id"].rsplit("/", 1)[1]
    out = tmp_path / "export.json"
    # the TimeSeries endpoint names the node's public URL: the one the server answers on
    export = subprocess.run(
        cli_command(
            "aas",
            "export",
            "--instrument",
            iid,
            "--output",
            str(out),
            "--format",
            "json",
            data_dir=served.data_dir,
        ),
        env={**cli_env(), "METROCLOUD_PUBLIC_BASE_URL": served.base_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    exported_json = json.loads(out.read_text())
    with out.open() as f:
        exported = {o.id: o for o in read_aas_json_file(f, failsafe=False)}
    assert len(exported_json["assetAdministrationShells"]) == 2  # the instrument and its type
    by_id = {
        o["id"]: o for k in ("assetAdministrationShells", "submodels") for o in exported_json[k]
    }
    seen = 0
    for shell_json in exported_json["assetAdministrationShells"]:
        r = _get(served, f"/shells/{b64(shell_json['id'])}")
        shell = json.loads(r.text, cls=StrictAASFromJsonDecoder)
        assert _basyx_json(shell) == _basyx_json(exported[shell.id])
        assert r.json() == by_id[shell.id]
        for ref in shell.submodel:
            sm_id = ref.key[0].value
            r = _get(served, f"/submodels/{b64(sm_id)}")
            submodel = json.loads(r.text, cls=StrictAASFromJsonDecoder)
            assert submodel.id == sm_id
            assert _basyx_json(submodel) == _basyx_json(exported[sm_id]), sm_id
            assert r.json() == by_id[sm_id]
            seen += 1
    assert seen == 3 + 6
