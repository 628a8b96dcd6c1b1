"""The grid seen from the services: what is EU-wide reaches every node, look-ups are answered
at home under home rules, statistics cross as aggregates only, and every node's log still
audits (docs/grid.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from metrocloud.domain.certificates import CertificateAction, CertificateStatus
from metrocloud.domain.errors import Forbidden, NotFound, Unauthenticated
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.grid.peers import peer
from metrocloud.services import alerts, surveillance
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.services import federation as fed
from metrocloud.services import parties as pty
from metrocloud.services._federation_stats import local_statistic
from metrocloud.services.audit import audit
from metrocloud.services.common import Actor
from metrocloud.store.schema import (
    access_log,
    events,
    grid_nodes,
    grid_traffic,
    instruments,
    parties,
)
from metrocloud.trust.credentials import sign_token_request
from tests._grid import Grid, grid_of
from tests.conftest import DbTarget, Member

SQLITE = DbTarget("sqlite", None, None)


def _people(g: Grid) -> dict[str, Member]:
    p = {
        "nb_de": g.admit("DE", "nb_de", PartyRole.NOTIFIED_BODY),
        "nb_nl": g.admit("NL", "nb_nl", PartyRole.NOTIFIED_BODY),
        "man_fr": g.admit("FR", "man_fr", PartyRole.MANUFACTURER),
        "man_de": g.admit("DE", "man_de", PartyRole.MANUFACTURER),
        "op_fr": g.admit("FR", "op_fr", PartyRole.OPERATOR),
        "auth_fr": g.admit("FR", "auth_fr", PartyRole.AUTHORITY),
        "auth_nl": g.admit("NL", "auth_nl", PartyRole.AUTHORITY),
    }
    g.sync(1)
    return p


def test_certificates_and_their_status_reach_every_node(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target) as g:
        p = _people(g)
        cert = g.certificate("DE", p["nb_de"], p["man_fr"], "DE-0102-26-0001")
        certs.change_certificate(
            g.nodes["DE"],
            p["nb_de"].actor,
            cert["id"],
            CertificateAction.WITHDRAW,
            reason="production no longer conforms",
        )
        g.sync(1)
        for c in ("FR", "NL"):
            node = g.nodes[c]
            got = certs.get_certificate(node, cert["id"])
            assert (got["status"], got["number"]) == ("withdrawn", "DE-0102-26-0001")
            history = certs.history(node, cert["id"])
            assert [h["action"] for h in history] == ["issue", "withdraw"]
        # the Dutch notified body sees the German one's withdrawal on its own node
        nl_view = certs.list_certificates(g.nodes["NL"], status=CertificateStatus.WITHDRAWN)
        assert cert["id"] in [c["id"] for c in nl_view.items]
        # operators are national: not replicated; notified bodies, manufacturers, authorities are
        with g.nodes["NL"].db.read() as conn:
            known = set(conn.execute(select(parties.c.id)).scalars())
        assert {p[k].id for k in ("nb_de", "man_fr", "man_de", "auth_fr")} <= known
        assert p["op_fr"].id not in known
        for node in g.nodes.values():  # every node's registry is still a view of its own log
            report = audit(node)
            assert report.ok, report.problems
        # and a peer list changed behind the log's back is found
        fr = g.nodes["FR"]
        with fr.db.write() as conn:
            conn.execute(
                update(grid_nodes)
                .where(grid_nodes.c.country == "DE")
                .values(base_url="https://evil.example")
            )
        report = audit(fr)
        assert not report.ok and any("grid_nodes" in x and "evil" in x for x in report.problems)


def test_a_late_peer_gets_everything_eu_wide_and_nothing_twice(tmp_path: Path) -> None:
    with grid_of(tmp_path, SQLITE, late=("NL",)) as g:
        nb = g.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
        man = g.admit("FR", "man", PartyRole.MANUFACTURER)
        g.sync(1)
        cert = g.certificate("DE", nb, man, "DE-0001")
        g.sync(1)
        nl = g.nodes["NL"]
        with pytest.raises(NotFound):
            certs.get_certificate(nl, cert["id"])
        g.connect("NL")  # every node queues what it holds for the newcomer
        g.sync(2)
        assert certs.get_certificate(nl, cert["id"])["status"] == "valid"
        with nl.db.read() as conn:
            known = (
                conn.execute(select(parties.c.id).where(parties.c.id.in_([nb.id, man.id])))
                .scalars()
                .all()
            )
        assert sorted(known) == sorted([nb.id, man.id])  # each once, though sent twice
        assert audit(nl).ok


def test_an_instrument_is_found_from_another_node_under_home_rules(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target) as g:
        p = _people(g)
        cert = g.certificate("DE", p["nb_de"], p["man_fr"], "DE-0102-26-0002")
        g.sync(1)
        (ins,) = g.instruments("FR", p["man_fr"], cert, 1, "FR")
        nl, de, fr = g.nodes["NL"], g.nodes["DE"], g.nodes["FR"]
        got = fed.lookup_instrument(nl, p["auth_nl"].actor, ins["id"])
        assert got is not None
        assert got["id"] == ins["id"] and got["home_node"] == fr.node_id
        assert got["certificate_id"] == cert["id"] and got["manufacturer_id"] == p["man_fr"].id
        # the certifying notified body may read it from its own node; another manufacturer not
        assert fed.lookup_instrument(de, p["nb_de"].actor, ins["id"])["home_node"] == fr.node_id  # type: ignore[index]
        with pytest.raises(Forbidden, match="no right to read"):
            fed.lookup_instrument(de, p["man_de"].actor, ins["id"])
        with pytest.raises(NotFound):
            fed.lookup_instrument(nl, p["auth_nl"].actor, "ins-FR-00000000000000000000000000")
        with pytest.raises(NotFound, match="no node of this grid serves AT"):
            fed.lookup_instrument(nl, p["auth_nl"].actor, "ins-AT-00000000000000000000000000")
        # the home node logged the reads from abroad for the instrument's owner
        with fr.db.read() as conn:
            fr_log = conn.execute(
                select(access_log.c.reader_id, access_log.c.reader_role).where(
                    access_log.c.resource_id == ins["id"], access_log.c.owner_id == p["man_fr"].id
                )
            ).all()
        assert set(fr_log) == {(p["auth_nl"].id, "authority"), (p["nb_de"].id, "notified_body")}
        # a local instrument is answered locally
        assert fed.lookup_instrument(fr, p["auth_fr"].actor, ins["id"]) is None
        # the home node down: the answer says so
        g.transport.down(g.url("FR"))
        with pytest.raises(PeerUnavailable):
            fed.lookup_instrument(nl, p["auth_nl"].actor, ins["id"])


def test_a_node_speaks_only_for_its_own_parties(tmp_path: Path) -> None:
    with grid_of(tmp_path, SQLITE) as g:
        p = _people(g)
        cert = g.certificate("DE", p["nb_de"], p["man_fr"], "DE-0102-26-0003")
        g.sync(1)
        (ins,) = g.instruments("FR", p["man_fr"], cert, 1, "FR")
        fr, nl = g.nodes["FR"], g.nodes["NL"]
        with fr.db.read() as conn:
            from_nl = peer(conn, nl.node_id)
        query = fed.answer_query
        # NL claims to ask for a French authority: refused
        with pytest.raises(Forbidden, match="speaks only for the parties it admitted"):
            query(
                fr,
                from_nl,
                "instrument",
                {
                    "instrument_id": ins["id"],
                    "caller": {"party_id": p["auth_fr"].id, "role": "authority", "country": "FR"},
                },
            )
        # NL claims its notified body is an authority: refused (the directory knows better)
        with pytest.raises(Forbidden, match="is notified_body"):
            query(
                fr,
                from_nl,
                "instrument",
                {
                    "instrument_id": ins["id"],
                    "caller": {"party_id": p["nb_nl"].id, "role": "authority", "country": "NL"},
                },
            )


def _notices(g: Grid, country: str, auth: Member, ids: list[str]) -> None:
    node = g.nodes[country]
    surveillance.notify_non_compliance(
        node,
        auth.actor,
        ids,
        finding="error beyond the MPE",
        measures=["recalibrate"],
        legal_basis="MID Art. 40",
        deadline=node.now().date().replace(year=node.now().year + 1),
    )


def _raw_rate(g: Grid, minimum: int) -> dict[str, tuple[int, int]]:
    """The statistic computed from every node's raw rows (what no node may send)."""
    out: dict[str, list[int]] = {}
    for node in g.nodes.values():
        with node.db.read() as conn:
            rows = conn.execute(select(instruments.c.id, instruments.c.certificate_id)).all()
            flagged = set(
                conn.execute(
                    select(events.c.instrument_id).where(events.c.kind == "non_compliance_found")
                ).scalars()
            )
        per: dict[str, list[int]] = {}
        for iid, cid in rows:
            t = per.setdefault(cid, [0, 0])
            t[0] += 1
            t[1] += iid in flagged
        for cid, (n, k) in per.items():
            if n >= minimum:
                t = out.setdefault(cid, [0, 0])
                t[0] += n
                t[1] += k
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_a_federated_statistic_equals_the_raw_one_and_only_aggregates_cross(
    tmp_path: Path, db_target: DbTarget
) -> None:
    with grid_of(tmp_path, db_target, grid_min_group_size=3) as g:
        p = _people(g)
        shared = g.certificate("DE", p["nb_de"], p["man_fr"], "DE-0102-26-0004")
        national = g.certificate("DE", p["nb_de"], p["man_de"], "DE-0102-26-0005")
        g.sync(1)
        fr_ids = [r["id"] for r in g.instruments("FR", p["man_fr"], shared, 6, "FR")]
        de_ids = [r["id"] for r in g.instruments("DE", p["man_de"], national, 4, "DE")]
        tiny = g.certificate("DE", p["nb_de"], p["man_de"], "DE-0102-26-0007")
        small = [r["id"] for r in g.instruments("DE", p["man_de"], tiny, 2, "DS")]  # < 3
        auth_de = g.admit("DE", "auth_de", PartyRole.AUTHORITY)
        for c, auth, ids in (("FR", p["auth_fr"], fr_ids[:2]), ("DE", auth_de, de_ids[:1])):
            ev.record_events(
                g.nodes[c],
                g.members[c]["man_fr" if c == "FR" else "man_de"].actor,
                [ev.EventDraft(instrument_id=i, kind=EventKind.PLACED_ON_MARKET) for i in ids],
            )
            _notices(g, c, auth, ids)
        nl = g.nodes["NL"]
        marks = {}
        for c, node in g.nodes.items():
            with node.db.read() as conn:
                marks[c] = conn.execute(select(func.max(grid_traffic.c.id))).scalar() or 0
        answer = fed.federated_statistic(nl, p["auth_nl"].actor, "non-compliance-rate", "type")
        assert answer["complete"] and len(answer["nodes"]) == 3
        got = {gr["key"]: (gr["instruments"], gr["non_compliant"]) for gr in answer["groups"]}
        assert got == _raw_rate(g, 3) == {shared["id"]: (6, 2), national["id"]: (4, 1)}
        de_part = next(n for n in answer["nodes"] if n["country"] == "DE")
        assert de_part["suppressed_groups"] == 1  # DE's 2 instruments of the tiny type
        assert tiny["id"] not in got
        rates = {gr["key"]: gr["rate"] for gr in answer["groups"]}
        assert rates[shared["id"]] == pytest.approx(2 / 6)
        # what crossed: counts per certificate, no instrument, serial, event or party
        raw = {*fr_ids, *de_ids, *small, p["man_fr"].id, p["man_de"].id, "FR00000", "DS00000"}
        crossed = 0
        for c, node in g.nodes.items():
            with node.db.read() as conn:
                rows = conn.execute(
                    select(grid_traffic).where(
                        grid_traffic.c.id > marks[c],
                        grid_traffic.c.path == "/api/v1/grid/queries/statistics",
                    )
                ).all()
            for r in rows:
                crossed += 1
                text = (r.request_body or "") + (r.response_body or "")
                assert not [x for x in raw if x in text], text
                body = json.loads(r.response_body)
                assert set(body) == {
                    "statistic",
                    "by",
                    "node_id",
                    "country",
                    "min_group_size",
                    "groups",
                    "suppressed_groups",
                }
        assert crossed == 4  # NL asked DE and FR; each side recorded it
        # only authorities and notified bodies ask; at home the same rule applies
        with pytest.raises(Forbidden):
            fed.federated_statistic(
                nl, g.admit("NL", "op_nl", PartyRole.OPERATOR).actor, "non-compliance-rate", "type"
            )
        assert local_statistic(g.nodes["FR"], "non-compliance-rate", "category")["groups"] == [
            {"key": "MI-003", "instruments": 6, "non_compliant": 2}
        ]


def test_alerts_and_notices_reach_every_node(tmp_path: Path, db_target: DbTarget) -> None:
    with grid_of(tmp_path, db_target) as g:
        p = _people(g)
        cert = g.certificate("DE", p["nb_de"], p["man_fr"], "DE-0102-26-0006")
        g.sync(1)
        fr_ids = [r["id"] for r in g.instruments("FR", p["man_fr"], cert, 2, "FR")]
        ev.record_events(
            g.nodes["FR"],
            p["man_fr"].actor,
            [ev.EventDraft(instrument_id=i, kind=EventKind.PLACED_ON_MARKET) for i in fr_ids],
        )
        alert = alerts.raise_alert(
            g.nodes["NL"],
            p["auth_nl"].actor,
            subject_type="certificate",
            subject_id=cert["id"],
            severity="serious",
            title="seal can be lifted",
            description="found in two regions",
        )
        _notices(g, "FR", p["auth_fr"], fr_ids[:1])
        g.sync(1)
        reader = Actor(party_id=p["man_fr"].id, role=PartyRole.MANUFACTURER, country="FR")
        for c in ("DE", "FR"):
            board = alerts.list_alerts(g.nodes[c], reader, kind="market_surveillance").items
            assert [(a["id"], a["raised_by"], a["country"]) for a in board] == [
                (alert["id"], p["auth_nl"].id, "NL")
            ]
        for c in ("DE", "NL"):
            (notice,) = alerts.list_alerts(g.nodes[c], reader, kind="non_compliance").items
            assert notice["subject_id"] == fr_ids[0] and notice["country"] == "FR"
            assert notice["details"]["notice"]["measures"] == ["recalibrate"]
        # only authorities raise alerts
        with pytest.raises(Forbidden):
            alerts.raise_alert(
                g.nodes["FR"],
                p["man_fr"].actor,
                subject_type="certificate",
                subject_id=cert["id"],
                severity="low",
                title="t",
                description="d",
            )
        for node in g.nodes.values():
            assert audit(node).ok


def test_a_removed_peer_gets_nothing_more(tmp_path: Path) -> None:
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        de, fr = g.nodes["DE"], g.nodes["FR"]
        g.transport.down(g.url("FR"))
        g.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
        out = fed.remove_peer(de, fr.node_id, reason="left the grid")
        assert out["cancelled_messages"] >= 1
        g.transport.down(g.url("FR"), False)
        assert fed.sync(de)["delivered"] == 0
        assert [p["removed"] for p in fed.list_peers(de) if p["node_id"] == fr.node_id] == [True]
        # and the removed node's requests are refused
        with de.db.read() as conn, pytest.raises(Forbidden, match="removed"):
            peer(conn, fr.node_id)
        assert audit(de).ok


def test_a_replicated_party_gets_no_token_on_a_foreign_node(tmp_path: Path) -> None:
    """A notified body known on every node acts on its own: no token elsewhere, neither by
    proof of possession nor from the foreign node's admin."""
    with grid_of(tmp_path, SQLITE, ("DE", "FR")) as g:
        nb = g.admit("DE", "nb", PartyRole.NOTIFIED_BODY)
        g.sync(1)
        fr = g.nodes["FR"]
        request = sign_token_request(nb.id, nb.key, now=fr.now())
        with pytest.raises(Unauthenticated, match="admitted by another node"):
            pty.token_by_proof(fr, request)
        with pytest.raises(Forbidden, match="admitted by another node"):
            pty.issue_credential(fr, None, nb.id)
        assert pty.token_by_proof(g.nodes["DE"], sign_token_request(nb.id, nb.key)).token
