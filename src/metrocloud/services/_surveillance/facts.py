"""The registry's facts about a fleet for the risk model, in set-based queries.

Nothing here asks the database once per instrument. The facts of the candidates are four
grouped queries over the instruments selected by one WHERE clause (the instrument rows with
their certificates; their life-cycle events, intake flags and quarantined batches counted
per instrument and kind), and the fleet context is a handful of GROUP BY queries whose
answers are one row per type, per operator or per failed instrument. The kinds asked for
are ranges of the index ``ix_events_kind_instrument_id`` (migration 0005).

Registry alerts: what the registry alone says about an instrument, in the monitoring
vocabulary (:class:`~metrocloud.services.monitoring.Alert`), at the *latest* evidence (the
risk model weighs recent alerts more):

- ``seal_broken``, ``tamper_detected``, ``verification_failed`` (critical): life-cycle events;
- ``unapproved_software`` (critical): intake flags and quarantined batches;
- ``intake_quarantine`` (warning): batches quarantined for any other reason;
- ``counter_gap`` (warning): the intake saw batch counters skipped (batches lost).

Alerts from the lake (:func:`monitoring.detect`) are merged in: one alert per instrument and
kind, the later one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, true

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.instruments import validate_nuts
from metrocloud.services._surveillance.model import (
    CertificateFacts,
    FleetContext,
    InstrumentFacts,
    OperatorStats,
    TypeStats,
)
from metrocloud.services.monitoring import Alert
from metrocloud.store.schema import certificates, events, instruments, intake_flags, quarantine

__all__ = [
    "FINDINGS",
    "ON_MARKET",
    "candidates",
    "load_context",
    "load_facts",
    "merge_alerts",
    "registered_at",
]

#: the states of an instrument on the market (what market surveillance inspects)
ON_MARKET: Final = ("placed_on_market", "in_service", "out_of_service")
_UNAPPROVED: Final = "unapproved-software"
_GAP: Final = "counter-gap"
#: life-cycle events that are critical alerts
_ALERT_EVENTS: Final = ("seal_broken", "tamper_detected", "verification_failed")
#: events after which the verification no longer holds (projection sets verified_until NULL)
_ALERT_KEYS: Final = frozenset(_ALERT_EVENTS)
_VOIDING: Final = (
    "verification_failed",
    "seal_broken",
    "repaired",
    "tamper_detected",
    "software_updated",
)
_NON_COMPLIANCE: Final = "non_compliance_found"
#: the operator's history: non-compliance, tamper and broken-seal events
FINDINGS: Final = (_NON_COMPLIANCE, "tamper_detected", "seal_broken")
_EVENT_KINDS: Final = tuple(
    sorted({"placed_on_market", "verified", _NON_COMPLIANCE, *_ALERT_EVENTS, *_VOIDING})
)
_CHUNK = 500

#: Crockford base32 (store/ids.py) to the digits int(..., 32) reads
_TO_BASE32 = str.maketrans("ABCDEFGHJKMNPQRSTVWXYZ", "ABCDEFGHIJKLMNOPQRSTUV")


def registered_at(record_id: str) -> datetime:
    """When a record was created: the millisecond part of its ULID (store/ids.py)."""
    ms = int(record_id.split("-", 2)[-1][:10].translate(_TO_BASE32), 32)
    return datetime.fromtimestamp(ms / 1000, UTC)


def _t(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def candidates(
    *,
    region: str | None = None,
    category: str | None = None,
    on_market: bool = True,
) -> ColumnElement[bool]:
    """A WHERE clause on ``instruments``: on the market, in the NUTS region (a prefix: ``DE2``
    is every region of Bavaria) and of the category."""
    clauses: list[ColumnElement[bool]] = []
    if on_market:
        clauses.append(instruments.c.state.in_(ON_MARKET))
    if region is not None:
        validate_nuts(region)
        clauses.append(instruments.c.region.like(f"{region}%"))
    if category is not None:
        clauses.append(instruments.c.category == InstrumentCategory(category).value)
    return and_(true(), *clauses)


def merge_alerts(*sources: Iterable[Alert]) -> dict[str, list[Alert]]:
    """Per instrument, one alert per kind: the one with the latest evidence."""
    best: dict[tuple[str, str], Alert] = {}
    for source in sources:
        for a in source:
            key = (a.instrument, a.kind)
            if key not in best or a.at > best[key].at:
                best[key] = a
    out: dict[str, list[Alert]] = defaultdict(list)
    for (ins, _), a in sorted(best.items()):
        out[ins].append(a)
    return dict(out)


def _registry_alerts(
    ev: Mapping[str, Mapping[str, Any]],
    flags: Mapping[str, Mapping[str, Any]],
    held: Mapping[str, Mapping[str, Any]],
    instrument: str,
) -> list[Alert]:
    out = []
    for kind in _ALERT_EVENTS:
        row = ev.get(kind)
        if row is not None:
            out.append(
                Alert(
                    instrument,
                    kind,
                    "critical",
                    _t(row["last"]),
                    {"events": row["count"], "first": row["first"], "source": "life-cycle"},
                )
            )
    unapproved = [r for r in (flags.get(_UNAPPROVED), held.get(_UNAPPROVED)) if r is not None]
    if unapproved:
        out.append(
            Alert(
                instrument,
                "unapproved_software",
                "critical",
                max(_t(r["last"]) for r in unapproved),
                {
                    "intake_flags": (flags.get(_UNAPPROVED) or {}).get("count", 0),
                    "quarantined_batches": (held.get(_UNAPPROVED) or {}).get("count", 0),
                    "source": "intake",
                },
            )
        )
    gap = flags.get(_GAP)
    if gap is not None:
        out.append(
            Alert(
                instrument,
                "counter_gap",
                "warning",
                _t(gap["last"]),
                {"intake_flags": gap["count"], "source": "intake"},
            )
        )
    other = {k: r for k, r in held.items() if k != _UNAPPROVED}
    if other:
        out.append(
            Alert(
                instrument,
                "intake_quarantine",
                "warning",
                max(_t(r["last"]) for r in other.values()),
                {"reasons": {k: r["count"] for k, r in sorted(other.items())}, "source": "intake"},
            )
        )
    return out


def _grouped(conn: Connection, stmt: Any) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in conn.execute(stmt):
        out[r[0]][r[1]] = {"count": int(r[2]), "first": r[3], "last": r[4], "seq": r[5]}
    return out


def load_facts(
    conn: Connection,
    where: ColumnElement[bool],
    *,
    lake_alerts: Mapping[str, Sequence[Alert]] | None = None,
) -> list[InstrumentFacts]:
    """The facts of every instrument matching ``where`` (in id order)."""
    i = instruments.c
    rows = conn.execute(
        select(
            i.id,
            i.serial,
            i.certificate_id,
            i.category,
            i.manufacturer_id,
            i.operator_id,
            i.region,
            i.state,
            i.verified_until,
        )
        .where(where)
        .order_by(i.id)
    ).all()
    if not rows:
        return []
    e = events.c
    ev = _grouped(
        conn,
        select(
            e.instrument_id,
            e.kind,
            func.count(),
            func.min(e.occurred_at),
            func.max(e.occurred_at),
            func.max(e.seq),
        )
        .join(instruments, i.id == e.instrument_id)
        .where(e.kind.in_(_EVENT_KINDS), where)
        .group_by(e.instrument_id, e.kind),
    )
    f = intake_flags.c
    flags = _grouped(
        conn,
        select(
            f.instrument_id, f.kind, func.count(), func.min(f.at), func.max(f.at), func.max(f.id)
        )
        .join(instruments, i.id == f.instrument_id)
        .where(where)
        .group_by(f.instrument_id, f.kind),
    )
    q = quarantine.c
    held = _grouped(
        conn,
        select(
            q.instrument_id,
            q.reason,
            func.count(),
            func.min(q.received_at),
            func.max(q.received_at),
            func.max(q.id),
        )
        .join(instruments, i.id == q.instrument_id)
        .where(where)
        .group_by(q.instrument_id, q.reason),
    )
    lake = lake_alerts or {}
    empty: dict[str, dict[str, Any]] = {}
    out = []
    for iid, serial, cert, category, man, op, region, state, verified_until in rows:
        mine = ev.get(iid, empty)
        fl, hd = flags.get(iid), held.get(iid)
        registry = (
            _registry_alerts(mine, fl or empty, hd or empty, iid)
            if fl or hd or not _ALERT_KEYS.isdisjoint(mine)
            else []
        )
        extra = lake.get(iid)
        alerts = merge_alerts(registry, extra).get(iid, []) if extra else registry
        since, voided_by = None, None
        if verified_until is None and mine:
            verified_seq = mine["verified"]["seq"] if "verified" in mine else -1
            voiding = [(mine[k]["seq"], k) for k in _VOIDING if k in mine]
            voiding = [v for v in voiding if v[0] > verified_seq]
            if voiding:
                _, voided_by = max(voiding)
                since = _t(mine[voided_by]["last"])
        placed = mine.get("placed_on_market")
        findings = 0
        for k in FINDINGS:
            if k in mine:
                findings += mine[k]["count"]
        out.append(
            InstrumentFacts(
                id=iid,
                serial=serial,
                certificate_id=cert,
                category=category,
                manufacturer_id=man,
                operator_id=op,
                region=region,
                state=state,
                registered_at=registered_at(iid),
                placed_at=_t(placed["first"]) if placed else None,
                verified_until=verified_until,
                unverified_since=since,
                voided_by=voided_by,
                alerts=tuple(alerts),
                non_compliances=mine[_NON_COMPLIANCE]["count"] if _NON_COMPLIANCE in mine else 0,
                findings=findings,
            )
        )
    return out


def load_context(conn: Connection, *, lake_alerts: Iterable[Alert] = ()) -> FleetContext:
    """The fleet-wide numbers: per type its instruments and failed instruments (a critical
    alert, from the registry or the lake, or a non-compliance), per operator its instruments
    and those with findings; every certificate's status."""
    i, e = instruments.c, events.c
    types = {
        r[0]: int(r[1])
        for r in conn.execute(select(i.certificate_id, func.count()).group_by(i.certificate_id))
    }
    operators = {
        r[0]: int(r[1])
        for r in conn.execute(
            select(i.operator_id, func.count())
            .where(i.operator_id.is_not(None))
            .group_by(i.operator_id)
        )
    }
    failing = select(i.id, i.certificate_id).where(
        or_(
            i.id.in_(select(e.instrument_id).where(e.kind.in_((*_ALERT_EVENTS, _NON_COMPLIANCE)))),
            i.id.in_(
                select(intake_flags.c.instrument_id).where(intake_flags.c.kind == _UNAPPROVED)
            ),
            i.id.in_(
                select(quarantine.c.instrument_id).where(
                    quarantine.c.reason == _UNAPPROVED, quarantine.c.instrument_id.is_not(None)
                )
            ),
        )
    )
    failed: dict[str, str] = {r[0]: r[1] for r in conn.execute(failing)}
    extra = sorted({a.instrument for a in lake_alerts if a.severity == "critical"} - set(failed))
    for k in range(0, len(extra), _CHUNK):
        chunk = extra[k : k + _CHUNK]
        failed.update(
            {
                r[0]: r[1]
                for r in conn.execute(select(i.id, i.certificate_id).where(i.id.in_(chunk)))
            }
        )
    failed_per_type: dict[str, int] = defaultdict(int)
    for cert in failed.values():
        failed_per_type[cert] += 1
    findings = {
        r[0]: int(r[1])
        for r in conn.execute(
            select(i.operator_id, func.count(func.distinct(e.instrument_id)))
            .join(instruments, i.id == e.instrument_id)
            .where(e.kind.in_(FINDINGS), i.operator_id.is_not(None))
            .group_by(i.operator_id)
        )
    }
    certs = {
        r.id: CertificateFacts(id=r.id, status=r.status, valid_until=r.valid_until)
        for r in conn.execute(
            select(certificates.c.id, certificates.c.status, certificates.c.valid_until)
        )
    }
    return FleetContext(
        types={
            c: TypeStats(instruments=n, failed=failed_per_type.get(c, 0)) for c, n in types.items()
        },
        operators={
            o: OperatorStats(instruments=n, with_findings=findings.get(o, 0))
            for o, n in operators.items()
        },
        certificates=certs,
    )
