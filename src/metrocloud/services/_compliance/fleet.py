"""The criteria over a fleet (a manufacturer's or a type's instruments), set-based.

Every figure is one SQL statement over the whole fleet, never one query per instrument:

- the counts per certificate and criterion: one ``GROUP BY certificate_id`` whose failure
  conditions are correlated ``EXISTS`` probes on indexed keys (``intake_flags`` by
  instrument, ``events`` by instrument and seq, ``declaration_instruments`` by instrument);
- the failing instruments: the same conditions, keyset-paged on the instrument id;
- verification due dates: ``GROUP BY verified_until``; non-compliances: one row per
  (month found, month closed); certificate history: the fleet's certificates' rows.

The conditions are the rules of :mod:`.instrument`, written as SQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    exists,
    false,
    func,
    not_,
    or_,
    select,
)

from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.instruments import EventKind, LifeCycleState
from metrocloud.services._compliance.instrument import UNAPPROVED_FLAG
from metrocloud.services._compliance.model import (
    CertificateLine,
    CertificatePoint,
    Criterion,
    CriterionCount,
    FailingInstrument,
    FailingPage,
    MonthCount,
    NonComplianceMonth,
)
from metrocloud.services.common import Keyset
from metrocloud.store.projection import software_text
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    declaration_instruments,
    events,
    instruments,
    intake_flags,
)

__all__ = [
    "Conditions",
    "FleetCounts",
    "certificate_history_points",
    "certificate_lines",
    "conditions",
    "count",
    "failing",
    "non_compliance_months",
    "scope_rows",
    "verification_due",
]

_I = instruments.c
_C = certificates.c


@dataclass(frozen=True, kw_only=True, slots=True)
class Conditions:
    """Per criterion, SQL conditions on an ``instruments JOIN certificates`` row."""

    fail: dict[Criterion, ColumnElement[bool]]
    not_applicable: dict[Criterion, ColumnElement[bool]]

    def any_fail(self) -> ColumnElement[bool]:
        return or_(*self.fail.values())


def _approved(conn: Connection, scope: ColumnElement[bool]) -> ColumnElement[bool]:
    """True where the instrument's software is one its certificate approves.

    One OR term per certificate of the fleet (a manufacturer holds tens, a type is one),
    each an ``IN`` of the certificate's approved software in the stored (canonical) form.
    """
    cert_ids = select(_I.certificate_id).where(scope).distinct().scalar_subquery()
    rows = conn.execute(select(_C.id, _C.software).where(_C.id.in_(cert_ids))).all()
    terms = [
        and_(_I.certificate_id == r.id, _I.software.in_([software_text(s) for s in r.software]))
        for r in rows
        if r.software
    ]
    return or_(*terms) if terms else false()


def conditions(conn: Connection, scope: ColumnElement[bool], today: date) -> Conditions:
    e = events.alias("e")
    nc = events.alias("nc")
    ca = events.alias("ca")
    f = intake_flags
    in_service = _I.state == LifeCycleState.IN_SERVICE.value
    registered = _I.state == LifeCycleState.REGISTERED.value
    # an unapproved-software flag not followed by a software update
    open_flag = exists().where(
        f.c.instrument_id == _I.id,
        f.c.kind == UNAPPROVED_FLAG,
        ~exists().where(
            e.c.instrument_id == f.c.instrument_id,
            e.c.kind == EventKind.SOFTWARE_UPDATED.value,
            e.c.occurred_at >= f.c.at,
        ),
    )
    declared = exists().where(declaration_instruments.c.instrument_id == _I.id)
    # a non-compliance with no corrective action after it
    open_nc = exists().where(
        nc.c.instrument_id == _I.id,
        nc.c.kind == EventKind.NON_COMPLIANCE_FOUND.value,
        ~exists().where(
            ca.c.instrument_id == nc.c.instrument_id,
            ca.c.kind == EventKind.CORRECTIVE_ACTION.value,
            ca.c.seq > nc.c.seq,
        ),
    )
    cert_valid = and_(_C.status == CertificateStatus.VALID.value, _C.valid_until >= today)
    unapproved = and_(_I.software.is_not(None), not_(_approved(conn, scope)))
    return Conditions(
        fail={
            Criterion.CERTIFICATE_VALID: not_(cert_valid),
            Criterion.SOFTWARE_APPROVED: or_(unapproved, open_flag),
            Criterion.VERIFICATION_CURRENT: and_(
                in_service, or_(_I.verified_until.is_(None), _I.verified_until < today)
            ),
            Criterion.DECLARATION_PRESENT: and_(not_(registered), not_(declared)),
            Criterion.NO_OPEN_NON_COMPLIANCE: open_nc,
        },
        not_applicable={
            Criterion.SOFTWARE_APPROVED: and_(_I.software.is_(None), not_(open_flag)),
            Criterion.VERIFICATION_CURRENT: not_(in_service),
            Criterion.DECLARATION_PRESENT: and_(registered, not_(declared)),
        },
    )


def _flag(cond: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _fleet() -> Any:
    return instruments.join(certificates, _C.id == _I.certificate_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetCounts:
    instruments: int
    failing: int
    never_verified: int
    counts: tuple[CriterionCount, ...]
    #: per certificate id: (instruments, failing)
    per_certificate: dict[str, tuple[int, int]]


def count(conn: Connection, scope: ColumnElement[bool], cond: Conditions) -> FleetCounts:
    """Counts per criterion and per certificate: one grouped statement."""
    order = list(Criterion)
    cols = [func.count().label("n"), _flag(cond.any_fail()).label("failing")]
    cols.append(
        _flag(and_(_I.state == LifeCycleState.IN_SERVICE.value, _I.verified_until.is_(None))).label(
            "never"
        )
    )
    for c in order:
        cols.append(_flag(cond.fail[c]))
        cols.append(_flag(cond.not_applicable.get(c, false())))
    rows = conn.execute(
        select(_I.certificate_id, *cols)
        .select_from(_fleet())
        .where(scope)
        .group_by(_I.certificate_id)
    ).all()
    total = failing = never = 0
    fails: dict[Criterion, int] = defaultdict(int)
    nas: dict[Criterion, int] = defaultdict(int)
    per_cert = {}
    for r in rows:
        n, bad = int(r[1]), int(r[2])
        total, failing, never = total + n, failing + bad, never + int(r[3])
        per_cert[r[0]] = (n, bad)
        for k, c in enumerate(order):
            fails[c] += int(r[4 + 2 * k])
            nas[c] += int(r[5 + 2 * k])
    counts = tuple(
        CriterionCount(
            criterion=c,
            passed=total - fails[c] - nas[c],
            failed=fails[c],
            not_applicable=nas[c],
        )
        for c in order
    )
    return FleetCounts(
        instruments=total,
        failing=failing,
        never_verified=never,
        counts=counts,
        per_certificate=per_cert,
    )


def failing(
    conn: Connection,
    scope: ColumnElement[bool],
    cond: Conditions,
    *,
    total: int,
    limit: int,
    cursor: str | None,
) -> tuple[FailingPage, list[Any]]:
    """A page of failing instruments (by id) and their rows (for the access log)."""
    order = list(Criterion)
    keyset = Keyset(_I.id)
    q = select(
        _I.id,
        _I.serial,
        _I.certificate_id,
        _I.state,
        _I.manufacturer_id,
        _I.operator_id,
        *[case((cond.fail[c], 1), else_=0) for c in order],
    ).select_from(_fleet())
    q = keyset.apply(q.where(scope, cond.any_fail()), limit, cursor)
    rows, nxt = keyset.page(conn.execute(q).all(), limit)
    items = tuple(
        FailingInstrument(
            id=r.id,
            serial=r.serial,
            certificate_id=r.certificate_id,
            state=r.state,
            failed=tuple(c for k, c in enumerate(order) if r[6 + k]),
        )
        for r in rows
    )
    return FailingPage(total=total, items=items, next_cursor=nxt), rows


def _month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def verification_due(
    conn: Connection, scope: ColumnElement[bool], today: date
) -> tuple[MonthCount, ...]:
    """Instruments in service by the month their verification runs out (and how many of
    them ran out before ``today``)."""
    rows = conn.execute(
        select(_I.verified_until, func.count())
        .where(
            scope,
            _I.state == LifeCycleState.IN_SERVICE.value,
            _I.verified_until.is_not(None),
        )
        .group_by(_I.verified_until)
    ).all()
    months: dict[str, int] = defaultdict(int)
    overdue: dict[str, int] = defaultdict(int)
    for day, n in rows:
        months[_month(day)] += int(n)
        if day < today:
            overdue[_month(day)] += int(n)
    return tuple(
        MonthCount(month=m, count=months[m], overdue=overdue.get(m, 0)) for m in sorted(months)
    )


def _next_month(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + m // 12:04d}-{m % 12 + 1:02d}"


def non_compliance_months(
    conn: Connection, scope: ColumnElement[bool], today: date
) -> tuple[NonComplianceMonth, ...]:
    """Per month from the first finding to today: found, closed, open at the month's end.

    A non-compliance is closed by the first corrective action after it (in the
    instrument's event order), in the later of the two months.
    """
    nc = events.alias("nc")
    ca = events.alias("ca")
    closed_at = (
        select(func.min(ca.c.occurred_at))
        .where(
            ca.c.instrument_id == nc.c.instrument_id,
            ca.c.kind == EventKind.CORRECTIVE_ACTION.value,
            ca.c.seq > nc.c.seq,
        )
        .scalar_subquery()
    )
    inner = (
        select(
            func.substr(nc.c.occurred_at, 1, 7).label("found"),
            func.substr(closed_at, 1, 7).label("closed"),
        )
        .select_from(nc.join(instruments, _I.id == nc.c.instrument_id))
        .where(scope, nc.c.kind == EventKind.NON_COMPLIANCE_FOUND.value)
        .subquery()
    )
    rows = conn.execute(
        select(inner.c.found, inner.c.closed, func.count()).group_by(inner.c.found, inner.c.closed)
    ).all()
    if not rows:
        return ()
    found: dict[str, int] = defaultdict(int)
    closed: dict[str, int] = defaultdict(int)
    for f, c, n in rows:
        found[f] += int(n)
        if c is not None:
            closed[max(f, c)] += int(n)
    month, last = min(found), max(_month(today), *found, *closed)
    out = []
    opened = 0
    while month <= last:
        opened += found.get(month, 0) - closed.get(month, 0)
        out.append(
            NonComplianceMonth(
                month=month, found=found.get(month, 0), closed=closed.get(month, 0), open=opened
            )
        )
        month = _next_month(month)
    return tuple(out)


def certificate_lines(
    conn: Connection, cert_scope: ColumnElement[bool], counts: FleetCounts, today: date
) -> tuple[CertificateLine, ...]:
    rows = conn.execute(select(certificates).where(cert_scope).order_by(_C.number, _C.id)).all()
    return tuple(
        CertificateLine(
            id=r.id,
            number=r.number,
            model=r.model,
            category=r.category,
            notified_body_id=r.notified_body_id,
            status=effective_status(r.status, r.valid_until, today).value,
            valid_until=r.valid_until,
            leaf_index=r.leaf_index,
            instruments=counts.per_certificate.get(r.id, (0, 0))[0],
            failing=counts.per_certificate.get(r.id, (0, 0))[1],
        )
        for r in rows
    )


def certificate_history_points(
    conn: Connection, cert_scope: ColumnElement[bool], today: date
) -> tuple[CertificatePoint, ...]:
    """Every status change of the fleet's certificates, and each expiry up to today."""
    h = certificate_history.c
    rows = conn.execute(
        select(h.certificate_id, h.seq, h.action, h.status, h.at, h.leaf_index, _C.number)
        .select_from(certificate_history.join(certificates, _C.id == h.certificate_id))
        .where(cert_scope)
        .order_by(h.at, h.leaf_index)
    ).all()
    points = [
        CertificatePoint(
            at=r.at[:10],
            certificate_id=r.certificate_id,
            number=r.number,
            action=r.action,
            status=r.status,
            leaf_index=r.leaf_index,
        )
        for r in rows
    ]
    expired = conn.execute(
        select(_C.id, _C.number, _C.valid_until).where(
            cert_scope,
            _C.status.in_([CertificateStatus.VALID.value, CertificateStatus.SUSPENDED.value]),
            _C.valid_until < today,
        )
    ).all()
    points += [
        CertificatePoint(
            at=r.valid_until.isoformat(),
            certificate_id=r.id,
            number=r.number,
            action="expire",
            status=CertificateStatus.EXPIRED.value,
            leaf_index=None,
        )
        for r in expired
    ]
    return tuple(sorted(points, key=_point_key))


def _point_key(p: CertificatePoint) -> tuple[str, int, str]:
    return (p.at, p.leaf_index if p.leaf_index is not None else 2**62, p.certificate_id)


def scope_rows(rows: Sequence[Any]) -> list[tuple[str, tuple[str | None, ...]]]:
    """Access-log records for listed instruments: (id, (manufacturer, operator))."""
    return [(r.id, (r.manufacturer_id, r.operator_id)) for r in rows]
