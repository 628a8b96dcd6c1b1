"""The inspection plan's selection rule: K instruments for an authority's budget, pure.

Given the candidates' risks, a budget K and a seed:

1. ``size = min(K, candidates)``; ``audit = round(audit_share x size)`` places go to a random
   audit, the other ``size - audit`` to the risk ranking.
2. Risk ranking: instruments with a positive score, highest first; equal scores in an order
   drawn from the seed (SHA-256 of seed and id), never by id, which an operator could game.
   An instrument is deferred while its operator already holds ``ceil(operator_cap x size)``
   places, or its site (operator and NUTS region) ``ceil(site_cap x size)``: the budget is
   not spent on one operator or one site.
3. Places the capped pass leaves free go to the deferred instruments, in the same order
   (inspecting a risky instrument beats inspecting one without risk); places without any
   instrument of positive score left go to the audit.
4. Audit: drawn uniformly without replacement from the candidates not chosen yet
   (``random.Random`` seeded with the seed): every instrument on the market can be
   inspected, whatever its score, and the draws check the model.

Same candidates, same scores and same seed: the same plan. The seed is chosen at random by
the node unless the authority gives one; it stays with the authority (the ledger holds only
a digest of the plan), so an operator cannot predict the audit draws.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from metrocloud.domain.errors import InvalidInput
from metrocloud.services._surveillance.model import InstrumentRisk
from metrocloud.trust.canonical import canonical_json

__all__ = [
    "DEFAULT_RULE",
    "MAX_SEED",
    "PLAN_FORMAT",
    "PlanItem",
    "PlanRule",
    "choose",
    "plan_digest",
]

PLAN_FORMAT: Final = "metrocloud inspection plan v1"
MAX_SEED: Final = 2**53 - 1  # an I-JSON integer: the seed is in the canonical plan document


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanRule:
    """How the budget is spread (see the module doc)."""

    #: share of the budget drawn at random (audit)
    audit_share: float = 0.1
    #: most of the budget one operator's instruments may take in the risk ranking
    operator_cap: float = 0.5
    #: most of the budget one site (operator and NUTS region) may take
    site_cap: float = 0.25

    def __post_init__(self) -> None:
        if not (math.isfinite(self.audit_share) and 0 <= self.audit_share <= 1):
            raise InvalidInput(f"audit_share is a share from 0 to 1, got {self.audit_share}")
        for name in ("operator_cap", "site_cap"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise InvalidInput(f"{name} is a share above 0 and at most 1, got {value}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_RULE: Final = PlanRule()


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanItem:
    rank: int
    risk: InstrumentRisk
    selection: Literal["risk", "audit"]
    #: how it got in beyond its score (the cap relaxed, a random draw)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        reasons = self.risk.reasons()
        if self.selection == "audit":
            reasons = ["random audit draw", *reasons]
        return {
            "rank": self.rank,
            "selection": self.selection,
            "note": self.note,
            **self.risk.as_dict(),
            "reasons": reasons,
        }


def _tiebreak(seed: int, instrument: str) -> bytes:
    return hashlib.sha256(f"metrocloud-surveillance/{seed}/{instrument}".encode()).digest()


def choose(
    risks: Sequence[InstrumentRisk], *, budget: int, seed: int, rule: PlanRule = DEFAULT_RULE
) -> tuple[PlanItem, ...]:
    """The plan's instruments, ranked: the risk ranking first, then the audit draws."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInput(f"the budget is a number of inspections >= 1, got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"the seed is an integer from 0 to 2^53 - 1, got {seed!r}")
    size = min(budget, len(risks))
    audit = math.floor(rule.audit_share * size + 0.5)
    ranked = sorted(
        (r for r in risks if r.score > 0),
        key=lambda r: (-r.score, _tiebreak(seed, r.instrument_id)),
    )
    cap_operator = max(1, math.ceil(rule.operator_cap * size))
    cap_site = max(1, math.ceil(rule.site_cap * size))
    per_operator: Counter[str] = Counter()
    per_site: Counter[tuple[str, str]] = Counter()
    chosen: list[tuple[InstrumentRisk, str]] = []
    deferred: list[InstrumentRisk] = []
    for r in ranked:
        if len(chosen) >= size - audit:
            break
        site = r.facts.site
        if per_operator[site[0]] >= cap_operator or per_site[site] >= cap_site:
            deferred.append(r)
            continue
        per_operator[site[0]] += 1
        per_site[site] += 1
        chosen.append((r, ""))
    for r in deferred:
        if len(chosen) >= size - audit:
            break
        chosen.append((r, "operator or site cap relaxed: no other instrument with risk left"))
    taken = {r.instrument_id for r, _ in chosen}
    pool = sorted((r for r in risks if r.instrument_id not in taken), key=lambda r: r.instrument_id)
    draws = random.Random(f"metrocloud-surveillance/audit/{seed}").sample(
        pool, min(len(pool), size - len(chosen))
    )
    items = [
        PlanItem(rank=k + 1, risk=r, selection="risk", note=n) for k, (r, n) in enumerate(chosen)
    ]
    items += [
        PlanItem(rank=len(items) + k + 1, risk=r, selection="audit", note="random audit draw")
        for k, r in enumerate(draws)
    ]
    return tuple(items)


def plan_digest(document: dict[str, Any]) -> str:
    """Hex SHA-256 of the plan document's RFC 8785 canonical JSON: what the ledger holds."""
    return hashlib.sha256(canonical_json(document)).hexdigest()
