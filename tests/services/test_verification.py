"""Remote verification through the service layer: the checklist, signing, recording.

Acceptance (issue #5): remote verification of a lot of 1,000 instruments yields signed
results in the ledger; a tampered instrument fails with its reason.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from metrocloud.device.eventlog import DeviceEventKind
from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    RuleViolation,
    VerificationError,
)
from metrocloud.domain.instruments import EventKind
from metrocloud.formats.batches import GENESIS_PREV, encode_batch
from metrocloud.services import certificates as certs
from metrocloud.services import event_logs
from metrocloud.services import events as ev
from metrocloud.services import verification as ver
from metrocloud.services.measurements import submit_batches
from metrocloud.services.node import Node
from metrocloud.store.schema import device_event_logs, instruments
from metrocloud.trust.keys import PrivateKey
from metrocloud.trust.statements import SignedStatement
from tests.conftest import World
from tests.services import _verification_fleet as vf


def _tree_size(node: Node) -> int:
    with node.db.read() as conn:
        return node.log.tree_size(conn)


def _codes(result: ver.VerificationResult) -> list[str]:
    return [f.code for f in result.reasons]


def _seal_broken(fleet: vf.Fleet, iid: str) -> None:
    ev.record_events(
        fleet.node,
        fleet.world.op1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.SEAL_BROKEN)],
    )


def _device_tamper(fleet: vf.Fleet, iid: str) -> None:
    """The device records tamper detection; the head-end uploads the new record (a delta)."""
    log = fleet.logs[iid]
    log.append(DeviceEventKind.TAMPER_DETECTED, {"sensor": "cover"})
    event_logs.upload_event_log(
        fleet.node, fleet.world.op1.actor, iid, vf.log_bytes(log, first=len(log))
    )


def _unapproved_software(fleet: vf.Fleet, iid: str) -> None:
    """A batch from the device reporting software its certificate does not approve: the
    real intake quarantines it and flags the instrument."""
    t = int((fleet.node.now() - timedelta(hours=2)).timestamp() * 1000)
    wire = encode_batch(
        fleet.keys[iid],
        instrument=iid,
        counter=1,
        prev=GENESIS_PREV,
        software="ab" * 32,
        quantity=vf.REGISTER,
        unit="kWh",
        t=[t],
        value=[1.0],
        status=[0],
    ).wire()
    outcome = submit_batches(fleet.node, fleet.world.op1.actor, [wire], "http")[0]
    assert outcome.reason == "unapproved-software", outcome


def _alter_stored_log(node: Node, iid: str) -> None:
    """Someone with database access edits a stored device record (not through the API)."""
    with node.db.write() as conn:
        line = conn.execute(
            select(device_event_logs.c.line).where(
                device_event_logs.c.instrument_id == iid, device_event_logs.c.seq == 2
            )
        ).scalar_one()
        conn.execute(
            update(device_event_logs)
            .where(device_event_logs.c.instrument_id == iid, device_event_logs.c.seq == 2)
            .values(line=line.replace('"value":2', '"value":3'))
        )


# -- acceptance ------------------------------------------------------------------------------


def test_a_lot_of_1000_yields_signed_results_in_the_ledger_and_tampering_fails(
    node: Node, world: World
) -> None:
    cert = world.certificate(world.nb1, world.man1)
    fleet = vf.register(world, cert, 994)
    old = world.certificate(world.nb1, world.man1)
    vf.register(world, old, 6, prefix="WD", fleet=fleet)
    vf.upload_logs(fleet)
    ids = fleet.ids
    assert len(ids) == 1000
    # one instrument per kind of tampering or fault, each with exactly one reason
    bad = {
        "seal-broken": ids[10],
        "device-tamper-detected": ids[20],
        "unapproved-software-reported": ids[30],
        "event-log-broken": ids[40],
        "reference-beyond-mpe": ids[50],
    }
    _seal_broken(fleet, bad["seal-broken"])
    _device_tamper(fleet, bad["device-tamper-detected"])
    _unapproved_software(fleet, bad["unapproved-software-reported"])
    _alter_stored_log(node, bad["event-log-broken"])
    in_mpe = ids[60]
    vf.reference_readings(node, {bad["reference-beyond-mpe"]: 0.06, in_mpe: 0.01})
    certs.change_certificate(
        node, world.nb1.actor, old["id"], CertificateAction.WITHDRAW, reason="type defect"
    )
    withdrawn = ids[994:]

    results = ver.evaluate(node, world.auth1.actor, ids)
    by_id = {r.instrument_id: r for r in results}
    assert [r.instrument_id for r in results] == ids
    for code, iid in bad.items():
        assert _codes(by_id[iid]) == [code], (code, by_id[iid].to_json())
        assert by_id[iid].outcome is ver.Outcome.FAIL and by_id[iid].verified_until is None
    for iid in withdrawn:
        assert _codes(by_id[iid]) == ["certificate-not-valid"]
        assert by_id[iid].checks[0].evidence["status"] == "withdrawn"
    failing = set(bad.values()) | set(withdrawn)
    today = node.now().date()
    for r in results:
        if r.instrument_id not in failing:
            assert r.passed and r.reasons == (), r.to_json()
            # MessEV Anlage 7: 8 years; § 34 (2): to the end of that calendar year
            assert r.verified_until == date(today.year + 8, 12, 31)
    # check 4 where the lake has reference readings, else not applicable
    assert by_id[in_mpe].checks[3].outcome is ver.Outcome.PASS
    assert by_id[in_mpe].checks[3].evidence["error_percent"] == pytest.approx(1.0)
    assert by_id[ids[0]].checks[3].outcome is ver.Outcome.NOT_APPLICABLE
    reason = by_id[bad["reference-beyond-mpe"]].reasons[0]
    assert "+6.000 %" in reason.message and "4 %" in reason.message

    signed = [ver.sign_result(r, world.auth1.key) for r in results]
    before = _tree_size(node)
    recorded = ver.record(node, world.auth1.actor, signed, {"credential": "cli"})
    assert _tree_size(node) == before + 1000
    assert [e["instrument_id"] for e in recorded] == ids
    authority = world.auth1.key.public_key
    with node.db.read() as conn:
        for e, result in zip(recorded, results, strict=True):
            entry = SignedStatement.from_bytes(node.log.entry(conn, e["leaf_index"]))
            entry.verify(lambda _k: node.key.public_key)
            payload = entry.statement.payload()
            assert payload["signer"] == world.auth1.id
            event = payload["body"]["event"]
            details = event["details"]
            carried = ver.SignedResult.from_json(
                {"result": details["result"], "signature": details["signature"]}
            )
            ver.verify_result(carried, authority)  # the authority's signature, in the ledger
            assert carried.result == result
            assert event["kind"] == ("verified" if result.passed else "verification_failed")
        rows = {
            r.id: r
            for r in conn.execute(
                select(instruments.c.id, instruments.c.verified_until, instruments.c.state)
            )
        }
    for iid in ids:
        if iid in failing:
            assert rows[iid].verified_until is None and rows[iid].state == "out_of_service"
        else:
            assert rows[iid].verified_until == date(today.year + 8, 12, 31)
            assert rows[iid].state == "in_service"
    # the failed event names its reason (the AAS Verification submodel shows it)
    page = ver.list_verifications(node, world.man1.actor, bad["seal-broken"])
    assert page.items[0]["outcome"] == "fail"
    assert "seal_broken" in page.items[0]["reason"]


# -- the checklist, one instrument at a time ---------------------------------------------------


@pytest.fixture
def small(world: World) -> vf.Fleet:
    fleet = vf.register(world, world.certificate(world.nb1, world.man1), 4)
    vf.upload_logs(fleet)
    return fleet


def test_a_missing_event_log_fails_check_3(node: Node, world: World, small: vf.Fleet) -> None:
    extra = vf.register(world, small.cert, 1, prefix="NOLOG", fleet=small)
    iid = extra.ids[-1]
    result = ver.evaluate(node, world.auth1.actor, [iid])[0]
    assert _codes(result) == ["event-log-missing"]


def test_software_not_approved_after_a_certificate_revision(
    node: Node, world: World, small: vf.Fleet
) -> None:
    """The notified body revises the certificate and drops the installed software version."""
    certs.change_certificate(
        node,
        world.nb1.actor,
        small.cert["id"],
        CertificateAction.REVISE,
        reason="1.1.0 withdrawn",
        changes={"software": [small.cert["software"][0]]},
    )
    result = ver.evaluate(node, world.auth1.actor, small.ids[:1])[0]
    assert _codes(result) == ["software-not-approved"]
    assert result.checks[1].evidence["approved_by_certificate"] is False


def test_only_findings_since_the_last_verification_count(
    node: Node, world: World, small: vf.Fleet
) -> None:
    """A seal broken before a failed verification does not fail the next one: the failed
    verification answered it; a new device tamper record does."""
    iid = small.ids[0]
    _seal_broken(small, iid)
    first = ver.evaluate(node, world.auth1.actor, [iid])[0]
    assert _codes(first) == ["seal-broken"]
    ver.record(node, world.auth1.actor, [ver.sign_result(first, world.auth1.key)])
    second = ver.evaluate(node, world.auth1.actor, [iid])[0]
    assert second.passed, second.to_json()
    assert second.checks[2].evidence["since"] == first.evaluated_at
    ver.record(node, world.auth1.actor, [ver.sign_result(second, world.auth1.key)])
    # the device log the previous verification examined is not looked at again
    _device_tamper(small, iid)
    third = ver.evaluate(node, world.auth1.actor, [iid])[0]
    assert _codes(third) == ["device-tamper-detected"]
    assert third.checks[2].evidence["device_log"]["examined_from_seq"] == 3


def test_every_failing_check_is_a_reason(node: Node, world: World, small: vf.Fleet) -> None:
    iid = small.ids[0]
    _seal_broken(small, iid)
    _device_tamper(small, iid)
    certs.change_certificate(
        node, world.nb1.actor, small.cert["id"], CertificateAction.SUSPEND, reason="audit"
    )
    result = ver.evaluate(node, world.auth1.actor, [iid])[0]
    assert _codes(result) == ["certificate-not-valid", "device-tamper-detected", "seal-broken"]
    assert [c.outcome for c in result.checks] == [
        ver.Outcome.FAIL,
        ver.Outcome.PASS,
        ver.Outcome.FAIL,
        ver.Outcome.NOT_APPLICABLE,
    ]


def test_evaluation_needs_an_authority_and_a_verifiable_state(
    node: Node, world: World, small: vf.Fleet
) -> None:
    with pytest.raises(Forbidden):
        ver.evaluate(node, world.man1.actor, small.ids)
    registered = world.instruments(world.man1, small.cert, 1, prefix="REG")[0]["id"]
    with pytest.raises(RuleViolation, match="registered"):
        ver.evaluate(node, world.auth1.actor, [small.ids[0], registered])
    with pytest.raises(InvalidInput, match="twice"):
        ver.evaluate(node, world.auth1.actor, [small.ids[0], small.ids[0]])


def test_a_configured_period_overrides_the_table(world: World, small: vf.Fleet) -> None:
    node = small.node
    node.settings = node.settings.model_copy(update={"verification_periods": {"MI-003": 16}})
    result = ver.evaluate(node, world.auth1.actor, small.ids[:1])[0]
    assert result.verified_until == date(node.now().year + 16, 12, 31)
    assert result.period == {"years": 16, "source": "node setting verification_periods"}


# -- recording: signatures, freshness, agreement -----------------------------------------------


def _results(fleet: vf.Fleet, n: int = 2) -> list[ver.VerificationResult]:
    return ver.evaluate(fleet.node, fleet.world.auth1.actor, fleet.ids[:n])


def test_a_forged_or_wrong_key_signature_is_refused_and_nothing_is_recorded(
    node: Node, world: World, small: vf.Fleet
) -> None:
    results = _results(small)
    before = _tree_size(node)
    # signed by another authority's key (auth2), presented as auth1's
    with pytest.raises(VerificationError, match="registered key"):
        ver.record(node, world.auth1.actor, [ver.sign_result(r, world.auth2.key) for r in results])
    # a fresh key nobody registered
    with pytest.raises(VerificationError):
        ver.record(
            node, world.auth1.actor, [ver.sign_result(r, PrivateKey.generate()) for r in results]
        )
    # the right key, but the signature was made over other bytes (a forged signature)
    good = [ver.sign_result(r, world.auth1.key) for r in results]
    forged = dataclasses.replace(
        good[1],
        signature=dataclasses.replace(good[1].signature, sig=good[0].signature.sig),
    )
    with pytest.raises(VerificationError, match=results[1].instrument_id):
        ver.record(node, world.auth1.actor, [good[0], forged])
    # a result changed after signing: "fail" made "pass" is caught by the signature
    worse = dataclasses.replace(results[0], outcome=ver.Outcome.FAIL, verified_until=None)
    tampered = dataclasses.replace(good[0], result=worse)
    with pytest.raises(VerificationError, match="altered"):
        ver.record(node, world.auth1.actor, [tampered])
    # another authority cannot record auth1's results, not even with auth1's signature
    with pytest.raises(Forbidden, match="own results"):
        ver.record(node, world.auth2.actor, good)
    assert _tree_size(node) == before
    # the genuine results go in
    ver.record(node, world.auth1.actor, good)
    assert _tree_size(node) == before + 2


def test_an_authority_cannot_pass_a_failing_instrument_without_saying_why(
    node: Node, world: World, small: vf.Fleet
) -> None:
    iid = small.ids[0]
    _seal_broken(small, iid)
    mine = ver.evaluate(node, world.auth1.actor, [iid])[0]
    passed = dataclasses.replace(
        mine,
        outcome=ver.Outcome.PASS,
        verified_until=node.now().date() + timedelta(days=365),
        period={"years": 1, "source": "on-site check"},
    )
    before = _tree_size(node)
    with pytest.raises(InvalidInput, match="override"):  # the result contradicts its checks
        ver.SignedResult.from_json(ver.sign_result(passed, world.auth1.key).to_json())
    with pytest.raises(Conflict, match="seal-broken"):
        ver.record(node, world.auth1.actor, [ver.sign_result(passed, world.auth1.key)])
    assert _tree_size(node) == before
    # with the reason stated (signed), it is recorded with the node's own verdict beside it
    why = "seal replaced on site by the authority on inspection; no manipulation found"
    overridden = dataclasses.replace(passed, override=why)
    out = ver.record(node, world.auth1.actor, [ver.sign_result(overridden, world.auth1.key)])
    assert out[0]["kind"] == "verified"
    item = ver.list_verifications(node, world.auth1.actor, iid).items[-1]
    assert item["override"] == why and item["result"]["override"] == why
    with node.db.read() as conn:
        details = node.log.entry(conn, out[0]["leaf_index"])
    assert b'"node_verdict"' in details and b'"seal-broken"' in details


def test_an_override_cannot_extend_the_period(node: Node, world: World, small: vf.Fleet) -> None:
    mine = _results(small, 1)[0]
    assert mine.verified_until is not None
    longer = dataclasses.replace(
        mine, verified_until=mine.verified_until + timedelta(days=366), override="trust me"
    )
    with pytest.raises(RuleViolation, match="holds until"):
        ver.record(node, world.auth1.actor, [ver.sign_result(longer, world.auth1.key)])


def test_a_result_is_recorded_once_and_not_after_newer_facts(
    node: Node, world: World, small: vf.Fleet
) -> None:
    results = _results(small)
    signed = [ver.sign_result(r, world.auth1.key) for r in results]
    ver.record(node, world.auth1.actor, signed[:1])
    with pytest.raises(Conflict, match="recorded already"):
        ver.record(node, world.auth1.actor, signed[:1])
    # a seal broken after the evaluation makes the second result stale
    _seal_broken(small, small.ids[1])
    with pytest.raises(Conflict, match="evaluate again"):
        ver.record(node, world.auth1.actor, signed[1:])


def test_a_stale_or_foreign_result_is_refused(node: Node, world: World, small: vf.Fleet) -> None:
    result = _results(small, 1)[0]
    later = node.now() + ver.MAX_RESULT_AGE + timedelta(minutes=1)
    node.clock = lambda: later
    with pytest.raises(Conflict, match="evaluate again"):
        ver.record(node, world.auth1.actor, [ver.sign_result(result, world.auth1.key)])
    other = dataclasses.replace(result, node_id="node-FR-0000000000000000")
    with pytest.raises(InvalidInput, match="not by this node"):
        ver.record(node, world.auth1.actor, [ver.sign_result(other, world.auth1.key)])


def test_an_authority_without_a_key_cannot_record(
    node: Node, world: World, small: vf.Fleet
) -> None:
    from metrocloud.domain.parties import PartyRole
    from metrocloud.services import parties as pty
    from metrocloud.services.common import Actor

    party, _ = pty.admit_party(node, None, name="Keyless authority", role=PartyRole.AUTHORITY)
    keyless = Actor(party_id=party["id"], role=PartyRole.AUTHORITY, country="DE")
    result = ver.evaluate(node, keyless, small.ids[:1])[0]
    with pytest.raises(Forbidden, match="no registered key"):
        ver.record(node, keyless, [ver.sign_result(result, PrivateKey.generate())])


def test_the_verification_history_is_read_like_the_instrument(
    node: Node, world: World, small: vf.Fleet
) -> None:
    result = _results(small, 1)[0]
    ver.record(node, world.auth1.actor, [ver.sign_result(result, world.auth1.key)])
    for reader in (world.man1, world.op1, world.auth2, world.nb1):
        items: list[dict[str, Any]] = list(
            ver.list_verifications(node, reader.actor, result.instrument_id).items
        )
        assert [i["outcome"] for i in items] == ["pass"]
        assert items[0]["verified_until"] == result.verified_until.isoformat()  # type: ignore[union-attr]
        assert items[0]["signature"]["key_id"] == world.auth1.key.key_id
    for outsider in (world.man2, world.op2, world.nb2):
        with pytest.raises(Forbidden):
            ver.list_verifications(node, outsider.actor, result.instrument_id)


def test_the_aas_verification_submodel_shows_the_recorded_result(
    node: Node, world: World, small: vf.Fleet
) -> None:
    from metrocloud.services import aas as aas_svc

    iid = small.ids[0]
    _seal_broken(small, iid)
    result = ver.evaluate(node, world.auth1.actor, [iid])[0]
    ver.record(node, world.auth1.actor, [ver.sign_result(result, world.auth1.key)])
    submodel = aas_svc.get_submodel(node, world.auth1.actor, iid, "Verification")
    last = next(e for e in submodel.submodel_elements or () if e.id_short == "LastVerification")
    values = {p.id_short: getattr(p, "value", None) for p in last.value or ()}  # type: ignore[attr-defined]
    assert values["Result"] == "failed"
    assert "seal_broken" in values["Reason"] and result.reasons[0].message in values["Reason"]
