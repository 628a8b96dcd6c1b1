"""E-compliance reports: each criterion, the fleet aggregates against a brute-force count,
the HTML and PDF renderings, authorization and the access log."""

from __future__ import annotations

import io
import json
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any, ClassVar

import pytest
from pypdf import PdfReader
from sqlalchemy import select, update

from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.services import access
from metrocloud.services import certificates as certs
from metrocloud.services import compliance as svc
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services.compliance import Criterion, Outcome
from metrocloud.store.schema import instruments
from tests.conftest import World, software
from tests.services._compliance_registry import (
    EXPECTED,
    HOSTILE_NAME,
    Registry,
    build,
    in_service,
    verify,
)

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture
def reg(world: World) -> Registry:
    return build(world)


def _failed(report: svc.InstrumentReport) -> set[Criterion]:
    return {c.criterion for c in report.criteria if c.outcome is Outcome.FAIL}


def _outcomes(report: svc.InstrumentReport) -> dict[Criterion, Outcome]:
    return {c.criterion: c.outcome for c in report.criteria}


# -- one instrument ------------------------------------------------------------------------


def test_each_instrument_fails_exactly_its_criterion(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    for serial, expected in EXPECTED.items():
        report = svc.instrument_report(reg.node, auth, reg.ids[serial])
        assert [c.criterion for c in report.criteria] == list(Criterion)
        assert _failed(report) == expected, (serial, report.criteria)
        assert report.verdict is (Outcome.FAIL if expected else Outcome.PASS), serial
        assert report.instrument.serial == serial


def test_not_applicable_before_the_market_and_out_of_service(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    registered = _outcomes(svc.instrument_report(reg.node, auth, reg.ids["REG-1"]))
    assert registered[Criterion.VERIFICATION_CURRENT] is Outcome.NOT_APPLICABLE
    assert registered[Criterion.DECLARATION_PRESENT] is Outcome.NOT_APPLICABLE
    assert registered[Criterion.CERTIFICATE_VALID] is Outcome.PASS
    # an expired verification stops counting once the operator takes the instrument out
    ev.record_events(
        reg.node,
        reg.world.op1.actor,
        [ev.EventDraft(instrument_id=reg.ids["VERI-1"], kind=EventKind.TAKEN_OUT_OF_SERVICE)],
    )
    out = svc.instrument_report(reg.node, auth, reg.ids["VERI-1"])
    assert _outcomes(out)[Criterion.VERIFICATION_CURRENT] is Outcome.NOT_APPLICABLE
    assert out.verdict is Outcome.PASS


def test_evidence_names_records_dates_and_ledger_leaves(reg: Registry) -> None:
    node, auth = reg.node, reg.world.auth1.actor
    by = {c.criterion: c for c in svc.instrument_report(node, auth, reg.ids["CERT-1"]).criteria}
    cert = by[Criterion.CERTIFICATE_VALID]
    assert "withdrawn" in cert.summary
    history = certs.history(node, reg.cert_w["id"])
    withdrawal = next(h for h in history if h["action"] == "withdraw")
    assert any(
        e.kind == "certificate_history"
        and e.leaf_index == withdrawal["leaf_index"]
        and "type unsafe" in e.detail
        for e in cert.evidence
    ), cert.evidence
    assert by[Criterion.DECLARATION_PRESENT].evidence[0].leaf_index is not None

    nonc = svc.instrument_report(node, auth, reg.ids["NONC-1"]).criteria[4]
    found = ev.list_events(node, auth, reg.ids["NONC-1"]).items[-1]
    assert found["kind"] == "non_compliance_found"
    assert [(e.id, e.leaf_index, e.at) for e in nonc.evidence] == [
        (found["id"], found["leaf_index"], found["occurred_at"])
    ]
    assert "seal missing" in nonc.evidence[0].detail

    veri = svc.instrument_report(node, auth, reg.ids["VERI-1"]).criteria[2]
    yesterday = (node.now().date() - timedelta(days=1)).isoformat()
    assert veri.summary == f"verification expired after {yesterday}"
    assert veri.evidence[0].detail == f"verified until {yesterday}"

    soft = svc.instrument_report(node, auth, reg.ids["SOFT-1"]).criteria[1]
    assert "FW 9.9.9" in soft.summary and "not approved" in soft.summary
    flag = svc.instrument_report(node, auth, reg.ids["FLAG-1"]).criteria[1]
    assert "flagged unapproved software 1 time" in flag.summary
    assert [e.kind for e in flag.evidence] == ["software", "flag"]
    assert "cd" * 32 in flag.evidence[1].detail


def test_corrective_action_closes_and_a_new_finding_reopens(reg: Registry) -> None:
    node, world = reg.node, reg.world
    iid = reg.ids["NONC-1"]

    def nc_outcome() -> Outcome:
        return svc.instrument_report(node, world.auth1.actor, iid).criteria[4].outcome

    assert nc_outcome() is Outcome.FAIL
    ev.record_events(
        node,
        world.op1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.CORRECTIVE_ACTION)],
    )
    assert nc_outcome() is Outcome.PASS
    ev.record_events(
        node,
        world.auth1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.NON_COMPLIANCE_FOUND)] * 2,
    )
    assert nc_outcome() is Outcome.FAIL
    report = svc.instrument_report(node, world.auth1.actor, iid)
    assert report.criteria[4].summary.startswith("2 open non-compliance(s)")


def test_an_approved_update_clears_the_intake_flag_and_voids_the_verification(
    reg: Registry,
) -> None:
    node, world = reg.node, reg.world
    iid = reg.ids["FLAG-1"]
    ev.record_events(
        node,
        world.man1.actor,
        [
            ev.EventDraft(
                instrument_id=iid,
                kind=EventKind.SOFTWARE_UPDATED,
                details={"software": software("1.1.0").as_dict()},
            )
        ],
    )
    report = svc.instrument_report(node, world.auth1.actor, iid)
    assert _failed(report) == {Criterion.VERIFICATION_CURRENT}
    assert "software_updated" in report.criteria[2].summary
    verify(world, iid, 30)
    assert svc.instrument_report(node, world.auth1.actor, iid).verdict is Outcome.PASS


# -- fleets --------------------------------------------------------------------------------


def _brute_force(reg: Registry, ids: list[str]) -> tuple[Counter[Any], set[str]]:
    counts: Counter[Any] = Counter()
    failing = set()
    for iid in ids:
        report = svc.instrument_report(reg.node, reg.world.auth1.actor, iid)
        for c in report.criteria:
            counts[(c.criterion, c.outcome)] += 1
        if report.verdict is Outcome.FAIL:
            failing.add(iid)
    return counts, failing


def _fleet_counts(report: svc.FleetReport) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for c in report.counts:
        out[(c.criterion, Outcome.PASS)] += c.passed
        out[(c.criterion, Outcome.FAIL)] += c.failed
        out[(c.criterion, Outcome.NOT_APPLICABLE)] += c.not_applicable
    return +out


def _all_failing(reg: Registry, make: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = make(limit=2, cursor=cursor).failing
        ids += [f.id for f in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return ids


def _fleet_ids(reg: Registry, **where: Any) -> list[str]:
    with reg.node.db.read() as conn:
        q = select(instruments.c.id)
        for k, v in where.items():
            q = q.where(instruments.c[k] == v)
        return list(conn.execute(q).scalars())


def test_manufacturer_and_type_aggregates_equal_a_brute_force_count(reg: Registry) -> None:
    node, auth, man1 = reg.node, reg.world.auth1.actor, reg.world.man1
    report = svc.manufacturer_report(node, auth, man1.id)
    ids = _fleet_ids(reg, manufacturer_id=man1.id)
    counts, failing = _brute_force(reg, ids)
    assert report.instruments == len(ids) == len(EXPECTED)
    assert _fleet_counts(report) == counts
    assert report.failing.total == len(failing) == 6
    assert report.passing == len(ids) - len(failing)
    assert {f.id for f in report.failing.items} == failing
    assert {f.serial: set(f.failed) for f in report.failing.items} == {
        s: e for s, e in EXPECTED.items() if e
    }
    assert report.verdict is Outcome.FAIL
    assert _all_failing(reg, lambda **kw: svc.manufacturer_report(node, auth, man1.id, **kw)) == (
        sorted(failing)
    )
    lines = {c.number: c for c in report.certificates}
    assert (lines["DE-A-0001"].instruments, lines["DE-A-0001"].failing) == (8, 5)
    assert (lines["DE-W-0001"].status, lines["DE-W-0001"].failing) == ("withdrawn", 1)
    assert "DE-B-0001" not in lines

    for cert in (reg.cert_a, reg.cert_w):
        t = svc.type_report(node, auth, cert["id"])
        ids = _fleet_ids(reg, certificate_id=cert["id"])
        counts, failing = _brute_force(reg, ids)
        assert _fleet_counts(t) == counts
        assert {f.id for f in t.failing.items} == failing
        assert t.subject.number == cert["number"]


def test_fleet_series_for_the_charts(reg: Registry) -> None:
    node, auth = reg.node, reg.world.auth1.actor
    report = svc.manufacturer_report(node, auth, reg.world.man1.id)
    today = node.now().date()
    next_year = today + timedelta(days=365)
    yesterday = today - timedelta(days=1)
    due = {m.month: m.count for m in report.verification_due}
    # eight in service: VERI-1 ran out yesterday, the others (SOFT-1 verified again after
    # its update) in a year
    assert due == {f"{yesterday:%Y-%m}": 1, f"{next_year:%Y-%m}": 7}
    assert report.never_verified == 0
    last = report.non_compliances[-1]
    assert last.month == f"{today:%Y-%m}"
    assert sum(m.found for m in report.non_compliances) == 2
    assert sum(m.closed for m in report.non_compliances) == 1
    assert last.open == 1
    actions = [(p.number, p.action, p.status) for p in report.certificate_history]
    assert ("DE-W-0001", "withdraw", "withdrawn") in actions
    assert actions.count(("DE-A-0001", "issue", "valid")) == 1


def _random_fleet(world: World, seed: int) -> list[str]:
    """Instruments with random histories, including every kind of finding."""
    rng = random.Random(seed)
    node, man, op, auth = world.node, world.man1, world.op1, world.auth1
    cert = world.certificate(world.nb1, man, number=f"RND-{seed}")
    refs = world.instruments(man, cert, 24, prefix=f"R{seed}-")
    ids = [r["id"] for r in refs]
    active = [i for i in ids if rng.random() < 0.85]
    in_service(world, man, op, active)
    drafts = []
    for iid in active:
        for _ in range(rng.randint(0, 4)):
            kind, who, details = rng.choice(
                [
                    (
                        EventKind.VERIFIED,
                        auth,
                        {
                            "verified_until": str(
                                node.now().date() + timedelta(days=rng.randint(-400, 900))
                            )
                        },
                    ),
                    (EventKind.NON_COMPLIANCE_FOUND, auth, {}),
                    (EventKind.CORRECTIVE_ACTION, man, {}),
                    (EventKind.SEAL_BROKEN, op, {}),
                    (
                        EventKind.SOFTWARE_UPDATED,
                        man,
                        {"software": software(rng.choice(["1.0.0", "1.1.0", "6.6.6"])).as_dict()},
                    ),
                ]
            )
            drafts.append((who, ev.EventDraft(instrument_id=iid, kind=kind, details=details)))
    for who, d in drafts:
        ev.record_events(node, who.actor, [d])
    declared = [i for i in active if rng.random() < 0.8]
    if declared:
        decl.declare_conformity(
            node,
            man.actor,
            certificate_id=cert["id"],
            instrument_ids=declared,
            module=ConformityModule.F,
        )
    if rng.random() < 0.5:
        certs.change_certificate(
            node, world.nb1.actor, cert["id"], CertificateAction.SUSPEND, reason="audit"
        )
    return ids


@pytest.mark.parametrize("seed", [1, 2])
def test_random_fleets_aggregate_like_their_instruments(world: World, seed: int) -> None:
    ids = _random_fleet(world, seed)
    reg = Registry(world, {}, {}, {}, {}, "")
    report = svc.manufacturer_report(world.node, world.auth1.actor, world.man1.id, limit=1000)
    counts, failing = _brute_force(reg, ids)
    assert report.instruments == len(ids)
    assert _fleet_counts(report) == counts
    assert {f.id for f in report.failing.items} == failing
    assert report.failing.total == len(failing)


# -- renderings ----------------------------------------------------------------------------


class _Strict(HTMLParser):
    """html.parser with a stack: every opened element is closed, in order."""

    VOID: ClassVar[set[str]] = {"meta", "br", "link", "img", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags[tag] += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        self.tags[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _check_html(text: str, charts: int) -> ET.Element:
    parser = _Strict()
    parser.feed(text)
    parser.close()
    assert parser.stack == []
    assert parser.tags["svg"] == charts
    for forbidden in ("script", "link", "img", "iframe", "object"):
        assert parser.tags[forbidden] == 0, forbidden
    root = ET.fromstring(text.split("\n", 1)[1])  # well-formed XML (after the doctype)
    svgs = list(root.iter(f"{SVG}svg"))
    assert len(svgs) == charts
    for s in svgs:
        assert s.find(f"{SVG}title") is not None
        assert len(list(s.iter(f"{SVG}path"))) > 10  # something is drawn
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids)), "duplicate ids across the charts"
    for e in root.iter():
        for name, value in e.attrib.items():
            if name.endswith("href") or name in ("src", "action"):
                assert value.startswith("#"), (name, value)  # nothing fetched
    assert 'http-equiv="Content-Security-Policy"' in text
    return root


def test_html_is_self_contained_well_formed_and_has_the_charts(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    fleet = svc.manufacturer_report(reg.node, auth, reg.world.man1.id)
    root = _check_html(svc.render_html(fleet), charts=3)
    text = "".join(root.itertext())
    assert "Software approved" in text and "FLAG-1" in text and "DE-W-0001" in text
    one = svc.instrument_report(reg.node, auth, reg.ids["SOFT-1"])
    root = _check_html(svc.render_html(one), charts=2)
    assert "not approved" in "".join(root.itertext())
    t = svc.type_report(reg.node, auth, reg.cert_a["id"])
    _check_html(svc.render_html(t), charts=3)


def test_hostile_text_is_escaped(reg: Registry) -> None:
    node, world = reg.node, reg.world
    evil = world.admit(HOSTILE_NAME, PartyRole.MANUFACTURER)
    cert = world.certificate(world.nb1, evil, number="EVIL-<b>1</b>")
    iid = world.instruments(evil, cert, 1, prefix="E")[0]["id"]
    hostile_serial = "<script>alert('serial')</script>"
    with node.db.write() as conn:  # a record the API would refuse, e.g. a replicated one
        conn.execute(
            update(instruments).where(instruments.c.id == iid).values(serial=hostile_serial)
        )
    # on the market without a declaration: listed among the failing instruments
    ev.record_events(
        node, evil.actor, [ev.EventDraft(instrument_id=iid, kind=EventKind.PLACED_ON_MARKET)]
    )
    auth = world.auth1.actor
    for report, charts in (
        (svc.instrument_report(node, auth, iid), 2),
        (svc.manufacturer_report(node, auth, evil.id), 3),
        (svc.type_report(node, auth, cert["id"]), 3),
    ):
        html = svc.render_html(report)
        assert "<script" not in html and "<b>" not in html
        assert "&lt;script&gt;alert(&#x27;serial&#x27;)&lt;/script&gt;" in html
        assert "EVIL-&lt;b&gt;1&lt;/b&gt;" in html
        root = _check_html(html, charts)
        text = "".join(root.itertext())
        assert hostile_serial in text  # shown as text, exactly
        if not isinstance(report, svc.FleetReport) or report.kind == "manufacturer":
            assert HOSTILE_NAME in text
        pdf = svc.render_pdf(report)
        assert pdf.startswith(b"%PDF-")
        extracted = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
        assert "alert('serial')" in extracted
        if isinstance(report, svc.InstrumentReport):
            assert "$x$" in extracted  # no mathtext: a dollar stays a dollar


def test_renderings_are_deterministic(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    for report in (
        svc.manufacturer_report(reg.node, auth, reg.world.man1.id),
        svc.instrument_report(reg.node, auth, reg.ids["NONC-1"]),
    ):
        for fmt in svc.FORMATS:
            assert svc.render(report, fmt) == svc.render(report, fmt), fmt
    with pytest.raises(InvalidInput):
        svc.render(report, "docx")


def test_json_form(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    report = svc.manufacturer_report(reg.node, auth, reg.world.man1.id, limit=3)
    doc = json.loads(svc.render(report, "json"))
    assert doc == svc.as_json(report)
    assert doc["kind"] == "manufacturer" and doc["verdict"] == "fail"
    assert [c["criterion"] for c in doc["counts"]] == [c.value for c in Criterion]
    assert doc["failing"]["total"] == 6 and len(doc["failing"]["items"]) == 3
    assert doc["failing"]["next_cursor"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", doc["as_of"])
    one = svc.as_json(svc.instrument_report(reg.node, auth, reg.ids["CERT-1"]))
    assert one["criteria"][0]["outcome"] == "fail"
    assert one["criteria"][0]["evidence"][0]["kind"] == "certificate"


def test_pdf_has_the_summary_the_charts_and_the_tables(reg: Registry) -> None:
    auth = reg.world.auth1.actor
    report = svc.manufacturer_report(reg.node, auth, reg.world.man1.id)
    pdf = svc.render_pdf(report)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    first = reader.pages[0].extract_text()
    assert "Verdict: FAIL" in first and "Software approved" in first
    assert "FLAG-1" in "".join(p.extract_text() for p in reader.pages)
    assert reader.metadata is not None and reader.metadata.title.startswith("E-compliance")
    assert "/CreationDate" not in reader.metadata
    # the chart page draws vector paths
    charts_page = reader.pages[1].get_contents()
    assert charts_page is not None and len(charts_page.get_data()) > 5000


# -- who may read a report -----------------------------------------------------------------


def test_who_may_read_which_report(reg: Registry) -> None:
    node, w = reg.node, reg.world
    own, other = reg.ids["PASS-1"], reg.foreign
    allowed = {
        ("auth1", "i", own),
        ("auth1", "i", other),
        ("man1", "i", own),
        ("nb1", "i", own),
        ("man2", "i", other),
        ("nb2", "i", other),
        ("auth1", "m", w.man1.id),
        ("auth1", "m", w.man2.id),
        ("man1", "m", w.man1.id),
        ("man2", "m", w.man2.id),
        ("auth1", "t", reg.cert_a["id"]),
        ("man1", "t", reg.cert_a["id"]),
        ("nb1", "t", reg.cert_a["id"]),
        ("nb2", "t", reg.cert_b["id"]),
        ("man2", "t", reg.cert_b["id"]),
        ("auth2", "t", reg.cert_b["id"]),
    }
    calls = {"i": svc.instrument_report, "m": svc.manufacturer_report, "t": svc.type_report}
    targets = {
        "i": (own, other),
        "m": (w.man1.id, w.man2.id),
        "t": (reg.cert_a["id"], reg.cert_b["id"]),
    }
    for who in ("admin", "nb1", "nb2", "man1", "man2", "op1", "op2", "auth1"):
        for kind, call in calls.items():
            for target in targets[kind]:
                key = (who, kind, target)
                if key in allowed or (who == "auth1"):
                    assert call(node, w.members[who].actor, target) is not None, key
                else:
                    with pytest.raises(Forbidden):
                        call(node, w.members[who].actor, target)
    # grants give read access to instrument data, not to compliance reports
    access.create_grant(node, w.man1.actor, grantee_id=w.op2.id, instrument_id=own)
    assert inst.get_instrument(node, w.op2.actor, own)["id"] == own
    with pytest.raises(Forbidden):
        svc.instrument_report(node, w.op2.actor, own)
    with pytest.raises(NotFound):
        svc.manufacturer_report(node, w.auth1.actor, w.op1.id)  # not a manufacturer
    with pytest.raises(NotFound):
        svc.type_report(node, w.auth1.actor, "cer-DE-00000000000000000000000000")
    with pytest.raises(InvalidInput):
        svc.manufacturer_report(node, w.auth1.actor, w.man1.id, limit=0)


def _log(reg: Registry, member: str) -> set[tuple[str, str, str, str]]:
    page = access.list_access_log(
        reg.node, reg.world.members[member].actor, limit=1000, cursor=None
    )
    return {(e["reader_id"], e["action"], e["resource_type"], e["resource_id"]) for e in page.items}


def test_cross_party_reads_are_in_the_owners_access_log(reg: Registry) -> None:
    node, w = reg.node, reg.world
    a = w.auth1.id
    svc.instrument_report(node, w.auth1.actor, reg.ids["PASS-1"])
    svc.manufacturer_report(node, w.auth1.actor, w.man1.id, limit=2)
    svc.type_report(node, w.nb1.actor, reg.cert_w["id"])
    svc.manufacturer_report(node, w.man1.actor, w.man1.id)  # its own: not in its log
    log = _log(reg, "man1")
    first_two = sorted(reg.ids[s] for s, e in EXPECTED.items() if e)[:2]
    assert {x for x in log if x[1].startswith("compliance.")} == {
        (a, "compliance.instrument", "instrument", reg.ids["PASS-1"]),
        (a, "compliance.manufacturer", "party", w.man1.id),
        *((a, "compliance.manufacturer", "instrument", i) for i in first_two),
        (w.nb1.id, "compliance.type", "certificate", reg.cert_w["id"]),
        (w.nb1.id, "compliance.type", "instrument", reg.ids["CERT-1"]),
    }
    # the operator co-owns the instrument data: it sees the reads of its instruments,
    # including the manufacturer's own report listing them
    op_log = _log(reg, "op1")
    assert (a, "compliance.instrument", "instrument", reg.ids["PASS-1"]) in op_log
    assert (w.man1.id, "compliance.manufacturer", "instrument", reg.ids["CERT-1"]) in op_log
    assert not any(x[2] == "party" for x in op_log)


def test_local_authority_is_the_node(reg: Registry) -> None:
    node = reg.node
    actor = svc.local_authority(node)
    assert (actor.party_id, actor.role) == (node.node_id, PartyRole.AUTHORITY)
    report = svc.type_report(node, actor, reg.cert_a["id"])
    assert report.instruments == 8 and report.node_id == node.node_id
    assert any(x[0] == node.node_id for x in _log(reg, "man1"))


def test_an_empty_fleet_is_not_applicable_and_still_renders(reg: Registry) -> None:
    newcomer = reg.world.admit("Newcomer GmbH", PartyRole.MANUFACTURER)
    report = svc.manufacturer_report(reg.node, reg.world.auth1.actor, newcomer.id)
    assert (report.instruments, report.failing.total, report.verdict) == (
        0,
        0,
        Outcome.NOT_APPLICABLE,
    )
    assert all(c.passed == c.failed == c.not_applicable == 0 for c in report.counts)
    assert report.verification_due == () and report.non_compliances == ()
    _check_html(svc.render_html(report), charts=3)
    assert svc.render_pdf(report).startswith(b"%PDF-")
