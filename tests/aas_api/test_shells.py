"""The AssetAdministrationShellRepository routes, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from .conftest import ASSET, SHELL, SUBMODEL, Pop, asset_ids, b64

INSTRUMENT_SUBMODELS = [
    "Nameplate",
    "Conformity",
    "SoftwareIdentification",
    "Verification",
    "LifeCycle",
    "TimeSeries",
]


def test_list_holds_the_types_then_the_instruments_in_id_order(pop: Pop) -> None:
    page = pop.ok("/shells")
    assert page["paging_metadata"] == {}
    ids = [s["id"] for s in page["result"]]
    types = sorted([pop.cert_a["id"], pop.cert_b["id"]])
    assert ids == [SHELL + r for r in [*types, *sorted(pop.a + pop.b)]]
    kinds = [s["assetInformation"]["assetKind"] for s in page["result"]]
    assert kinds == ["Type"] * 2 + ["Instance"] * 5
    assert all(s["modelType"] == "AssetAdministrationShell" for s in page["result"])


def test_a_shell_by_id_names_its_asset_and_six_submodels(pop: Pop) -> None:
    iid = pop.a[0]
    shell = pop.ok(f"/shells/{b64(SHELL + iid)}")
    assert shell["id"] == SHELL + iid
    assert shell["idShort"] == "Instrument_SN_01_A_7"
    info = shell["assetInformation"]
    assert info["globalAssetId"] == ASSET + iid
    assert {s["name"]: s["value"] for s in info["specificAssetIds"]} == {
        "serialNumber": "SN-01.A/7",
        "manufacturerId": pop.world.man1.id,
    }
    refs = [r["keys"][0]["value"] for r in shell["submodels"]]
    assert refs == [f"{SUBMODEL}{iid}/{n}" for n in INSTRUMENT_SUBMODELS]
    assert pop.ok(f"/shells/{b64(SHELL + iid)}/asset-information") == info
    assert pop.ok(f"/shells/{b64(SHELL + iid)}/$reference") == {
        "type": "ModelReference",
        "keys": [{"type": "AssetAdministrationShell", "value": SHELL + iid}],
    }


def test_a_type_shell_is_the_certificate(pop: Pop) -> None:
    cid = pop.cert_a["id"]
    shell = pop.ok(f"/shells/{b64(SHELL + cid)}")
    assert shell["assetInformation"]["assetKind"] == "Type"
    assert shell["idShort"].startswith("Type_")
    names = [r["keys"][0]["value"].rsplit("/", 1)[1] for r in shell["submodels"]]
    assert names == ["Nameplate", "Certificate", "SoftwareIdentification"]


@pytest.mark.parametrize("pad", [False, True])
def test_identifiers_are_accepted_with_and_without_padding(pop: Pop, pad: bool) -> None:
    # 73 bytes: base64 ends in "==" when padded
    sm = f"{SUBMODEL}{pop.a[0]}/Conformity"
    assert len(sm.encode()) % 3 == 1
    assert b64(sm, pad=pad).endswith("==") is pad
    assert pop.ok(f"/submodels/{b64(sm, pad=pad)}")["id"] == sm
    shell = SHELL + pop.a[0]
    assert pop.ok(f"/shells/{b64(shell, pad=pad)}/submodels/{b64(sm, pad=pad)}")["id"] == sm


def test_submodel_refs_are_paged(pop: Pop) -> None:
    shell = b64(SHELL + pop.a[1])
    refs = pop.walk(f"/shells/{shell}/submodel-refs", limit=4)
    assert [r["keys"][0]["value"].rsplit("/", 1)[1] for r in refs] == INSTRUMENT_SUBMODELS
    first = pop.ok(f"/shells/{shell}/submodel-refs", params={"limit": 4})
    assert len(first["result"]) == 4 and first["paging_metadata"]["cursor"]


def test_no_thumbnail(pop: Pop) -> None:
    r = pop.get(f"/shells/{b64(SHELL + pop.a[0])}/asset-information/thumbnail")
    assert r.status_code == 404
    assert "no thumbnail" in r.json()["messages"][0]["text"]


def test_filter_by_id_short(pop: Pop) -> None:
    # serial "SN-01.A/7": the idShort stands for 4^3 serials; exactly this one matches
    got = pop.ok("/shells", params={"idShort": "Instrument_SN_01_A_7"})["result"]
    assert [s["id"] for s in got] == [SHELL + pop.a[0]]
    type_short = pop.ok(f"/shells/{b64(SHELL + pop.cert_b['id'])}")["idShort"]
    got = pop.ok("/shells", params={"idShort": type_short})["result"]
    assert [s["id"] for s in got] == [SHELL + pop.cert_b["id"]]
    for nothing in ("does-not-exist", "Instrument_SN_01_A_8", "Type_X", "Instrument_"):
        assert pop.ok("/shells", params={"idShort": nothing})["result"] == [], nothing
    refs = pop.ok("/shells/$reference", params={"idShort": "Instrument_SN000002"})["result"]
    assert [r["keys"][0]["value"] for r in refs] == [SHELL + pop.a[1]]


def test_filter_by_asset_ids(pop: Pop) -> None:
    def ids(*links: dict[str, str]) -> list[str]:
        return [s["id"] for s in pop.ok("/shells", params=asset_ids(*links))["result"]]

    a0, cid = pop.a[0], pop.cert_a["id"]
    assert ids({"name": "globalAssetId", "value": ASSET + a0}) == [SHELL + a0]
    assert ids({"name": "globalAssetId", "value": ASSET + cid}) == [SHELL + cid]
    assert ids({"name": "serialNumber", "value": "B-2"}) == [SHELL + pop.b[1]]
    assert ids({"name": "manufacturerId", "value": pop.world.man2.id}) == [
        SHELL + r for r in [pop.cert_b["id"], *sorted(pop.b)]
    ]
    assert ids({"name": "certificateNumber", "value": pop.cert_a["number"]}) == [SHELL + cid]
    # all given asset ids must match
    assert (
        ids(
            {"name": "serialNumber", "value": "B-2"},
            {"name": "manufacturerId", "value": pop.world.man1.id},
        )
        == []
    )
    assert ids({"name": "serialNumber", "value": "nope"}) == []
    assert ids({"name": "colour", "value": "blue"}) == []
    # a JSON list in one value is the same as repeating the parameter
    both = [
        {"name": "serialNumber", "value": "B-2"},
        {"name": "manufacturerId", "value": pop.world.man2.id},
    ]
    import json

    one = pop.ok("/shells", params={"assetIds": b64(json.dumps(both), pad=True)})["result"]
    assert [s["id"] for s in one] == [SHELL + pop.b[1]]


def test_lookup_shells_by_asset_link(pop: Pop) -> None:
    link = {"name": "globalAssetId", "value": ASSET + pop.b[0]}
    page = pop.ok("/lookup/shells", params=asset_ids(link))
    assert page == {"paging_metadata": {}, "result": [SHELL + pop.b[0]]}
    links = pop.ok(f"/lookup/shells/{b64(SHELL + pop.b[0])}")
    assert links[0] == link
    assert {"name": "serialNumber", "value": "B-1"}.items() <= links[1].items()
    every = pop.walk("/lookup/shells", limit=2)
    assert len(every) == 7 and len(set(every)) == 7


def test_description_lists_the_read_profiles(pop: Pop) -> None:
    profiles = pop.ok("/description")["profiles"]
    base = "https://admin-shell.io/aas/API/3/0/"
    assert base + "AssetAdministrationShellRepositoryServiceSpecification/SSP-002" in profiles
    assert base + "SubmodelRepositoryServiceSpecification/SSP-002" in profiles
