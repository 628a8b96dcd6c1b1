"""Federated statistics: aggregates from every node, no raw record leaves its node.

Each node answers the query ``statistics`` with counts per group over the instruments homed
on it, and suppresses every group smaller than its own minimum group size (setting
``grid_min_group_size``, which no asking node can lower). The asking node adds the counts of
all nodes per group and computes the rates. What crossed is in both nodes' traffic record
(``grid_traffic``): group keys and counts only.

Statistics:

* ``non-compliance-rate`` - instruments with at least one ``non_compliance_found`` event,
  per ``type`` (the EU-type examination certificate, grid-wide ids) or ``category``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import case, exists, func, select

from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.errors import PeerRefused, PeerUnavailable
from metrocloud.grid.peers import Peer, peers
from metrocloud.services._federation_core import call_peer, on_query
from metrocloud.services._federation_lookup import caller_of, remote_actor
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, events, instruments

__all__ = ["GROUPINGS", "STATISTICS", "federated_statistic", "local_statistic"]

STATISTICS_QUERY = "statistics"
STATISTICS: Final = ("non-compliance-rate",)
GROUPINGS: Final = ("type", "category")
_ASKERS = (PartyRole.AUTHORITY, PartyRole.NOTIFIED_BODY)


def _check(statistic: str, by: str) -> None:
    if statistic not in STATISTICS:
        raise InvalidInput(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
    if by not in GROUPINGS:
        raise InvalidInput(f"a statistic is grouped by one of {', '.join(GROUPINGS)}, got {by!r}")


def local_statistic(node: Node, statistic: str, by: str) -> dict[str, Any]:
    """This node's part: counts per group, groups below the minimum size suppressed."""
    _check(statistic, by)
    key = instruments.c.certificate_id if by == "type" else instruments.c.category
    flagged = exists(
        select(events.c.id).where(
            events.c.instrument_id == instruments.c.id, events.c.kind == "non_compliance_found"
        )
    )
    q = (
        select(key.label("key"), func.count().label("n"), func.sum(case((flagged, 1), else_=0)))
        .group_by(key)
        .order_by(key)
    )
    minimum = node.settings.grid_min_group_size
    groups, suppressed = [], 0
    with node.db.read() as conn:
        for k, n, bad in conn.execute(q):
            if n < minimum:
                suppressed += 1
                continue
            groups.append({"key": k, "instruments": int(n), "non_compliant": int(bad or 0)})
    return {
        "statistic": statistic,
        "by": by,
        "node_id": node.node_id,
        "country": node.country,
        "min_group_size": minimum,
        "groups": groups,
        "suppressed_groups": suppressed,
    }


def _answer_statistics(node: Node, sender: Peer, args: Mapping[str, Any]) -> dict[str, Any]:
    actor = remote_actor(node, sender, args.get("caller"))
    require_role(actor, *_ASKERS, action="ask for federated statistics")
    return local_statistic(node, str(args.get("statistic")), str(args.get("by")))


on_query(STATISTICS_QUERY, _answer_statistics)


def _checked(part: Any, peer: Peer, statistic: str, by: str) -> dict[str, Any]:
    """A peer's part, if it is what was asked for: aggregates of the right shape only."""
    ok = (
        isinstance(part, dict)
        and part.get("statistic") == statistic
        and part.get("by") == by
        and part.get("node_id") == peer.node_id
        and isinstance(part.get("groups"), list)
        and isinstance(part.get("suppressed_groups"), int)
        and isinstance(part.get("min_group_size"), int)
        and all(
            isinstance(g, dict)
            and set(g) == {"key", "instruments", "non_compliant"}
            and isinstance(g["key"], str)
            and isinstance(g["instruments"], int)
            and isinstance(g["non_compliant"], int)
            and 0 <= g["non_compliant"] <= g["instruments"]
            for g in part["groups"]
        )
    )
    if not ok:
        raise InvalidInput(f"node {peer.node_id} answered the statistic with something else")
    return dict(part)


def federated_statistic(node: Node, actor: Actor, statistic: str, by: str) -> dict[str, Any]:
    """The statistic over every node of the grid, combined from their aggregates."""
    require_role(actor, *_ASKERS, action="ask for federated statistics")
    _check(statistic, by)
    parts = [local_statistic(node, statistic, by)]
    nodes = [{"node_id": node.node_id, "country": node.country, "status": "ok"}]
    with node.db.read() as conn:
        targets = peers(conn)
    for p in targets:
        args = {"statistic": statistic, "by": by, "caller": caller_of(actor)}
        try:
            parts.append(_checked(call_peer(node, p, STATISTICS_QUERY, args), p, statistic, by))
            nodes.append({"node_id": p.node_id, "country": p.country, "status": "ok"})
        except (PeerUnavailable, PeerRefused, InvalidInput) as exc:
            nodes.append(
                {
                    "node_id": p.node_id,
                    "country": p.country,
                    "status": "unavailable",
                    "detail": str(exc)[:300],
                }
            )
    totals: dict[str, dict[str, Any]] = {}
    for part, info in zip(parts, [n for n in nodes if n["status"] == "ok"], strict=True):
        info["suppressed_groups"] = part["suppressed_groups"]
        info["min_group_size"] = part["min_group_size"]
        for g in part["groups"]:
            t = totals.setdefault(
                g["key"], {"key": g["key"], "instruments": 0, "non_compliant": 0, "nodes": 0}
            )
            t["instruments"] += int(g["instruments"])
            t["non_compliant"] += int(g["non_compliant"])
            t["nodes"] += 1
    labels: dict[str, str] = {}
    if by == "type" and totals:
        with node.db.read() as conn:
            labels = dict(
                conn.execute(
                    select(certificates.c.id, certificates.c.model).where(
                        certificates.c.id.in_(list(totals))
                    )
                ).all()
            )
    groups = []
    for k in sorted(totals):
        t = totals[k]
        t["rate"] = t["non_compliant"] / t["instruments"] if t["instruments"] else 0.0
        if by == "type":
            t["label"] = labels.get(k)
        groups.append(t)
    return {
        "statistic": statistic,
        "by": by,
        "groups": groups,
        "nodes": nodes,
        "complete": all(n["status"] == "ok" for n in nodes),
    }
