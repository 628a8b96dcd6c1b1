"""Access control on the AAS API: the tokens, role rules and access log of /api/v1."""

from __future__ import annotations

from typing import Any

from metrocloud.services import access

from .conftest import SHELL, SUBMODEL, Pop, b64

PRIVATE = ["SoftwareIdentification", "Verification", "LifeCycle", "TimeSeries"]


def shell_ids(pop: Pop, who: str) -> set[str]:
    return {s["id"].removeprefix(SHELL) for s in pop.walk("/shells", who, limit=3)}


def access_log(pop: Pop, who: str) -> list[dict[str, Any]]:
    r = pop.client.get("/api/v1/access-log", headers=pop.world.members[who].headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_every_route_needs_a_token(pop: Pop) -> None:
    for path in (
        "/shells",
        f"/shells/{b64(SHELL + pop.cert_a['id'])}",
        "/submodels",
        "/description",
        "/serialization",
        "/shell-descriptors",
        "/lookup/shells",
    ):
        r = pop.get(path, "anon")
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["messages"][0]["code"] == "unauthenticated"
    r = pop.client.get(AAS_SHELLS, headers={"Authorization": "Bearer mct_nope_nope"})
    assert r.status_code == 401


AAS_SHELLS = "/aas/api/v3.0/shells"


def test_each_party_lists_the_types_and_the_instruments_it_may_read(pop: Pop) -> None:
    types = {pop.cert_a["id"], pop.cert_b["id"]}
    a, b = set(pop.a), set(pop.b)
    assert shell_ids(pop, "auth1") == types | a | b
    assert shell_ids(pop, "man1") == types | a
    assert shell_ids(pop, "man2") == types | b
    assert shell_ids(pop, "nb1") == types | a  # the notified body of type A
    assert shell_ids(pop, "nb2") == types | b
    assert shell_ids(pop, "op1") == types | {pop.a[0]}  # put into service by op1
    assert shell_ids(pop, "op2") == types
    assert shell_ids(pop, "admin") == types  # the node admin reads no instrument data


def test_foreign_instrument_shell_is_refused_public_submodels_are_not(pop: Pop) -> None:
    a0 = pop.a[0]
    r = pop.get(f"/shells/{b64(SHELL + a0)}", "man2")
    assert r.status_code == 403
    assert "no right to read instrument" in r.json()["messages"][0]["text"]
    for name in ("Nameplate", "Conformity"):
        sm = pop.ok(f"/submodels/{b64(f'{SUBMODEL}{a0}/{name}')}", "man2")
        assert sm["idShort"] == name
    for name in PRIVATE:
        r = pop.get(f"/submodels/{b64(f'{SUBMODEL}{a0}/{name}')}", "man2")
        assert r.status_code == 403, name
    # the type shell and all its submodels are certificate data: public
    assert pop.ok(f"/shells/{b64(SHELL + pop.cert_a['id'])}", "man2")
    for name in ("Nameplate", "Certificate", "SoftwareIdentification"):
        assert pop.ok(f"/submodels/{b64(SUBMODEL + pop.cert_a['id'] + '/' + name)}", "op2")


def test_the_node_admin_reads_types_but_no_instrument_data(pop: Pop) -> None:
    a0 = pop.a[0]
    for path in (
        f"/shells/{b64(SHELL + a0)}",
        f"/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}",
        f"/submodels/{b64(f'{SUBMODEL}{a0}/LifeCycle')}",
    ):
        r = pop.get(path, "admin")
        assert r.status_code == 403, path
        assert "node admin reads no instrument data" in r.json()["messages"][0]["text"]
    subs = pop.walk("/submodels", "admin", limit=4)
    assert {s["id"].removeprefix(SUBMODEL).split("/")[0] for s in subs} == {
        pop.cert_a["id"],
        pop.cert_b["id"],
    }


def test_submodel_list_shows_public_submodels_of_every_instrument_only(pop: Pop) -> None:
    got = {s["id"].removeprefix(SUBMODEL) for s in pop.walk("/submodels", "man2", limit=5)}
    for iid in pop.a:  # man1's: only the public ones
        assert {n for n in got if n.startswith(iid)} == {f"{iid}/Nameplate", f"{iid}/Conformity"}
    for iid in pop.b:  # its own: all six
        assert len({n for n in got if n.startswith(iid)}) == 6
    only = pop.walk("/submodels", "man2", limit=2, idShort="LifeCycle")
    assert [s["id"] for s in only] == [f"{SUBMODEL}{i}/LifeCycle" for i in sorted(pop.b)]


def test_reads_of_foreign_instrument_data_are_in_the_owners_access_log(pop: Pop) -> None:
    a0 = pop.a[0]
    before = len(access_log(pop, "man1"))
    pop.ok(f"/shells/{b64(SHELL + a0)}", "man1")  # own: not logged
    pop.ok(f"/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}", "man2")  # public: not logged
    assert len(access_log(pop, "man1")) == before
    pop.ok(f"/shells/{b64(SHELL + a0)}", "auth2")
    pop.ok(f"/submodels/{b64(f'{SUBMODEL}{a0}/LifeCycle')}", "auth2")
    log = access_log(pop, "man1")[: len(access_log(pop, "man1")) - before]
    assert [(e["action"], e["reader_id"], e["resource_id"]) for e in log] == [
        ("aas.submodel.read", pop.world.auth2.id, a0),
        ("aas.shell.read", pop.world.auth2.id, a0),
    ]
    # the operator owns the record too
    op_log = access_log(pop, "op1")
    assert {e["action"] for e in op_log} >= {"aas.shell.read", "aas.submodel.read"}
    # a list logs every foreign instrument on its page
    pop.ok("/shells", "auth2", params={"limit": 100})
    listed = [e for e in access_log(pop, "man2") if e["action"] == "aas.shells.list"]
    assert {e["resource_id"] for e in listed} == set(pop.b)


def test_a_grant_opens_the_instrument_and_is_logged_as_such(pop: Pop) -> None:
    a1 = pop.a[1]
    assert pop.get(f"/shells/{b64(SHELL + a1)}", "man2").status_code == 403
    access.create_grant(
        pop.node, pop.world.man1.actor, grantee_id=pop.world.man2.id, instrument_id=a1
    )
    assert pop.ok(f"/shells/{b64(SHELL + a1)}", "man2")["id"] == SHELL + a1
    assert pop.ok(f"/submodels/{b64(f'{SUBMODEL}{a1}/Verification')}", "man2")
    assert a1 in shell_ids(pop, "man2")
    log = [e for e in access_log(pop, "man1") if e["reader_id"] == pop.world.man2.id]
    assert log and all(e["via_grant"] for e in log)


def test_serialization_and_descriptors_follow_the_same_rules(pop: Pop) -> None:
    a0 = pop.a[0]
    r = pop.get("/serialization", "man2", params={"aasIds": b64(SHELL + a0)})
    assert r.status_code == 403
    sm = f"{SUBMODEL}{a0}/Nameplate"
    env = pop.ok("/serialization", "man2", params={"submodelIds": b64(sm)})
    assert [s["id"] for s in env["submodels"]] == [sm]
    assert pop.get(f"/shell-descriptors/{b64(SHELL + a0)}", "man2").status_code == 403
    listed = pop.walk("/shell-descriptors", "man2", limit=3)
    assert {d["id"].removeprefix(SHELL) for d in listed} == {
        pop.cert_a["id"],
        pop.cert_b["id"],
        *pop.b,
    }
