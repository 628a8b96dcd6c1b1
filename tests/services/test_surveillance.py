"""e-market surveillance: risk, inspection plans, lot decisions, non-compliance notices.

On hand-made registries (the ``world`` fixture, SQLite and PostgreSQL), on pure inputs
(hypothesis), and on a small simulated fleet with ground truth (one module-scoped run)."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, select, true

from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound, RuleViolation
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.sampling import Decision, iso2859_plan, mid_f_plan
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.services import surveillance as svc
from metrocloud.services._surveillance.facts import load_context, load_facts, merge_alerts
from metrocloud.services._surveillance.model import (
    CertificateFacts,
    FleetContext,
    InstrumentFacts,
    InstrumentRisk,
)
from metrocloud.services._surveillance.plan import choose
from metrocloud.services._surveillance.scoring import assess, scores
from metrocloud.services.access import list_access_log
from metrocloud.services.audit import audit
from metrocloud.services.common import Actor
from metrocloud.services.maintenance import type_reliability
from metrocloud.services.monitoring import Alert
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.sim import SimConfig, run_simulation
from metrocloud.store._ledger_only import lot_decided
from metrocloud.store.schema import events, intake_flags, parties, quarantine
from metrocloud.trust.statements import SignedStatement
from tests.conftest import Member, World

NOW = datetime(2026, 12, 1, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------------------


_SERIALS = itertools.count()


def _in_service(world: World, man: Member, op: Member, cert: dict[str, Any], n: int) -> list[str]:
    refs = world.instruments(man, cert, n, prefix=f"S{next(_SERIALS)}-")
    ids = [r["id"] for r in refs]
    for who, kind in ((man, EventKind.PLACED_ON_MARKET), (op, EventKind.PUT_INTO_SERVICE)):
        ev.record_events(
            world.node, who.actor, [ev.EventDraft(instrument_id=i, kind=kind) for i in ids]
        )
    return ids


def _event(world: World, who: Member, iid: str, kind: EventKind, **details: Any) -> dict[str, Any]:
    return ev.record_events(
        world.node, who.actor, [ev.EventDraft(instrument_id=iid, kind=kind, details=details)]
    )[0]


def _payload(node: Node, leaf: int) -> dict[str, Any]:
    with node.db.read() as conn:
        return SignedStatement.from_bytes(node.log.entry(conn, leaf)).statement.payload()


def _log(node: Node, member: Member) -> list[dict[str, Any]]:
    return list(list_access_log(node, member.actor, limit=1000, cursor=None).items)


def _by_id(risks: list[InstrumentRisk]) -> dict[str, InstrumentRisk]:
    return {r.instrument_id: r for r in risks}


def _factor(risk: InstrumentRisk, name: str) -> Any:
    return next(f for f in risk.factors if f.name == name)


# -- risk on a hand-made registry ----------------------------------------------------------


def test_findings_raise_the_score_and_every_factor_is_explained(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 6)
    _event(world, world.op1, ids[0], EventKind.TAMPER_DETECTED, note="cover opened")
    with node.db.write() as conn:
        conn.execute(
            insert(intake_flags).values(
                instrument_id=ids[1],
                kind="unapproved-software",
                detail="checksum 00ff not approved",
                at=node.timestamp(),
            )
        )
    risks = svc.risk_scores(node, world.auth1.actor)
    assert {r.instrument_id for r in risks} == set(ids)  # on the market, every one
    assert {risks[0].instrument_id, risks[1].instrument_id} == {ids[0], ids[1]}
    clean = _by_id(risks)[ids[5]]
    for r in risks:
        assert 0 <= r.score <= 1
        assert [f.name for f in r.factors] == list(svc.FACTORS)
        assert r.score == pytest.approx(sum(f.contribution for f in r.factors))
    tampered = _by_id(risks)[ids[0]]
    kinds = {a["kind"] for a in _factor(tampered, "alerts").evidence["alerts"]}
    assert kinds == {"tamper_detected"}
    assert tampered.reasons()[0].startswith("critical alert tamper_detected")
    unapproved = _by_id(risks)[ids[1]]
    assert {a["kind"] for a in _factor(unapproved, "alerts").evidence["alerts"]} == {
        "unapproved_software"
    }
    assert tampered.score > clean.score + 0.3
    # the type counts both as failed, the operator the tamper event as a finding
    assert _factor(clean, "type_failures").evidence["failed"] == 2
    assert _factor(clean, "operator_history").evidence["with_findings"] == 1


def test_the_registry_queries_agree_with_the_facts(world: World) -> None:
    """The fleet context from GROUP BY queries equals the context computed from every
    instrument's facts: the set-based path and the model agree."""
    node = world.node
    a = world.certificate(world.nb1, world.man1)
    b = world.certificate(world.nb2, world.man2)
    ia = _in_service(world, world.man1, world.op1, a, 4)
    ib = _in_service(world, world.man2, world.op2, b, 3)
    world.instruments(world.man1, a, 2, prefix="REGONLY")  # registered, not on the market
    _event(world, world.op1, ia[0], EventKind.SEAL_BROKEN)
    _event(world, world.auth1, ib[0], EventKind.NON_COMPLIANCE_FOUND, note="MPE exceeded")
    _event(world, world.auth1, ib[1], EventKind.VERIFICATION_FAILED)
    with node.db.write() as conn:
        conn.execute(
            insert(quarantine).values(
                received_at=node.timestamp(),
                transport="http",
                reason="unapproved-software",
                detail="not approved",
                instrument_id=ia[1],
                wire=b"x",
            )
        )
        conn.execute(
            insert(quarantine).values(
                received_at=node.timestamp(),
                transport="http",
                reason="bad-signature",
                detail="signature does not verify",
                instrument_id=ia[2],
                wire=b"y",
            )
        )
    lake = [Alert(ib[2], "drift", "critical", node.now() - timedelta(days=3), {"x": 1})]
    with node.db.read() as conn:
        context = load_context(conn, lake_alerts=lake)
        facts = load_facts(conn, true(), lake_alerts=merge_alerts(lake))
    assert len(facts) == 9
    assert context == FleetContext.from_facts(facts, context.certificates.values())
    assert context.types[a["id"]].failed == 2 and context.types[b["id"]].failed == 3
    assert context.operators[world.op2.id].with_findings == 1
    by = {f.id: f for f in facts}
    assert {x.kind for x in by[ia[2]].alerts} == {"intake_quarantine"}
    assert by[ia[2]].alerts[0].severity == "warning"


def test_certificate_and_verification_factors(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 3)
    _event(world, world.auth1, ids[0], EventKind.VERIFIED, verified_until="2020-01-31")
    _event(world, world.auth1, ids[1], EventKind.VERIFIED, verified_until="2099-01-31")
    _event(world, world.op1, ids[1], EventKind.SEAL_BROKEN)
    _event(world, world.auth1, ids[2], EventKind.VERIFIED, verified_until="2099-01-31")
    before = _by_id(svc.risk_scores(node, world.auth1.actor))
    expired = _factor(before[ids[0]], "verification")
    assert expired.signal == pytest.approx(1.0)  # more than a year past its date
    assert "expired on 2020-01-31" in expired.reason
    voided = _factor(before[ids[1]], "verification")
    assert voided.evidence["voided_by"] == "seal_broken" and 0.5 <= voided.signal < 0.51
    assert _factor(before[ids[2]], "verification").signal == 0
    assert _factor(before[ids[2]], "certificate").signal == 0
    certs.change_certificate(
        node, world.nb1.actor, cert["id"], CertificateAction.SUSPEND, reason="x"
    )
    suspended = _by_id(svc.risk_scores(node, world.auth1.actor))
    assert _factor(suspended[ids[2]], "certificate").signal == pytest.approx(0.7)
    certs.change_certificate(
        node, world.nb1.actor, cert["id"], CertificateAction.WITHDRAW, reason="x"
    )
    withdrawn = _by_id(svc.risk_scores(node, world.auth1.actor))
    assert _factor(withdrawn[ids[2]], "certificate").signal == pytest.approx(1.0)
    assert withdrawn[ids[2]].score > suspended[ids[2]].score > before[ids[2]].score


def test_operator_history_and_type_risk(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    mine = _in_service(world, world.man1, world.op1, cert, 4)
    theirs = _in_service(world, world.man1, world.op2, cert, 4)
    _event(world, world.auth1, mine[0], EventKind.NON_COMPLIANCE_FOUND)
    _event(world, world.op1, mine[1], EventKind.SEAL_BROKEN)
    risks = _by_id(svc.risk_scores(node, world.auth1.actor))
    op1 = _factor(risks[mine[3]], "operator_history")
    op2 = _factor(risks[theirs[3]], "operator_history")
    assert op1.evidence["with_findings"] == 2 and op2.evidence["with_findings"] == 0
    assert op1.signal > op2.signal
    t = svc.type_risk(node, world.auth1.actor, cert["id"])
    assert t.instruments == 8
    assert t.score == pytest.approx(sum(r.score for r in risks.values()) / 8)
    assert t.score == pytest.approx(sum(f.contribution for f in t.factors))
    assert t.top[0].instrument_id in (mine[0], mine[1])
    with pytest.raises(NotFound):
        svc.type_risk(node, world.auth1.actor, "cer-DE-00000000000000000000000000")


def test_risk_is_for_authorities_and_reads_are_logged(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 2)
    for m in (world.man1, world.op1, world.nb1, world.admin):
        with pytest.raises(Forbidden):
            svc.risk_scores(node, m.actor)
        with pytest.raises(Forbidden):
            svc.instrument_risk(node, m.actor, ids[0])
        with pytest.raises(Forbidden):
            svc.inspection_plan(node, m.actor, budget=1)
    with pytest.raises(NotFound):
        svc.instrument_risk(node, world.auth1.actor, "ins-DE-00000000000000000000000000")
    svc.instrument_risk(node, world.auth1.actor, ids[0])
    svc.risk_scores(node, world.auth1.actor)
    for owner in (world.man1, world.op1):
        got = {(e["action"], e["resource_type"], e["resource_id"]) for e in _log(node, owner)}
        assert got == {
            ("risk.read", "instrument", ids[0]),
            ("risk.scored", "party", owner.id),  # the scan: per owner, not per instrument
        }


# -- the model's properties ------------------------------------------------------------------

_CERTS = ("cer-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6", "cer-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y7")
_ALERT = st.tuples(
    st.sampled_from(["critical", "warning", "info"]),
    st.floats(min_value=0, max_value=800),
    st.sampled_from(["drift", "gap", "seal_broken", "stuck_register"]),
)
_INSTRUMENT = st.fixed_dictionaries(
    {
        "cert": st.sampled_from(_CERTS),
        "operator": st.sampled_from(["pty-DE-OP1", "pty-DE-OP2", None]),
        "alerts": st.lists(_ALERT, max_size=4),
        "nc": st.integers(0, 2),
        "extra_findings": st.integers(0, 2),
        "years": st.floats(min_value=0, max_value=30),
        "overdue": st.one_of(st.none(), st.integers(-400, 800)),
    }
)


def _facts(k: int, spec: dict[str, Any]) -> InstrumentFacts:
    alerts = tuple(
        Alert(f"ins-{k}", kind, sev, NOW - timedelta(days=age), {})
        for sev, age, kind in spec["alerts"]
    )
    overdue = spec["overdue"]
    return InstrumentFacts(
        id=f"ins-{k}",
        serial=f"S{k}",
        certificate_id=spec["cert"],
        category="MI-003",
        manufacturer_id="pty-DE-MAN",
        operator_id=spec["operator"],
        region="DE21",
        state="in_service",
        registered_at=NOW - timedelta(days=365 * spec["years"] + 30),
        placed_at=NOW - timedelta(days=365 * spec["years"]),
        verified_until=None if overdue is None else NOW.date() - timedelta(days=overdue),
        alerts=alerts,
        non_compliances=spec["nc"],
        findings=spec["nc"] + spec["extra_findings"],
    )


def _scores(fleet: list[InstrumentFacts], status: str) -> list[float]:
    cfs = [CertificateFacts(id=c, status=status, valid_until=date(2030, 1, 1)) for c in _CERTS]
    ctx = FleetContext.from_facts(fleet, cfs)
    return [assess(f, ctx, now=NOW).score for f in fleet]


@given(
    st.lists(_INSTRUMENT, min_size=1, max_size=8),
    st.data(),
    st.floats(min_value=0, max_value=800),
    st.sampled_from(["valid", "suspended", "withdrawn"]),
)
def test_a_critical_alert_never_lowers_any_score(
    specs: list[dict[str, Any]], data: st.DataObject, age: float, status: str
) -> None:
    fleet = [_facts(k, s) for k, s in enumerate(specs)]
    j = data.draw(st.integers(0, len(fleet) - 1))
    before = _scores(fleet, status)
    new = Alert(fleet[j].id, "counter_reset", "critical", NOW - timedelta(days=age), {})
    fleet[j] = replace(fleet[j], alerts=(*fleet[j].alerts, new))
    after = _scores(fleet, status)
    for b, a in zip(before, after, strict=True):
        assert 0 <= a <= 1
        assert a >= b  # neither its own score nor any other instrument's goes down


@given(st.lists(_INSTRUMENT, min_size=1, max_size=6))
def test_a_score_is_the_sum_of_its_contributions(specs: list[dict[str, Any]]) -> None:
    fleet = [_facts(k, s) for k, s in enumerate(specs)]
    cfs = [CertificateFacts(id=c, status="valid", valid_until=date(2020, 1, 1)) for c in _CERTS]
    ctx = FleetContext.from_facts(fleet, cfs)
    risks = [assess(f, ctx, now=NOW) for f in fleet]
    assert scores(fleet, ctx, now=NOW) == [r.score for r in risks]  # to the last bit
    for r in risks:
        assert all(0 <= x.signal <= 1 for x in r.factors)
        assert r.score == pytest.approx(sum(x.contribution for x in r.factors))
        assert _factor(r, "certificate").evidence["status"] == "expired"


def test_weights_must_sum_to_one() -> None:
    with pytest.raises(InvalidInput, match="sum to 1"):
        svc.RiskWeights(alerts=0.5)
    with pytest.raises(InvalidInput, match=">= 0"):
        svc.RiskWeights(alerts=0.5, age=-0.02)


# -- the plan's rule, pure ---------------------------------------------------------------------


def _risk(k: int, operator: str, region: str, score: float) -> InstrumentRisk:
    facts = InstrumentFacts(
        id=f"ins-DE-{k:026d}",
        serial=f"S{k}",
        certificate_id=_CERTS[0],
        category="MI-003",
        manufacturer_id="pty-DE-MAN",
        operator_id=operator,
        region=region,
        state="in_service",
        registered_at=NOW,
    )
    return InstrumentRisk(facts=facts, score=score, factors=())


def _fleet_of_three() -> list[InstrumentRisk]:
    a = [_risk(k, "A", ("DE11", "DE21", "DE30")[k % 3], 0.9 - k / 1000) for k in range(30)]
    b = [_risk(100 + k, "B", ("DE40", "DE60")[k % 2], 0.5 - k / 1000) for k in range(30)]
    c = [_risk(200 + k, "C", "DE71", 0.0) for k in range(10)]
    return a + b + c


def test_the_plan_spends_the_budget_and_spreads_it() -> None:
    risks = _fleet_of_three()
    items = choose(risks, budget=10, seed=7)
    assert len(items) == 10 and [i.rank for i in items] == list(range(1, 11))
    assert len({i.risk.instrument_id for i in items}) == 10
    ranked = [i for i in items if i.selection == "risk"]
    assert len(ranked) == 9  # 10 % of 10 is one random audit draw
    per_operator = Counter(i.risk.facts.operator_id for i in ranked)
    assert per_operator == {"A": 5, "B": 4}  # A alone would take all 9: capped at 50 %
    per_site = Counter(i.risk.facts.site for i in ranked)
    assert max(per_site.values()) <= 3  # 25 % of 10, rounded up
    assert [i.risk.score for i in ranked if i.risk.facts.operator_id == "A"] == sorted(
        (i.risk.score for i in ranked if i.risk.facts.operator_id == "A"), reverse=True
    )
    uncapped = choose(risks, budget=10, seed=7, rule=svc.PlanRule(operator_cap=1, site_cap=1))
    assert Counter(i.risk.facts.operator_id for i in uncapped if i.selection == "risk") == {"A": 9}


def test_caps_give_way_only_when_nothing_else_has_risk() -> None:
    risks = [_risk(k, "A", "DE11", 0.8) for k in range(20)] + [
        _risk(100 + k, "B", "DE21", 0.0) for k in range(20)
    ]
    items = choose(risks, budget=10, seed=1)
    ranked = [i for i in items if i.selection == "risk"]
    assert len(ranked) == 9 and all(i.risk.facts.operator_id == "A" for i in ranked)
    assert sum(1 for i in ranked if "cap relaxed" in i.note) == 9 - 3  # site cap 3 first


def test_the_plan_is_reproducible_and_the_seed_matters() -> None:
    risks = [_risk(k, f"OP{k % 7}", f"DE{k % 5}1", 0.3) for k in range(60)]  # all tied
    rule = svc.PlanRule(audit_share=0.2)
    plans = [
        tuple(i.risk.instrument_id for i in choose(risks, budget=10, seed=s, rule=rule))
        for s in range(6)
    ]
    again = tuple(i.risk.instrument_id for i in choose(risks, budget=10, seed=0, rule=rule))
    assert again == plans[0]
    assert len(set(plans)) > 1  # ties and audit draws follow the seed, not the ids
    assert len(choose(risks[:4], budget=10, seed=0)) == 4  # budget beyond the candidates
    with pytest.raises(InvalidInput):
        choose(risks, budget=0, seed=0)
    with pytest.raises(InvalidInput):
        choose(risks, budget=1, seed=-1)


def test_a_plan_is_committed_to_the_ledger_not_disclosed(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 8)
    _event(world, world.op1, ids[3], EventKind.TAMPER_DETECTED)
    plan = svc.inspection_plan(node, world.auth1.actor, budget=3, seed=42)
    assert len(plan.items) == 3 and plan.items[0].risk.instrument_id == ids[3]
    assert plan.digest == svc.plan_digest(plan.document())
    payload = _payload(node, plan.leaf_index or 0)
    assert payload["kind"] == "inspection.planned" and payload["signer"] == world.auth1.id
    assert payload["body"]["plan"]["digest"] == plan.digest
    assert set(payload["body"]["plan"]) == {"digest", "size", "format"}  # no seed, no ids
    assert not any(i in str(payload) for i in ids)
    again = svc.inspection_plan(node, world.auth1.actor, budget=3, seed=42)
    assert [i.risk.instrument_id for i in again.items] == [i.risk.instrument_id for i in plan.items]
    assert audit(node).ok
    got = {(e["action"], e["resource_id"]) for e in _log(node, world.op1)}
    assert got == {("risk.scored", world.op1.id)}  # which instruments were picked stays secret


# -- the plan against ground truth -------------------------------------------------------------


@dataclass
class SimFleet:
    node: Node
    authority: Actor
    alerts: list[Alert]
    faulty: set[str]
    instruments: list[str]


@pytest.fixture(scope="module")
def sim_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    root: Path = tmp_path_factory.mktemp("surveillance")
    node = Node.open(Settings(data_dir=root, country="DE"))
    days = 14
    start = datetime.now(UTC).date() - timedelta(days=days + 2)
    result = run_simulation(
        node,
        SimConfig(instruments=200, days=days, seed=21, start=start, workers=0, reference_share=1),
    )
    labels = pq.read_table(result.labels).to_pylist()
    with node.db.read() as conn:
        pid = conn.execute(
            select(parties.c.id).where(parties.c.role == PartyRole.AUTHORITY.value)
        ).scalar_one()
    yield SimFleet(
        node=node,
        authority=Actor(party_id=pid, role=PartyRole.AUTHORITY, country="DE"),
        alerts=svc.lake_alerts(node, days=60),
        faulty={r["instrument"] for r in labels if r["faults"]},
        instruments=[r["instrument"] for r in labels],
    )
    node.db.dispose()


def test_the_plan_beats_a_random_plan_on_ground_truth(sim_fleet: SimFleet) -> None:
    k = 20
    base = len(sim_fleet.faulty) / len(sim_fleet.instruments)
    assert 0.03 < base < 0.2  # the fleet has faults, not too many
    hits = []
    for seed in range(3):
        plan = svc.inspection_plan(
            sim_fleet.node, sim_fleet.authority, budget=k, seed=seed, alerts=sim_fleet.alerts
        )
        assert len(plan.items) == k and plan.candidates == len(sim_fleet.instruments)
        ranked = [i for i in plan.items if i.selection == "risk"]
        assert len(ranked) == 18
        per_operator = Counter(i.risk.facts.site[0] for i in ranked)
        per_site = Counter(i.risk.facts.site for i in ranked)
        assert max(per_operator.values()) <= 10 and max(per_site.values()) <= 5
        hits.append(sum(1 for i in plan.items if i.risk.instrument_id in sim_fleet.faulty) / k)
    draws = random.Random(5)
    chance = [
        sum(1 for i in draws.sample(sim_fleet.instruments, k) if i in sim_fleet.faulty) / k
        for _ in range(500)
    ]
    plan_rate, random_rate = sum(hits) / len(hits), sum(chance) / len(chance)
    assert random_rate == pytest.approx(base, abs=0.03)
    assert plan_rate >= 3 * random_rate and plan_rate - random_rate >= 0.3, (hits, random_rate)


def test_sim_risks_name_the_alerts_that_raise_them(sim_fleet: SimFleet) -> None:
    risks = svc.risk_scores(sim_fleet.node, sim_fleet.authority, alerts=sim_fleet.alerts)
    assert len(risks) == len(sim_fleet.instruments)
    alerted = {a.instrument for a in sim_fleet.alerts if a.severity == "critical"}
    top = risks[: len(alerted) // 2]
    assert all(r.instrument_id in alerted for r in top)
    for r in top:
        assert r.reasons()[0].startswith("critical alert")
    electricity = svc.risk_scores(
        sim_fleet.node, sim_fleet.authority, category="MI-003", alerts=sim_fleet.alerts
    )
    assert electricity and all(r.facts.category == "MI-003" for r in electricity)
    assert len(electricity) < len(risks)


def test_type_failure_rates_are_the_kaplan_meier_failure_fractions(sim_fleet: SimFleet) -> None:
    """The type factor's rate (before smoothing) is 1 - S(end) of maintenance.type_reliability
    when every instrument of the type is observed over one window."""
    node = sim_fleet.node
    with node.db.read() as conn:
        context = load_context(conn, lake_alerts=sim_fleet.alerts)
    curves = type_reliability(
        node,
        sim_fleet.alerts,
        start=datetime(2000, 1, 1, tzinfo=UTC),
        end=node.now() + timedelta(days=1),
    )
    assert set(curves) == set(context.types)
    for cert, curve in curves.items():
        stats = context.types[cert]
        assert stats.failed / stats.instruments == pytest.approx(1 - curve[-1].survival)
    assert sum(t.failed for t in context.types.values()) > 0


# -- lot decisions -------------------------------------------------------------------------------


def _results(n: int, bad: int) -> list[svc.InspectionResult]:
    return [
        svc.InspectionResult(instrument_id=f"ins-DE-{k:026d}", conforming=k >= bad)
        for k in range(n)
    ]


@pytest.mark.parametrize(
    "plan",
    [mid_f_plan(500), mid_f_plan(None), iso2859_plan(1000, "2.5"), iso2859_plan(10, "6.5")],
    ids=["mid-f-500", "mid-f-large", "iso-1000-2.5", "iso-10-6.5"],
)
def test_lot_decisions_at_the_boundary(plan: Any) -> None:
    at_c = svc.lot_decision(plan, _results(plan.n, plan.c))
    assert at_c.decision is Decision.ACCEPT and at_c.defects == plan.c
    over = svc.lot_decision(plan, _results(plan.n, plan.c + 1))
    assert over.decision is Decision.REJECT and over.defects == plan.c + 1
    d = over.as_dict()
    assert (d["n"], d["c"], d["re"], d["defects"]) == (plan.n, plan.c, plan.c + 1, plan.c + 1)
    assert ("module F" in d["rule"]) == (plan.scheme == "mid-f")
    assert "ISO 2859-1" in d["rule"] or "MID" in d["rule"]
    assert "rejected" in over.consequence and "accepted" in at_c.consequence


def test_a_sample_of_the_wrong_size_or_with_repeats_is_refused() -> None:
    plan = mid_f_plan(500)
    with pytest.raises(InvalidInput, match=f"n = {plan.n} instruments, got results for 82"):
        svc.lot_decision(plan, _results(plan.n - 1, 0))
    twice = [*_results(plan.n - 1, 0), _results(1, 0)[0]]
    with pytest.raises(InvalidInput, match="twice"):
        svc.lot_decision(plan, twice)
    with pytest.raises(InvalidInput, match="AQL"):
        svc.sampling_plan("iso2859", 500)


def test_a_recorded_lot_decision_is_a_signed_statement_audit_replays(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = [r["id"] for r in world.instruments(world.man1, cert, 10, prefix="LOT")]
    plan = svc.sampling_plan("mid-f", 10)  # a lot of 10 is inspected completely, c = 0
    assert (plan.n, plan.c) == (10, 0)
    sample = [svc.InspectionResult(instrument_id=i, conforming=True) for i in ids]
    out = svc.record_lot_decision(
        node, world.nb1.actor, reference="LOT-1", plan=plan, results=sample
    )
    assert (out["decision"], out["certificate_id"], out["decided_by"]) == (
        "accept",
        cert["id"],
        world.nb1.id,
    )
    payload = _payload(node, out["leaf_index"])
    assert payload["kind"] == "lot.decided" and payload["signer"] == world.nb1.id
    assert payload["body"]["decision"]["decision"] == "accept"
    assert len(payload["body"]["results"]) == 10
    bad = [replace(sample[0], conforming=False, finding="error +3.1 %"), *sample[1:]]
    out = svc.record_lot_decision(
        node, world.auth1.actor, reference="LOT-1b", plan=plan, results=bad
    )
    assert out["decision"] == "reject" and out["nonconforming"] == [ids[0]]
    assert audit(node).ok
    with pytest.raises(Forbidden, match="did not issue"):
        svc.record_lot_decision(node, world.nb2.actor, reference="L", plan=plan, results=sample)
    for m in (world.man1, world.op1, world.admin):
        with pytest.raises(Forbidden):
            svc.record_lot_decision(node, m.actor, reference="L", plan=plan, results=sample)
    other = world.certificate(world.nb1, world.man1)
    mixed = [
        *sample[:9],
        svc.InspectionResult(
            instrument_id=world.instruments(world.man1, other, 1, prefix="MIX")[0]["id"],
            conforming=True,
        ),
    ]
    size = _tree(node)
    with pytest.raises(InvalidInput, match="one type"):
        svc.record_lot_decision(node, world.auth1.actor, reference="L", plan=plan, results=mixed)
    missing = [
        *sample[:9],
        svc.InspectionResult(instrument_id="ins-DE-00000000000000000000000000", conforming=True),
    ]
    with pytest.raises(NotFound):
        svc.record_lot_decision(node, world.auth1.actor, reference="L", plan=plan, results=missing)
    assert _tree(node) == size  # refused: nothing recorded


def test_the_projector_refuses_a_decision_that_does_not_follow(world: World) -> None:
    body = {
        "decision": {"n": 2, "c": 0, "defects": 1, "decision": "accept"},
        "results": [
            {"instrument_id": "ins-a", "conforming": False},
            {"instrument_id": "ins-b", "conforming": True},
        ],
    }
    payload = {"kind": "lot.decided", "signer": world.auth1.id, "body": body}
    with world.node.db.read() as conn:
        with pytest.raises(RuleViolation, match="expected reject"):
            lot_decided(conn, payload, 7)
        body["decision"]["decision"] = "reject"
        lot_decided(conn, payload, 7)
        with pytest.raises(RuleViolation, match="only an authority or a notified body"):
            lot_decided(conn, {**payload, "signer": world.man1.id}, 7)


def _tree(node: Node) -> int:
    with node.db.read() as conn:
        return node.log.tree_size(conn)


# -- non-compliance notices -------------------------------------------------------------------


def _notify(world: World, ids: list[str], **kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {
        "finding": "register under-counts by 9 % (MPE 4 %)",
        "measures": ["repair or replace the meter", "re-verify it"],
        "legal_basis": "MID 2014/32/EU Art. 40; Annex I point 1",
        "deadline": world.node.now().date() + timedelta(days=30),
        "reference": "MSA-2026-0042",
    }
    args.update(kw)
    return svc.notify_non_compliance(world.node, world.auth1.actor, ids, **args)


def test_notices_are_in_the_ledger_and_open_until_a_corrective_action(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 3)
    recorded = _notify(world, ids[:2])
    assert [r["instrument_id"] for r in recorded] == ids[:2]
    notice = recorded[0]["notice"]
    assert notice["measures"] == ["repair or replace the meter", "re-verify it"]
    for r in recorded:  # the statement holds the notice, and the events table projects it
        payload = _payload(node, r["leaf_index"])
        assert payload["kind"] == "instrument.event"
        assert payload["body"]["event"]["kind"] == "non_compliance_found"
        assert payload["body"]["event"]["details"]["notice"] == notice
        with node.db.read() as conn:
            row = conn.execute(select(events).where(events.c.id == r["id"])).one()
        assert (row.kind, row.details["notice"], row.leaf_index) == (
            "non_compliance_found",
            notice,
            r["leaf_index"],
        )
    open_ = svc.list_non_compliance(node, world.auth1.actor, open_=True).items
    assert {n["id"] for n in open_} == {r["id"] for r in recorded}
    assert all(n["open"] and n["closed_by"] is None for n in open_)
    fix = _event(world, world.man1, ids[0], EventKind.CORRECTIVE_ACTION, note="meter replaced")
    still = svc.list_non_compliance(node, world.auth1.actor, open_=True).items
    assert [n["instrument_id"] for n in still] == [ids[1]]
    closed = svc.list_non_compliance(node, world.auth1.actor, open_=False).items
    assert [(n["instrument_id"], n["closed_by"], n["open"]) for n in closed] == [
        (ids[0], fix["id"], False)
    ]
    # a later notice on the same instrument is open again: only later actions answer it
    _notify(world, [ids[0]], reference="MSA-2026-0043")
    assert len(svc.list_non_compliance(node, world.auth1.actor, open_=True).items) == 2
    assert len(svc.list_non_compliance(node, world.auth1.actor).items) == 3
    assert audit(node).ok


def test_notices_are_read_by_the_instruments_readers_only(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 2)
    _notify(world, ids)
    for m in (world.man1, world.op1, world.nb1, world.auth2):
        assert len(svc.list_non_compliance(node, m.actor, open_=True).items) == 2, m.party
    for m in (world.man2, world.op2, world.nb2):
        assert svc.list_non_compliance(node, m.actor).items == []
    with pytest.raises(Forbidden):
        svc.list_non_compliance(node, world.admin.actor)
    one = svc.list_non_compliance(node, world.man1.actor, instrument_id=ids[1]).items
    assert [n["instrument_id"] for n in one] == [ids[1]]
    page = svc.list_non_compliance(node, world.auth1.actor, limit=1)
    assert len(page.items) == 1 and page.next_cursor
    rest = svc.list_non_compliance(node, world.auth1.actor, limit=1, cursor=page.next_cursor)
    assert {page.items[0]["id"], rest.items[0]["id"]} == {
        n["id"] for n in svc.list_non_compliance(node, world.auth1.actor).items
    }
    reads = {(e["action"], e["reader_id"]) for e in _log(node, world.man1)}
    assert ("non_compliance.read", world.auth2.id) in reads
    assert ("non_compliance.read", world.nb1.id) in reads
    assert all(e["reader_id"] != world.man1.id for e in _log(node, world.man1))


def test_a_notice_needs_an_authority_measures_and_a_future_deadline(world: World) -> None:
    node = world.node
    cert = world.certificate(world.nb1, world.man1)
    ids = _in_service(world, world.man1, world.op1, cert, 1)
    size = _tree(node)
    with pytest.raises(InvalidInput, match="deadline"):
        _notify(world, ids, deadline=node.now().date())
    with pytest.raises(InvalidInput, match="corrective measures"):
        _notify(world, ids, measures=[])
    with pytest.raises(InvalidInput, match="twice"):
        _notify(world, [ids[0], ids[0]])
    with pytest.raises(InvalidInput, match="finding"):
        _notify(world, ids, finding="  ")
    with pytest.raises(NotFound):
        _notify(world, ["ins-DE-00000000000000000000000000"])
    for m in (world.man1, world.op1, world.nb1, world.admin):
        with pytest.raises(Forbidden):
            svc.notify_non_compliance(
                node,
                m.actor,
                ids,
                finding="x",
                measures=["y"],
                legal_basis="z",
                deadline=node.now().date() + timedelta(days=1),
            )
    assert _tree(node) == size
