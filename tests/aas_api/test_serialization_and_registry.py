"""``/serialization`` (AASX, JSON, XML), the shell descriptors and their endpoints."""

from __future__ import annotations

import io
import zipfile

from aas_core3 import jsonization
from basyx.aas.adapter import aasx
from basyx.aas.model import DictIdentifiableStore

from .conftest import AAS, SHELL, SUBMODEL, Pop, b64


def test_serialization_json_holds_what_was_named(pop: Pop) -> None:
    shell = SHELL + pop.a[0]
    sms = [f"{SUBMODEL}{pop.a[0]}/{n}" for n in ("Nameplate", "LifeCycle")]
    params = [("aasIds", b64(shell)), *[("submodelIds", b64(s, pad=True)) for s in sms]]
    r = pop.get("/serialization", params=params)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    env = r.json()
    assert [s["id"] for s in env["assetAdministrationShells"]] == [shell]
    assert [s["id"] for s in env["submodels"]] == sms
    assert env["conceptDescriptions"]
    jsonization.environment_from_jsonable(env)  # aas-core3.0 reads it
    bare = pop.ok("/serialization", params=[*params, ("includeConceptDescriptions", "false")])
    assert "conceptDescriptions" not in bare
    assert pop.ok("/serialization", params={"includeConceptDescriptions": "false"}) == {}


def test_serialization_as_aasx_and_xml_by_accept(pop: Pop) -> None:
    shell = SHELL + pop.b[0]
    sm = f"{SUBMODEL}{pop.b[0]}/Nameplate"
    params = {"aasIds": b64(shell), "submodelIds": b64(sm)}
    accept = {"Accept": "application/asset-administration-shell-package+xml"}
    r = pop.get("/serialization", "man2", params=params, headers=accept)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/asset-administration-shell-package+xml"
    assert zipfile.is_zipfile(io.BytesIO(r.content))
    store: DictIdentifiableStore = DictIdentifiableStore()
    with aasx.AASXReader(io.BytesIO(r.content)) as reader:
        reader.read_into(store, aasx.DictSupplementaryFileContainer())
    assert {shell, sm} <= {o.id for o in store}
    xml = pop.get("/serialization", "man2", params=params, headers={"Accept": "application/xml"})
    assert xml.status_code == 200 and xml.text.startswith("<?xml")
    assert (
        pop.get("/serialization", params=params, headers={"Accept": "text/csv"}).status_code == 406
    )
    assert pop.get("/serialization", params={"aasIds": "invalid-base64url====="}).status_code == 400


def test_shell_descriptors_point_at_this_node(pop: Pop) -> None:
    shell = SHELL + pop.a[0]
    d = pop.ok(f"/shell-descriptors/{b64(shell)}")
    assert d["id"] == shell and d["assetKind"] == "Instance"
    href = d["endpoints"][0]["protocolInformation"]["href"]
    assert d["endpoints"][0]["interface"] == "AAS-3.0"
    assert href == f"http://testserver{AAS}/shells/{b64(shell)}"
    assert len(d["submodelDescriptors"]) == 6
    sub = d["submodelDescriptors"][0]
    assert sub["endpoints"][0]["protocolInformation"]["href"].endswith(
        f"/submodels/{b64(sub['id'])}"
    )
    # each descriptor carries the semanticId of the submodel it describes
    for desc in d["submodelDescriptors"]:
        submodel = pop.ok(f"/submodels/{b64(desc['id'])}")
        assert desc["semanticId"] == submodel["semanticId"], desc["idShort"]
    # the href works
    path = href.removeprefix(f"http://testserver{AAS}")
    assert pop.ok(path)["id"] == shell
    pop.node.settings.public_base_url = "https://metrology.example.eu/"
    d = pop.ok(f"/shell-descriptors/{b64(shell)}")
    assert d["endpoints"][0]["protocolInformation"]["href"].startswith(
        f"https://metrology.example.eu{AAS}/shells/"
    )
    subs = pop.walk(f"/shell-descriptors/{b64(shell)}/submodel-descriptors", limit=4)
    assert [s["id"] for s in subs] == [s["id"] for s in d["submodelDescriptors"]]
    one = pop.ok(f"/shell-descriptors/{b64(shell)}/submodel-descriptors/{b64(subs[2]['id'])}")
    assert one == subs[2]


def test_shell_descriptor_list_and_filters(pop: Pop) -> None:
    every = pop.walk("/shell-descriptors", limit=3)
    assert [d["id"] for d in every] == [s["id"] for s in pop.walk("/shells", limit=50)]
    types = pop.walk("/shell-descriptors", limit=3, assetKind="Type")
    assert {d["assetKind"] for d in types} == {"Type"} and len(types) == 2
    instances = pop.walk("/shell-descriptors", limit=3, assetKind="Instance")
    assert len(instances) == 5
    of_a = pop.walk(
        "/shell-descriptors",
        limit=3,
        assetType=b64(f"https://metrocloud.eu/ids/asset/{pop.cert_a['id']}"),
    )
    assert {d["id"].removeprefix(SHELL) for d in of_a} == set(pop.a)
    assert pop.get("/shell-descriptors", params={"assetKind": "Other"}).status_code == 400
