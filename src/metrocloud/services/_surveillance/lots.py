"""Lot decisions: a sampling plan and the inspected sample's results in, accept or reject out.

:func:`lot_decision` is pure and checks, in order:

1. the sample holds exactly the plan's n instruments (the plan fixes n before the draw);
2. no instrument is in the sample twice;
3. the lot is accepted when at most c of them do not conform, rejected with c + 1 or more
   (:func:`metrocloud.domain.sampling.decide`).

:func:`record_lot_decision` also checks the instruments against the registry (every one
registered; one type, since a lot under MID module F is homogeneous; a notified body decides
only on lots of types it certified) and records the decision as the signed statement
``lot.decided``: a ledger-only fact (no registry table), whose projector re-checks the
arithmetic on every replay (``metrocloud audit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select

from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.sampling import (
    Decision,
    SamplingPlan,
    Scheme,
    decide,
    iso2859_plan,
    mid_f_plan,
)
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, instruments

__all__ = [
    "HOMOGENEOUS_RULE",
    "LOT_KIND",
    "InspectionResult",
    "LotDecision",
    "lot_decision",
    "record_lot_decision",
    "sampling_plan",
]

LOT_KIND: Final = "lot.decided"
#: MID module F point 5 (statistical verification): homogeneous lots, a random sample,
#: an accepted lot approved but for the sample's failures, a rejected lot kept off the market
_MODULE_F: Final = "MID 2014/32/EU Annex II module F point 5 / module F1 point 6"
HOMOGENEOUS_RULE: Final = f"{_MODULE_F} (homogeneous lots)"
_MAX_SAMPLE = 10_000


@dataclass(frozen=True, kw_only=True, slots=True)
class InspectionResult:
    """One inspected instrument of the sample: conforming or not, and what was found."""

    instrument_id: str
    conforming: bool
    finding: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"instrument_id": self.instrument_id, "conforming": self.conforming}
        if self.finding:
            out["finding"] = self.finding
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class LotDecision:
    plan: SamplingPlan
    inspected: int
    nonconforming: tuple[str, ...]
    decision: Decision
    rule: str
    consequence: str

    @property
    def defects(self) -> int:
        return len(self.nonconforming)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "scheme": self.plan.scheme.value,
            "lot_size": self.plan.lot_size,
            "n": self.plan.n,
            "c": self.plan.c,
            "re": self.plan.re,
            "aql": str(self.plan.aql) if self.plan.aql is not None else None,
            "inspected": self.inspected,
            "defects": self.defects,
            "nonconforming": list(self.nonconforming),
            "rule": self.rule,
            "consequence": self.consequence,
        }


def _consequence(plan: SamplingPlan, decision: Decision, defects: int) -> str:
    if plan.scheme is Scheme.MID_F:
        if decision is Decision.ACCEPT:
            return (
                f"lot accepted: its instruments are approved, except the {defects} "
                f"non-conforming instrument(s) of the sample ({_MODULE_F})"
            )
        return (
            "lot rejected: it must not be placed on the market; frequent rejections allow the "
            f"notified body to suspend the statistical verification ({_MODULE_F})"
        )
    if decision is Decision.ACCEPT:
        return f"lot accepted: {defects} non-conforming <= Ac {plan.c} (ISO 2859-1)"
    return f"lot rejected: {defects} non-conforming >= Re {plan.re} (ISO 2859-1)"


def sampling_plan(scheme: str, lot_size: int, aql: str | None = None) -> SamplingPlan:
    """The plan a lot was sampled by: ``mid-f`` (MID modules F/F1, no AQL) or ``iso2859``
    (ISO 2859-1, with the AQL). Computed here, never taken from the caller."""
    if scheme == Scheme.MID_F:
        if aql is not None:
            raise InvalidInput(f"an AQL applies to the iso2859 scheme only, got aql={aql!r}")
        return mid_f_plan(lot_size)
    if scheme == Scheme.ISO2859:
        if aql is None:
            raise InvalidInput("the iso2859 scheme needs the AQL (0.65, 1.0, 1.5, 2.5, 4.0, 6.5)")
        return iso2859_plan(lot_size, aql)
    raise InvalidInput(f"scheme must be mid-f or iso2859, got {scheme!r}")


def lot_decision(plan: SamplingPlan, results: Sequence[InspectionResult]) -> LotDecision:
    """Accept or reject the lot from the inspected sample (see the module doc)."""
    # (1): exactly the plan's sample
    if len(results) != plan.n:
        raise InvalidInput(
            f"the plan inspects a sample of n = {plan.n} instruments, got results for "
            f"{len(results)} [{plan.rule}]",
            rule=plan.rule,
        )
    # (2): each sampled instrument once
    seen: set[str] = set()
    for r in results:
        if r.instrument_id in seen:
            raise InvalidInput(
                f"instrument {r.instrument_id} is in the sample twice; a sample is drawn "
                f"without replacement [{plan.rule}]",
                rule=plan.rule,
            )
        seen.add(r.instrument_id)
    # (3): accept with at most c non-conforming
    bad = tuple(r.instrument_id for r in results if not r.conforming)
    decision = decide(plan, len(bad))
    rule = plan.rule if plan.scheme is Scheme.ISO2859 else f"{plan.rule}; {_MODULE_F}"
    return LotDecision(
        plan=plan,
        inspected=len(results),
        nonconforming=bad,
        decision=decision,
        rule=rule,
        consequence=_consequence(plan, decision, len(bad)),
    )


def record_lot_decision(
    node: Node,
    actor: Actor,
    *,
    reference: str,
    plan: SamplingPlan,
    results: Sequence[InspectionResult],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decide and record the decision as the signed statement ``lot.decided``."""
    require_role(actor, PartyRole.AUTHORITY, PartyRole.NOTIFIED_BODY, action="decide on a lot")
    if not reference.strip() or len(reference) > 200:
        raise InvalidInput(f"a lot reference has 1 to 200 characters, got {reference!r}")
    if len(results) > _MAX_SAMPLE:
        raise InvalidInput(f"at most {_MAX_SAMPLE} results at once, got {len(results)}")
    decided = lot_decision(plan, results)
    ids = sorted({r.instrument_id for r in results})
    with node.db.write() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                select(
                    instruments.c.id, instruments.c.certificate_id, certificates.c.notified_body_id
                )
                .join(certificates, certificates.c.id == instruments.c.certificate_id)
                .where(instruments.c.id.in_(ids))
            )
        }
        missing = [i for i in ids if i not in rows]
        if missing:
            raise NotFound(f"instrument {missing[0]} does not exist ({len(missing)} unknown)")
        types = sorted({r.certificate_id for r in rows.values()})
        if len(types) != 1:
            raise InvalidInput(
                f"a lot is of one type: expected one certificate, the sample spans {types} "
                f"[{HOMOGENEOUS_RULE}]",
                rule=HOMOGENEOUS_RULE,
            )
        nb = next(iter(rows.values())).notified_body_id
        if actor.role is PartyRole.NOTIFIED_BODY and nb != actor.party_id:
            raise Forbidden(
                f"{actor.party_id} did not issue certificate {types[0]}: a notified body "
                "decides only on lots of the types it certified",
                rule=_MODULE_F,
            )
        body = {
            "lot": {"reference": reference, "certificate_id": types[0], "lot_size": plan.lot_size},
            "plan": {**plan.as_dict(), "rule": plan.rule},
            "results": [r.as_dict() for r in results],
            "decision": decided.as_dict(),
        }
        rec = node.commit(
            conn, [node.statement(kind=LOT_KIND, signer=actor.party_id, body=body, extra=extra)]
        )
    return {
        **decided.as_dict(),
        "reference": reference,
        "certificate_id": types[0],
        "decided_by": actor.party_id,
        "leaf_index": rec.leaf_indexes[0],
    }
