"""Remote verification of one instrument or a lot: evaluate, sign (at the authority), record.

:func:`evaluate` (authority only) runs the checklist on each instrument at one time ``at``:

1. ``certificate``: its EU-type examination certificate is valid at the time;
2. ``software``: the installed software identification is approved by that certificate,
   and the intake flagged no unapproved software since the last verification;
3. ``event-log``: the device event log uploaded to the node is present, its hash chain and
   signatures verify against the registered device key, and neither it nor the life-cycle
   events show a broken seal or tampering since the last verification;
4. ``reference-readings``: where the lake holds reference readings of the instrument in the
   window before ``at``, the register's error lies within the in-service MPE.

The result passes only if no check fails; it lists every finding of every failing check.
A pass holds until the end of the category's re-verification period
(:mod:`metrocloud.services._verification_periods`).

The authority signs each result with its own key, where the key is (the CLI does it
locally): :func:`sign_result`. :func:`record` then checks, for the whole lot, in this order:

1. every result names this node and the recording authority;
2. its signature verifies against the authority's key registered at the node;
3. it is fresh: evaluated at most :data:`MAX_RESULT_AGE` ago, not in the future, and no
   life-cycle event of the instrument occurred at or after its evaluation time (a newer
   fact, or the same result recorded before);
4. the node's own evaluation at the same time reaches the same verdict (outcome, verified
   until, each check's outcome and finding codes). A different verdict is refused unless the
   authority says why in the signed result's ``override``; the recorded event then carries
   the node's own verdict beside the authority's;

and appends, in one transaction, one ``verified`` (with ``verified_until``) or
``verification_failed`` life-cycle event per instrument whose details hold the signed
result and the signature, so "verified until" follows through the projection and the
ledger holds what the authority signed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import case, func, select

from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, RuleViolation
from metrocloud.domain.instruments import EVENT_RULES, EventKind, LifeCycleState
from metrocloud.domain.parties import PartyRole
from metrocloud.lake.engine import LakeEngine
from metrocloud.services import _verification_checks as checks
from metrocloud.services._verification_periods import (
    DEFAULT_PERIODS,
    PERIODS,
    Period,
    period_for,
    verified_until,
)
from metrocloud.services._verification_result import (
    CHECK_NAMES,
    RESULT_DOMAIN,
    RESULT_FORMAT,
    Check,
    Finding,
    Outcome,
    SignedResult,
    VerificationResult,
    sign_result,
    verify_result,
)
from metrocloud.services.common import Actor, Keyset, Page, log_reads, require_role
from metrocloud.services.events import EventDraft, record_events
from metrocloud.services.instruments import instrument_row
from metrocloud.services.monitoring import DailyError, reference_errors
from metrocloud.services.node import Node
from metrocloud.services.visibility import check_can_read
from metrocloud.store.schema import events, parties
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import parse_utc_timestamp, utc_timestamp

__all__ = [
    "CHECK_NAMES",
    "DEFAULT_PERIODS",
    "MAX_RESULT_AGE",
    "PERIODS",
    "REFERENCE_WINDOW",
    "RESULT_DOMAIN",
    "RESULT_FORMAT",
    "Check",
    "Finding",
    "Outcome",
    "Period",
    "SignedResult",
    "VerificationResult",
    "evaluate",
    "list_verifications",
    "period_for",
    "record",
    "sign_result",
    "verify_result",
]

#: the window before the evaluation time whose reference readings check 4 weighs
REFERENCE_WINDOW: Final = timedelta(days=14)
#: a signed result older than this is refused at recording: evaluate again
MAX_RESULT_AGE: Final = timedelta(hours=24)
_MAX_FUTURE: Final = timedelta(minutes=5)
_VERIFIABLE: Final = EVENT_RULES[EventKind.VERIFIED].from_states
_RULE = "metrocloud remote verification (docs/verification.md)"


def _evaluation_time(node: Node, at: datetime | None) -> datetime:
    if at is None:
        at = node.now()
    if at.tzinfo is None:
        raise InvalidInput("the evaluation time needs a timezone (RFC 3339, e.g. ...Z)")
    if at > node.now() + _MAX_FUTURE:
        raise InvalidInput(
            f"the evaluation time {utc_timestamp(at)} is in the future (node time "
            f"{node.timestamp()}); an instrument is verified on what is known"
        )
    # the millisecond the result states: evaluating at it again gives the same verdict
    return parse_utc_timestamp(utc_timestamp(at), what="evaluation time")


def _ids(node: Node, instrument_ids: Sequence[str]) -> list[str]:
    ids = list(instrument_ids)
    if not ids:
        raise InvalidInput("name at least one instrument to verify")
    if len(ids) > node.settings.max_batch:
        raise InvalidInput(
            f"a lot holds at most {node.settings.max_batch} instruments, got {len(ids)}"
        )
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InvalidInput(f"instrument {i} appears twice in the lot")
        seen.add(i)
    return ids


def _open_engine(node: Node) -> LakeEngine | None:
    from metrocloud.lake import DuckDBEngine, Lake
    from metrocloud.lake.manifest import MANIFEST_NAME

    root = node.settings.lake_path()
    if not (root / MANIFEST_NAME).exists():  # no reading has arrived yet
        return None
    return DuckDBEngine(Lake.open(root).snapshot(), memory_limit="512MiB", threads=1)


def _reference(
    node: Node,
    engine: LakeEngine | None,
    ids: Sequence[str],
    window: tuple[datetime, datetime],
) -> dict[str, list[DailyError]]:
    """Reference errors of the lot's instruments in the window: one lake read for the lot."""
    if engine is not None:
        found = reference_errors(engine, window[0], window[1])
    else:
        own = _open_engine(node)
        if own is None:
            return {}
        try:
            found = reference_errors(own, window[0], window[1])
        finally:
            own.close()
    wanted = set(ids)
    return {i: e for i, e in found.items() if i in wanted}


def _evaluate_one(
    node: Node,
    actor: Actor,
    s: checks.Subject,
    errors: Sequence[DailyError],
    at: datetime,
    window: tuple[datetime, datetime],
) -> VerificationResult:
    last = checks.last_verification(s)
    since = last.occurred_at if last is not None else None
    ran = (
        checks.check_certificate(s, at),  # (1)
        checks.check_software(s, since),  # (2)
        checks.check_event_log(s, since, checks.examined_records(last)),  # (3)
        checks.check_reference(s, errors, node.country, window),  # (4)
    )
    passed = not any(c.outcome is Outcome.FAIL for c in ran)
    period = period_for(node.country, s.row.category, node.settings.verification_periods)
    return VerificationResult(
        node_id=node.node_id,
        instrument_id=s.row.id,
        serial=s.row.serial,
        category=s.row.category,
        authority_id=actor.party_id,
        evaluated_at=utc_timestamp(at),
        outcome=Outcome.PASS if passed else Outcome.FAIL,
        verified_until=verified_until(node.country, at.date(), period) if passed else None,
        period={"years": period.years, "source": period.source} if passed else None,
        checks=ran,
    )


def _run(
    node: Node,
    actor: Actor,
    ids: Sequence[str],
    at: datetime,
    engine: LakeEngine | None,
    window: timedelta,
    *,
    log: bool,
) -> list[VerificationResult]:
    at_text = utc_timestamp(at)
    with node.db.read() as conn:
        subjects = checks.load_lot(conn, ids, at_text)
    stuck = [s.row for s in subjects.values() if LifeCycleState(s.row.state) not in _VERIFIABLE]
    if stuck:
        allowed = ", ".join(sorted(_VERIFIABLE))
        raise RuleViolation(
            f"{len(stuck)} instrument(s) cannot be verified in their state, e.g. "
            f"{stuck[0].id} is {stuck[0].state}; verification is recorded only from "
            f"{allowed}",
            rule=EVENT_RULES[EventKind.VERIFIED].rule,
        )
    if log:
        with node.db.write() as conn:
            log_reads(
                conn,
                actor,
                node.timestamp(),
                "verification.evaluate",
                "instrument",
                [(s.row.id, (s.row.manufacturer_id, s.row.operator_id)) for s in subjects.values()],
            )
    span = (at - window, at)
    errors = _reference(node, engine, ids, span)
    return [_evaluate_one(node, actor, subjects[i], errors.get(i, ()), at, span) for i in ids]


def evaluate(
    node: Node,
    actor: Actor,
    instrument_ids: Sequence[str],
    *,
    at: datetime | None = None,
    engine: LakeEngine | None = None,
    window: timedelta = REFERENCE_WINDOW,
) -> list[VerificationResult]:
    """Run the checklist (module docstring) on each instrument at ``at`` (default now).

    One lake read and a few batched registry queries per 500 instruments serve the whole
    lot. ``engine`` is the lake engine to read reference readings through (default: DuckDB
    over the node's lake). The reads land in the owners' access log."""
    require_role(actor, PartyRole.AUTHORITY, action="verify instruments")
    ids = _ids(node, instrument_ids)
    return _run(node, actor, ids, _evaluation_time(node, at), engine, window, log=True)


# -- recording -------------------------------------------------------------------------------


def _authority_key(node: Node, actor: Actor) -> PublicKey:
    with node.db.read() as conn:
        row = conn.execute(
            select(parties.c.public_key, parties.c.role).where(parties.c.id == actor.party_id)
        ).first()
    if row is None or row.public_key is None:
        raise Forbidden(
            f"authority {actor.party_id} has no registered key: a verification result must "
            "be signed by the authority, and the node checks it against the registered key",
            rule=_RULE,
        )
    return PublicKey.from_spki_b64(row.public_key)


def _check_fresh(node: Node, signed: Sequence[SignedResult]) -> dict[str, datetime]:
    now = node.now()
    times: dict[str, datetime] = {}
    for s in signed:
        at = parse_utc_timestamp(s.result.evaluated_at, what="evaluated_at")
        if at > now + _MAX_FUTURE:
            raise InvalidInput(
                f"result for {s.result.instrument_id} is evaluated at {s.result.evaluated_at}, "
                f"in the future (node time {node.timestamp()})",
                rule=_RULE,
            )
        if now - at > MAX_RESULT_AGE:
            raise Conflict(
                f"result for {s.result.instrument_id} was evaluated at "
                f"{s.result.evaluated_at}, more than {MAX_RESULT_AGE} ago: evaluate again",
                rule=_RULE,
            )
        times[s.result.instrument_id] = at
    ids = list(times)
    e = events.c
    kinds = (EventKind.VERIFIED.value, EventKind.VERIFICATION_FAILED.value)
    with node.db.read() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for iid, verified, newest in conn.execute(
                select(
                    e.instrument_id,
                    func.max(case((e.kind.in_(kinds), e.occurred_at))),
                    func.max(e.occurred_at),
                )
                .where(e.instrument_id.in_(chunk))
                .group_by(e.instrument_id)
            ):
                result_at = utc_timestamp(times[iid])
                # an event at the evaluation time itself was evaluated; a verification
                # at that time is this result, recorded already
                if (verified is not None and verified >= result_at) or newest > result_at:
                    raise Conflict(
                        f"instrument {iid} has a life-cycle event at "
                        f"{max(newest, verified or newest)}, after the evaluation at "
                        f"{result_at} (a newer fact, or this result was recorded already): "
                        "evaluate again",
                        rule=_RULE,
                    )
    return times


def _compare(
    theirs: VerificationResult,
    mine: VerificationResult,
    country: str,
    overrides: Mapping[str, int],
) -> None:
    agree = theirs.verdict() == mine.verdict()
    if agree and theirs.override is not None:
        raise InvalidInput(
            f"result for {theirs.instrument_id} carries an override, but the node's own "
            "evaluation reaches the same verdict: drop the override",
            rule=_RULE,
        )
    if not agree and theirs.override is None:
        got = ", ".join(f.code for f in mine.reasons) or "no finding"
        raise Conflict(
            f"result for {theirs.instrument_id} says {theirs.outcome.value}"
            f"{' until ' + str(theirs.verified_until) if theirs.verified_until else ''}, but "
            f"the node's evaluation at {theirs.evaluated_at} says {mine.outcome.value} "
            f"({got}); record the node's result, or give the reason for deciding otherwise "
            "in the signed result's override",
            rule=_RULE,
        )
    if theirs.verified_until is not None:
        at = parse_utc_timestamp(theirs.evaluated_at, what="evaluated_at")
        period = period_for(country, theirs.category, overrides)
        bound = verified_until(country, at.date(), period)
        if not at.date() <= theirs.verified_until <= bound:
            raise RuleViolation(
                f"result for {theirs.instrument_id} is verified until "
                f"{theirs.verified_until}; a verification on {at.date()} holds until {bound} "
                "at most",
                rule=period.source,
            )


def _details(signed: SignedResult, mine: VerificationResult) -> dict[str, Any]:
    r = signed.result
    wire = signed.to_json()
    details: dict[str, Any] = {"result": wire["result"], "signature": wire["signature"]}
    if r.passed:
        details["verified_until"] = r.verified_until.isoformat()  # type: ignore[union-attr]
    else:
        details["reason"] = "; ".join(f.message for f in r.reasons) or str(r.override)
    if r.override is not None:
        details["override"] = r.override
        details["node_verdict"] = mine.verdict()
    return details


def record(
    node: Node,
    actor: Actor,
    signed_results: Sequence[SignedResult],
    extra: Mapping[str, Any] | None = None,
    *,
    engine: LakeEngine | None = None,
    window: timedelta = REFERENCE_WINDOW,
) -> list[dict[str, Any]]:
    """Check the signed results (module docstring) and append one life-cycle event per
    instrument, all in one transaction. Returns the recorded events (id, instrument_id,
    kind, occurred_at, state_after, leaf_index)."""
    require_role(actor, PartyRole.AUTHORITY, action="record verification results")
    ids = _ids(node, [s.result.instrument_id for s in signed_results])
    # (1): this node, this authority
    for s in signed_results:
        if s.result.authority_id != actor.party_id:
            raise Forbidden(
                f"result for {s.result.instrument_id} is by {s.result.authority_id}; an "
                f"authority records its own results only (this is {actor.party_id})",
                rule=_RULE,
            )
        if s.result.node_id != node.node_id:
            raise InvalidInput(
                f"result for {s.result.instrument_id} was evaluated by {s.result.node_id}, "
                f"not by this node ({node.node_id})",
                rule=_RULE,
            )
    # (2): the authority's signature
    key = _authority_key(node, actor)
    for s in signed_results:
        verify_result(s, key)
    # (3): fresh
    times = _check_fresh(node, signed_results)
    # (4): the node's own evaluation, one batch per evaluation time
    by_time: dict[datetime, list[str]] = defaultdict(list)
    for iid in ids:
        by_time[times[iid]].append(iid)
    mine: dict[str, VerificationResult] = {}
    for at, group in by_time.items():
        for r in _run(node, actor, group, at, engine, window, log=False):
            mine[r.instrument_id] = r
    drafts = []
    for s in signed_results:
        own = mine[s.result.instrument_id]
        _compare(s.result, own, node.country, node.settings.verification_periods)
        drafts.append(
            EventDraft(
                instrument_id=s.result.instrument_id,
                kind=EventKind.VERIFIED if s.result.passed else EventKind.VERIFICATION_FAILED,
                occurred_at=times[s.result.instrument_id].astimezone(UTC),
                details=_details(s, own),
            )
        )
    return record_events(node, actor, drafts, dict(extra or {}))


# -- reading ---------------------------------------------------------------------------------


def _verification_out(r: Any) -> dict[str, Any]:
    d = r.details or {}
    result = d.get("result") if isinstance(d.get("result"), dict) else None
    return {
        "event_id": r.id,
        "seq": r.seq,
        "kind": r.kind,
        "outcome": "pass" if r.kind == EventKind.VERIFIED.value else "fail",
        "occurred_at": r.occurred_at,
        "recorded_by": r.recorded_by,
        "verified_until": d.get("verified_until"),
        "reason": d.get("reason"),
        "override": d.get("override"),
        "result": result,
        "signature": d.get("signature"),
        "leaf_index": r.leaf_index,
    }


def list_verifications(
    node: Node, actor: Actor, instrument_id: str, *, limit: int = 100, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """The instrument's verification events (verified and verification_failed), oldest
    first, with the signed results they carry; for whoever may read the instrument."""
    keyset = Keyset(events.c.seq, int)
    q = keyset.apply(
        select(events).where(
            events.c.instrument_id == instrument_id,
            events.c.kind.in_((EventKind.VERIFIED.value, EventKind.VERIFICATION_FAILED.value)),
        ),
        limit,
        cursor,
    )
    with node.db.write() as conn:
        row = instrument_row(conn, instrument_id)
        by_grant = check_can_read(conn, actor, row)
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "verifications.read",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
            via_grant=[row.id] if by_grant else (),
        )
    return Page([_verification_out(r) for r in rows], nxt)
