"""The mapping from registry rows to AAS v3.0: valid, complete, and a view, not a copy."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aas_core3 import jsonization
from aas_core3 import types as aas
from sqlalchemy import event, select

from metrocloud import twin
from metrocloud.domain.errors import NotFound
from metrocloud.domain.instruments import EventKind
from metrocloud.services.events import EventDraft, record_events
from metrocloud.store.schema import certificates, events, instruments
from metrocloud.twin import _idta
from metrocloud.twin.ids import NAMESPACE, SEMANTICS, asset_id, party_uri, shell_id, submodel_id

from .conftest import CATEGORIES, Fleet

ID_SHORT = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]*[a-zA-Z0-9_]+$")  # AAS constraint AASd-002
BASE = "https://node.example.eu"


def _render_all(f: Fleet) -> tuple[list[Any], list[Any]]:
    with f.node.db.read() as conn:
        rows = conn.execute(select(instruments).order_by(instruments.c.id)).all()
        cert_rows = conn.execute(select(certificates).order_by(certificates.c.id)).all()
        loader = twin.ViewLoader(conn)
        views, type_views = loader.instruments(rows), loader.types(cert_rows)
    shells = [twin.instrument_shell(r) for r in rows] + [twin.type_shell(r) for r in cert_rows]
    submodels = [sm for v in views for sm in twin.instrument_submodels(v, base_url=BASE)]
    submodels += [sm for v in type_views for sm in twin.type_submodels(v)]
    return shells, submodels


def _submodel(f: Fleet, iid: str, name: str) -> dict[str, Any]:
    with f.node.db.read() as conn:
        view = twin.load_instrument(conn, iid)
    return jsonization.to_jsonable(twin.instrument_submodel(view, name, base_url=BASE))


def _values(elements: list[dict[str, Any]]) -> dict[str, Any]:
    """idShort -> value of the elements (MultiLanguageProperty: its English text)."""
    out = {}
    for e in elements:
        v = e.get("value")
        if e["modelType"] == "MultiLanguageProperty":
            v = v[0]["text"]
        out[e["idShort"]] = v
    return out


def _semantic(e: dict[str, Any]) -> str:
    return e["semanticId"]["keys"][0]["value"]


def test_every_shell_and_submodel_of_every_category_verifies(fleet: Fleet) -> None:
    shells, submodels = _render_all(fleet)
    assert len(shells) == len(fleet.instruments) + len(fleet.certificates)
    assert len(submodels) == 6 * len(fleet.instruments) + 3 * len(fleet.certificates)
    env = twin.environment(shells, submodels)
    assert twin.verify(env) == []
    for obj in [*shells, *submodels, *twin.concept_descriptions()]:
        assert twin.verify(obj) == [], obj.id
    assert {s.id_short for s in shells} >= {"Instrument_MI0_A_1", "Instrument_DE_EV_7_B"}
    assert all(ID_SHORT.match(s.id_short) for s in shells)


def test_instrument_shell_is_rendered_from_its_row_alone(fleet: Fleet) -> None:
    iid = fleet.instruments[0]
    with fleet.node.db.read() as conn:
        row = conn.execute(select(instruments).where(instruments.c.id == iid)).one()
        queries: list[str] = []
        event.listen(conn, "before_cursor_execute", lambda *a: queries.append(a[2]))
        shell = twin.instrument_shell(row)
    assert queries == []
    j = jsonization.to_jsonable(shell)
    assert j["id"] == shell_id(iid) == f"{NAMESPACE}aas/{iid}"
    info = j["assetInformation"]
    assert info["assetKind"] == "Instance"
    assert info["globalAssetId"] == asset_id(iid)
    serial, man = info["specificAssetIds"]
    assert serial["name"] == "serialNumber" and serial["value"] == row.serial
    assert serial["externalSubjectId"]["keys"][0]["value"] == party_uri(row.manufacturer_id)
    assert man == {
        "name": "manufacturerId",
        "value": row.manufacturer_id,
        "semanticId": {
            "type": "ExternalReference",
            "keys": [{"type": "GlobalReference", "value": SEMANTICS + "ManufacturerId"}],
        },
    }
    assert j["derivedFrom"]["keys"] == [
        {"type": "AssetAdministrationShell", "value": shell_id(row.certificate_id)}
    ]
    assert [r["keys"] for r in j["submodels"]] == [
        [{"type": "Submodel", "value": submodel_id(iid, n)}] for n in twin.INSTRUMENT_SUBMODELS
    ]
    assert all(r["type"] == "ModelReference" for r in j["submodels"])


def test_type_shell_carries_its_certificate(fleet: Fleet) -> None:
    cert = fleet.certificates[2]
    with fleet.node.db.read() as conn:
        row = conn.execute(select(certificates).where(certificates.c.id == cert["id"])).one()
        view = twin.load_type(conn, cert["id"])
    shell = jsonization.to_jsonable(twin.type_shell(row))
    assert shell["assetInformation"]["assetKind"] == "Type"
    assert shell["assetInformation"]["specificAssetIds"][0]["value"] == cert["number"]
    assert ID_SHORT.match(shell["idShort"])
    sm = jsonization.to_jsonable(twin.type_submodel(view, "Certificate"))
    values = _values(sm["submodelElements"])
    assert values["Number"] == cert["number"]
    assert values["Module"] == "B" and values["Status"] == "valid"
    assert values["InstrumentCategory"] == "MI-003"
    assert values["LegalBasis"] == "Directive 2014/32/EU, Annex V (MI-003)"
    nb = _values(values["NotifiedBody"])
    assert nb["NotifiedBodyNumber"] == fleet.world.nb1.party["nb_number"]
    software = values["ApprovedSoftware"]
    assert [_values(s["value"])["SoftwareVersion"] for s in software] == ["1.0.0", "1.1.0"]
    assert [_values(h["value"])["Action"] for h in values["History"]] == ["issue"]


def test_revised_and_suspended_certificates_show_their_history(fleet: Fleet) -> None:
    with fleet.node.db.read() as conn:
        revised = twin.load_type(conn, fleet.certificates[0]["id"])
        suspended = twin.load_type(conn, fleet.certificates[1]["id"])
    r = _values(
        jsonization.to_jsonable(twin.type_submodel(revised, "Certificate"))["submodelElements"]
    )
    assert r["Revision"] == "1"
    assert [_values(c["value"]) for c in r["RatedConditions"]] == [
        {"Name": "environment", "Value": "M1/E2"},
        {"Name": "temperature", "Value": "-25 °C .. +55 °C"},
    ]
    s = twin.type_submodel(suspended, "Certificate")
    values = _values(jsonization.to_jsonable(s)["submodelElements"])
    assert values["Status"] == "suspended"
    assert [_values(h["value"])["Action"] for h in values["History"]] == ["issue", "suspend"]
    assert twin.verify(s) == []


def test_nameplate_follows_idta_02006_digital_nameplate(fleet: Fleet) -> None:
    iid = fleet.instruments[1]
    sm = _submodel(fleet, iid, "Nameplate")
    assert _semantic(sm) == "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
    by_id = {e["idShort"]: _semantic(e) for e in sm["submodelElements"]}
    assert by_id["ManufacturerName"] == "0173-1#02-AAO677#002"
    assert by_id["ManufacturerProductDesignation"] == "0173-1#02-AAW338#001"
    assert by_id["SerialNumber"] == "0173-1#02-AAM556#002"
    assert by_id["YearOfConstruction"] == "0173-1#02-AAP906#001"
    assert by_id["URIOfTheProduct"] == "0173-1#02-AAY811#001"
    assert by_id["ContactInformation"] == _idta.CONTACT_INFORMATION
    assert by_id["AccuracyClass"] == SEMANTICS + "AccuracyClass"
    values = _values(sm["submodelElements"])
    assert values["ManufacturerName"] == "man1"
    assert values["SerialNumber"] == "MI-001-0-B"
    assert values["InstrumentCategory"] == "MI-001" and values["AccuracyClass"] == "2"
    assert values["Region"] == "DE40"  # relocated after being put into service in DE30
    assert values["SoftwareVersion"] == "1.1.0"  # updated
    assert re.fullmatch(r"20\d\d", values["YearOfConstruction"])


def test_verification_shows_the_newest_result_and_its_authority(fleet: Fleet) -> None:
    auth = fleet.world.auth1
    for iid, story in fleet.story.items():
        sm = _submodel(fleet, iid, "Verification")
        values = _values(sm["submodelElements"])
        if story == "verified":
            assert values["State"] == "in_service"
            assert values["VerifiedUntil"] == "2031-12-31"
            last = _values(values["LastVerification"])
            assert last["Result"] == "passed" and last["VerifiedUntil"] == "2031-12-31"
            assert _values(last["Authority"]) == {"PartyId": auth.id, "PartyName": "auth1"}
            assert int(last["LeafIndex"]) > 0
        elif story == "verification_failed":
            assert values["State"] == "out_of_service"
            assert values["VerifiedUntil"] is None
            last = _values(values["LastVerification"])
            assert last["Result"] == "failed"
            assert last["Reason"] == "error outside the in-service MPE"
        else:
            assert "LastVerification" not in values


def test_life_cycle_lists_every_event_with_its_leaf_index(fleet: Fleet) -> None:
    iid = fleet.instruments[1]
    with fleet.node.db.read() as conn:
        rows = conn.execute(
            select(events).where(events.c.instrument_id == iid).order_by(events.c.seq)
        ).all()
    values = _values(_submodel(fleet, iid, "LifeCycle")["submodelElements"])
    assert values["EventCount"] == str(len(rows)) == "5"
    listed = [_values(e["value"]) for e in values["Events"]]
    assert [e["Kind"] for e in listed] == [r.kind for r in rows]
    assert [int(e["LeafIndex"]) for e in listed] == [r.leaf_index for r in rows]
    assert [e["OccurredAt"] for e in listed] == [r.occurred_at for r in rows]
    updated, broken = listed[3], listed[4]
    assert _values(updated["Software"])["SoftwareVersion"] == "1.1.0"
    assert _values(updated["Software"])["Approved"] == "true"
    assert broken["Note"] == "seal found broken"
    assert broken["OtherDetails"] == '{"ticket":4711}'


def test_conformity_lists_certificate_and_covering_declarations(fleet: Fleet) -> None:
    covered, uncovered = fleet.instruments[0], fleet.instruments[1]
    values = _values(_submodel(fleet, covered, "Conformity")["submodelElements"])
    cert = fleet.certificates[0]
    assert values["CertificateNumber"] == cert["number"]
    assert values["Certificate"]["keys"] == [
        {"type": "Submodel", "value": submodel_id(cert["id"], "Certificate")}
    ]
    (d,) = values["Declarations"]
    d = _values(d["value"])
    assert d["Module"] == "D" and len(d["DocumentSha256"]) == 64 and int(d["LeafIndex"]) > 0
    assert "Declarations" not in {
        k
        for k, v in _values(_submodel(fleet, uncovered, "Conformity")["submodelElements"]).items()
        if v is not None
    }


def test_time_series_points_at_the_measurements_endpoint(fleet: Fleet) -> None:
    iid = fleet.instruments[0]
    sm = _submodel(fleet, iid, "TimeSeries")
    assert _semantic(sm) == "https://admin-shell.io/idta/TimeSeries/1/1"
    values = _values(sm["submodelElements"])
    segment = _values(_values(values["Segments"])["LinkedSegment"])
    assert segment["Endpoint"] == f"{BASE}/api/v1/instruments/{iid}/measurements"
    assert values["MeasurementsAvailable"] == "true"


def test_the_twin_is_a_view_a_new_event_shows_in_the_next_rendering(fleet: Fleet) -> None:
    iid = next(i for i, s in fleet.story.items() if s == "verified")
    before = _values(_submodel(fleet, iid, "LifeCycle")["submodelElements"])
    (rec,) = record_events(
        fleet.node,
        fleet.world.auth1.actor,
        [
            EventDraft(
                instrument_id=iid, kind=EventKind.VERIFICATION_FAILED, details={"reason": "x"}
            )
        ],
    )
    after = _values(_submodel(fleet, iid, "LifeCycle")["submodelElements"])
    assert int(after["EventCount"]) == int(before["EventCount"]) + 1
    newest = _values(after["Events"][-1]["value"])
    assert newest["Kind"] == "verification_failed"
    assert int(newest["LeafIndex"]) == rec["leaf_index"]
    verification = _values(_submodel(fleet, iid, "Verification")["submodelElements"])
    assert verification["State"] == "out_of_service" and verification["VerifiedUntil"] is None
    assert _values(verification["LastVerification"])["Result"] == "failed"


def test_unknown_records_and_submodels_are_not_found(fleet: Fleet) -> None:
    with fleet.node.db.read() as conn:
        with pytest.raises(NotFound, match="instrument ins-DE-0000000000"):
            twin.load_instrument(conn, "ins-DE-00000000000000000000000000")
        with pytest.raises(NotFound, match="certificate"):
            twin.load_type(conn, "cer-DE-00000000000000000000000000")
        view = twin.load_instrument(conn, fleet.instruments[0])
        type_view = twin.load_type(conn, fleet.certificates[0]["id"])
    with pytest.raises(NotFound, match="has no submodel 'Certificate'"):
        twin.instrument_submodel(view, "Certificate")
    with pytest.raises(NotFound, match="has no submodel 'LifeCycle'"):
        twin.type_submodel(type_view, "LifeCycle")


def test_a_batch_of_views_costs_five_queries_whatever_its_size(fleet: Fleet) -> None:
    with fleet.node.db.read() as conn:
        rows = conn.execute(select(instruments)).all()
        queries: list[str] = []
        event.listen(conn, "before_cursor_execute", lambda *a: queries.append(a[2]))
        views = twin.ViewLoader(conn).instruments(rows)
    assert len(views) == len(rows) == 16
    assert len(queries) == 5
    assert [v.instrument.id for v in views] == [r.id for r in rows]


def test_every_metrocloud_semantic_id_has_a_concept_description(fleet: Fleet) -> None:
    shells, submodels = _render_all(fleet)
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("semanticId", "semanticIdListElement"):
                    used.update(key["value"] for key in v["keys"])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for obj in [*shells, *submodels]:
        walk(jsonization.to_jsonable(obj))
    ours = {u for u in used if u.startswith(SEMANTICS)}
    described = {cd.id for cd in twin.concept_descriptions()}
    assert ours <= described
    assert len(ours) > 40
    for cd in twin.concept_descriptions():
        (spec,) = cd.embedded_data_specifications or []
        content = spec.data_specification_content
        assert isinstance(content, aas.DataSpecificationIEC61360)
        assert content.preferred_name[0].language == "en"
        assert content.definition and content.definition[0].text


def test_every_seeded_category_is_in_the_fleet(fleet: Fleet) -> None:
    from metrocloud.services.demo import _TYPES

    assert {c for c, _, _ in _TYPES} == set(CATEGORIES)
    assert {c["category"] for c in fleet.certificates} == {c.value for c in CATEGORIES}
