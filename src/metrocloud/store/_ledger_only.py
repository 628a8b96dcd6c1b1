"""Projectors of ledger-only statements: facts the log holds and no registry table copies.

A lot decision (``lot.decided``) and the commitment to an inspection plan
(``inspection.planned``) are read from the log itself (``GET /api/v1/ledger/entries/{index}``
with an inclusion proof); there is no row to rebuild. Their projectors still run on every
append and every replay (``metrocloud audit``) and refuse a statement that does not hold
together: a signer without the role, a decision that does not follow from its own numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from metrocloud.domain.errors import RuleViolation
from metrocloud.store.schema import parties

__all__ = ["inspection_planned", "lot_decided"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAMPLING = "MID 2014/32/EU Annex II module F point 5 / ISO 2859-1 (acceptance number)"


def _role(conn: Connection, signer: str) -> str | None:
    return conn.execute(select(parties.c.role).where(parties.c.id == signer)).scalar_one_or_none()


def lot_decided(conn: Connection, p: Mapping[str, Any], leaf: int) -> None:
    """A lot decision by an authority or a notified body that follows from its numbers:
    as many results as the sample size n, the defects counted from them, accepted exactly
    when defects <= c."""
    role = _role(conn, p["signer"])
    if role not in ("authority", "notified_body"):
        raise RuleViolation(
            f"lot decision at leaf {leaf} signed by {p['signer']} ({role}); only an authority "
            "or a notified body decides on lots",
            rule=_SAMPLING,
        )
    body = p["body"]
    d, results = body["decision"], body["results"]
    n, c = int(d["n"]), int(d["c"])
    defects = sum(1 for r in results if not r["conforming"])
    expected = "accept" if defects <= c else "reject"
    if len(results) != n or int(d["defects"]) != defects or d["decision"] != expected:
        raise RuleViolation(
            f"lot decision at leaf {leaf} does not follow from its numbers: n={n}, c={c}, "
            f"{len(results)} results with {defects} non-conforming; expected {expected} with "
            f"{defects} defects, got {d['decision']} with {d['defects']}",
            rule=_SAMPLING,
        )


def inspection_planned(conn: Connection, p: Mapping[str, Any], leaf: int) -> None:
    """An authority's commitment to an inspection plan: the SHA-256 of the plan document."""
    role = _role(conn, p["signer"])
    plan = p["body"]["plan"]
    if role != "authority":
        raise RuleViolation(
            f"inspection plan at leaf {leaf} signed by {p['signer']} ({role}); only an "
            "authority plans inspections",
            rule="Regulation (EU) 2019/1020 Art. 11 (market surveillance activities)",
        )
    if not _HEX64.match(str(plan.get("digest", ""))) or int(plan["size"]) < 0:
        raise RuleViolation(
            f"inspection plan at leaf {leaf}: expected a hex SHA-256 digest and a size >= 0, "
            f"got {plan.get('digest')!r} and {plan.get('size')!r}",
            rule="docs/surveillance.md (plan commitment)",
        )
