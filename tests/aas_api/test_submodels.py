"""The SubmodelRepository routes and the Part 2 modifiers, checked against the IDTA test
engine's own metamodel parser (aas-test-engines) and against aas-core3.0."""

from __future__ import annotations

from typing import Any

import pytest
from aas_core3 import jsonization
from aas_test_engines.test_cases.v3_0.interfaces import shared, submodel, submodel_repo
from aas_test_engines.test_cases.v3_0.parse import parse_and_check_json

from .conftest import SHELL, SUBMODEL, Pop, b64

TYPE_NAMES = ["Nameplate", "Certificate", "SoftwareIdentification"]
INSTRUMENT_NAMES = [
    "Nameplate",
    "Conformity",
    "SoftwareIdentification",
    "Verification",
    "LifeCycle",
    "TimeSeries",
]


def engine_accepts(reflection: Any, data: Any) -> None:
    result, _ = parse_and_check_json(reflection, data)
    assert result.ok(), "\n".join(result.to_lines())


def test_list_pages_types_then_instruments_by_record_and_index(pop: Pop) -> None:
    got = [s["id"] for s in pop.walk("/submodels", limit=7)]
    records = [*sorted([pop.cert_a["id"], pop.cert_b["id"]]), *sorted(pop.a + pop.b)]
    want = [
        f"{SUBMODEL}{r}/{n}"
        for r in records
        for n in (TYPE_NAMES if r.startswith("cer-") else INSTRUMENT_NAMES)
    ]
    assert got == want


def test_list_filters_by_id_short_and_semantic_id(pop: Pop) -> None:
    got = pop.walk("/submodels", limit=2, idShort="LifeCycle")
    assert [s["id"] for s in got] == [f"{SUBMODEL}{r}/LifeCycle" for r in sorted(pop.a + pop.b)]
    semantic = got[0]["semanticId"]["keys"][0]["value"]
    again = pop.walk("/submodels", limit=3, semanticId=b64(semantic))
    assert [s["id"] for s in again] == [s["id"] for s in got]
    assert pop.ok("/submodels", params={"idShort": "Nope"})["result"] == []


def test_list_modifiers(pop: Pop) -> None:
    for page in (
        pop.ok("/submodels/$metadata", params={"limit": 4}),
        pop.ok("/submodels", params={"limit": 4, "level": "core"}),
    ):
        engine_accepts(submodel_repo.r_get_all_submodels, page)
    meta = pop.ok("/submodels/$metadata", params={"limit": 4})["result"]
    assert all("submodelElements" not in s for s in meta)
    values = pop.ok("/submodels/$value", params={"limit": 3})["result"]
    assert all(isinstance(v, dict) and v for v in values)
    refs = pop.ok("/submodels/$reference", params={"limit": 3})
    engine_accepts(submodel_repo.r_submodel_references, refs)
    paths = pop.ok("/submodels/$path", params={"limit": 3})["result"]
    assert paths == TYPE_NAMES


def _submodels(pop: Pop) -> list[str]:
    return [
        f"{SUBMODEL}{r}/{n}"
        for r, names in ((pop.cert_a["id"], TYPE_NAMES), (pop.a[0], INSTRUMENT_NAMES))
        for n in names
    ]


def _record(sm_id: str) -> str:
    return sm_id.removeprefix(SUBMODEL).split("/")[0]


# rendering, not storage: SQLite only (the routes' queries run on both in the other tests)
@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)
def test_every_element_of_every_submodel_through_every_modifier(pop: Pop) -> None:
    """Each element path from ``$path``: the element, ``$metadata``, ``$value``,
    ``$reference`` and ``$path`` answer as the profile says, and the element is the one
    aas-core3.0 reads from the whole submodel."""
    for n, sm_id in enumerate(_submodels(pop)):
        base = f"/submodels/{b64(sm_id)}"
        if n % 2:  # the same routes under the shell (the AAS repository profile)
            base = f"/shells/{b64(SHELL + _record(sm_id))}" + base
        whole = pop.ok(base)
        engine_accepts(submodel_repo.r_submodel, whole)
        engine_accepts(submodel_repo.r_submodel, pop.ok(base + "/$metadata"))
        engine_accepts(submodel.r_reference, pop.ok(base + "/$reference"))
        assert isinstance(pop.ok(base + "/$value"), dict)
        paths = pop.ok(base + "/$path")
        engine_accepts(submodel_repo.r_get_submodel_paths, paths)
        assert pop.ok(base + "/$path", params={"level": "core"}) == [
            e["idShort"] for e in whole["submodelElements"]
        ]
        elements = pop.walk(base + "/submodel-elements", limit=2)
        assert elements == whole["submodelElements"]
        assert len(pop.walk(base + "/submodel-elements/$path", limit=5)) == len(paths)
        for page in ("", "/$metadata", "/$reference", "/$value", "/$path"):
            got = pop.ok(base + "/submodel-elements" + page, params={"limit": 2})
            assert len(got["result"]) <= 2
        for path in paths:
            url = f"{base}/submodel-elements/{path}"
            element = pop.ok(url)
            engine_accepts(submodel.r_submodel_element, element)
            jsonization.submodel_element_from_jsonable(element)  # aas-core3.0 reads it back
            kind = element["modelType"]
            meta = pop.ok(url + "/$metadata")
            assert meta["modelType"] == kind and "value" not in meta
            value = pop.ok(url + "/$value")
            if "idShort" in element:
                assert list(value) == [element["idShort"]]
            reference = pop.ok(url + "/$reference")
            engine_accepts(submodel.r_reference, reference)
            assert reference["keys"][0] == {"type": "Submodel", "value": sm_id}
            assert reference["keys"][-1]["type"] == kind
            tree = pop.get(url + "/$path")
            if kind in ("SubmodelElementCollection", "SubmodelElementList", "Entity"):
                assert tree.status_code == 200 and tree.json()[0] == path
                assert all(p.startswith(path) for p in tree.json())
            else:
                assert tree.status_code == 400
                engine_accepts(shared.r_error_result, tree.json())


def test_level_core_drops_grandchildren(pop: Pop) -> None:
    base = f"/submodels/{b64(f'{SUBMODEL}{pop.a[0]}/LifeCycle')}"
    deep = pop.ok(base)
    events = next(e for e in deep["submodelElements"] if e["idShort"] == "Events")
    assert events["value"]
    core = pop.ok(base, params={"level": "core"})
    events = next(e for e in core["submodelElements"] if e["idShort"] == "Events")
    assert "value" not in events
    one = pop.ok(base + "/submodel-elements/Events", params={"level": "core"})
    assert one["value"] and all("value" not in item for item in one["value"])
    item = pop.ok(base + "/submodel-elements/Events[1]")
    assert item["modelType"] == "SubmodelElementCollection"
    value = pop.ok(base + "/submodel-elements/Events[1]/$value")
    assert value["Kind"] == "put_into_service"
    ref = pop.ok(base + "/submodel-elements/Events[1].Kind/$reference")
    assert [k["value"] for k in ref["keys"][1:]] == ["Events", "1", "Kind"]


def test_value_only_types_values(pop: Pop) -> None:
    value = pop.ok(f"/submodels/{b64(f'{SUBMODEL}{pop.a[0]}/LifeCycle')}/$value")
    assert value["EventCount"] == 3 and isinstance(value["RegisteredLeafIndex"], int)
    assert [e["Kind"] for e in value["Events"]] == [
        "placed_on_market",
        "put_into_service",
        "verified",
    ]


def test_element_errors(pop: Pop) -> None:
    base = f"/submodels/{b64(f'{SUBMODEL}{pop.a[0]}/LifeCycle')}/submodel-elements"
    for path, status in (
        ("Nope", 404),
        ("Events[99]", 404),
        ("State[0]", 404),
        ("Events..Kind", 400),
    ):
        r = pop.get(f"{base}/{path}")
        assert r.status_code == status, (path, r.text)
        engine_accepts(shared.r_error_result, r.json())
    r = pop.get(f"{base}/State", params={"level": "shallow"})
    assert r.status_code == 400
    r = pop.get(f"{base}/State/attachment")
    assert r.status_code == 400


def test_shell_scoped_submodel_must_belong_to_the_shell(pop: Pop) -> None:
    sm = f"{SUBMODEL}{pop.a[0]}/Nameplate"
    r = pop.get(f"/shells/{b64(SHELL + pop.a[1])}/submodels/{b64(sm)}")
    assert r.status_code == 404
    assert "references no submodel" in r.json()["messages"][0]["text"]
