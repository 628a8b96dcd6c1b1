"""E-compliance reports: per instrument, per manufacturer, per type (docs/compliance.md).

Five criteria, each pass / fail / not applicable with its evidence (record ids, dates and
the ledger leaf of the signed statement behind each record):

1. ``certificate_valid``: the type's EU-type examination certificate is valid today;
2. ``software_approved``: the installed software is approved by the certificate, and the
   intake saw no unapproved software since the last software update;
3. ``verification_current``: an instrument in service is verified until today or later;
4. ``declaration_present``: an instrument placed on the market is covered by an EU
   declaration of conformity;
5. ``no_open_non_compliance``: every ``non_compliance_found`` is followed by a
   ``corrective_action``.

The verdict fails when a criterion fails. A manufacturer's or type's report aggregates over
its instruments with set-based SQL (counts per criterion, failing instruments keyset-paged
with their total, due dates and non-compliances over time), never a query per instrument.

Who may read a report: an authority any; a manufacturer those of its own instruments,
itself and the types it holds; a notified body those of the types it certified and their
instruments. Everyone else is refused. Grants of read access do not extend to reports: a
report joins declarations, certificates and findings that a grant does not cover. Every
report read by a party other than the owner lands in the owners' access log: one entry for
the instrument, manufacturer or type, and one per failing instrument listed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, select

from metrocloud.domain.certificates import effective_status
from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services._compliance import fleet as _fleet
from metrocloud.services._compliance.instrument import evaluate, timeline
from metrocloud.services._compliance.model import (
    CRITERIA,
    CSP,
    Criterion,
    CriterionResult,
    FleetReport,
    FleetSubject,
    InstrumentReport,
    Outcome,
    Report,
    as_json,
    verdict_of,
)
from metrocloud.services.common import Actor, access_rows, check_limit, require_role
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, instruments, parties

__all__ = [
    "CRITERIA",
    "FORMATS",
    "HTML_CSP",
    "MEDIA_TYPES",
    "Criterion",
    "CriterionResult",
    "FleetReport",
    "InstrumentReport",
    "Outcome",
    "Report",
    "as_json",
    "instrument_report",
    "local_authority",
    "manufacturer_report",
    "render",
    "render_html",
    "render_pdf",
    "type_report",
]

RULE = "ARCHITECTURE.md decision 4 (data sovereignty); docs/compliance.md#who-may-read-a-report"
#: the formats a report is rendered in, and their media types
MEDIA_TYPES = {"json": "application/json", "html": "text/html", "pdf": "application/pdf"}
FORMATS = tuple(MEDIA_TYPES)
#: the Content-Security-Policy of an HTML report (also in the page's <meta> element)
HTML_CSP = CSP

Progress = Callable[[str, int, int], None]


def local_authority(node: Node) -> Actor:
    """The node itself acting as its member state's authority (the ``metrocloud`` CLI on
    the node's own data). Its reads are access-logged under the node id."""
    return Actor(party_id=node.node_id, role=PartyRole.AUTHORITY, country=node.country)


def _refuse(actor: Actor, what: str) -> Forbidden:
    return Forbidden(
        f"{actor.party_id} may not read the compliance report of {what}: reports are for "
        "authorities, the manufacturer concerned and the notified body that certified the type",
        rule=RULE,
    )


def instrument_report(node: Node, actor: Actor, instrument_id: str) -> InstrumentReport:
    """The five criteria for one instrument, with evidence and the verdict."""
    require_role(
        actor,
        PartyRole.AUTHORITY,
        PartyRole.MANUFACTURER,
        PartyRole.NOTIFIED_BODY,
        action="read compliance reports",
    )
    today = node.now().date()
    with node.db.read() as conn:
        row = instrument_row(conn, instrument_id)
        if actor.role is PartyRole.MANUFACTURER and row.manufacturer_id != actor.party_id:
            raise _refuse(actor, f"instrument {row.id} (another manufacturer's)")
        if actor.role is PartyRole.NOTIFIED_BODY:
            nb = conn.execute(
                select(certificates.c.notified_body_id).where(
                    certificates.c.id == row.certificate_id
                )
            ).scalar_one()
            if nb != actor.party_id:
                raise _refuse(actor, f"instrument {row.id} (a type another body certified)")
        info, criteria = evaluate(conn, row, today)
        evs, total = timeline(conn, row.id)
    node.access_log.append(
        access_rows(
            actor,
            node.timestamp(),
            "compliance.instrument",
            "instrument",
            [(row.id, (row.manufacturer_id, row.operator_id))],
        )
    )
    return InstrumentReport(
        as_of=today,
        generated_at=node.timestamp(),
        node_id=node.node_id,
        instrument=info,
        criteria=criteria,
        verdict=verdict_of([c.outcome for c in criteria]),
        events=evs,
        events_total=total,
    )


def _fleet_report(
    node: Node,
    actor: Actor,
    *,
    kind: str,
    subject: FleetSubject,
    owner: str,
    scope: ColumnElement[bool],
    cert_scope: ColumnElement[bool],
    limit: int,
    cursor: str | None,
    progress: Progress | None,
) -> FleetReport:
    check_limit(limit)
    step = progress or (lambda _what, _done, _total: None)
    today = node.now().date()
    steps = 5
    with node.db.read() as conn:
        step("criteria", 0, steps)
        cond = _fleet.conditions(conn, scope, today)
        counts = _fleet.count(conn, scope, cond)
        step("criteria", 1, steps)
        page, listed = _fleet.failing(
            conn, scope, cond, total=counts.failing, limit=limit, cursor=cursor
        )
        step("criteria", 2, steps)
        due = _fleet.verification_due(conn, scope, today)
        step("criteria", 3, steps)
        ncs = _fleet.non_compliance_months(conn, scope, today)
        step("criteria", 4, steps)
        lines = _fleet.certificate_lines(conn, cert_scope, counts, today)
        history = _fleet.certificate_history_points(conn, cert_scope, today)
        step("criteria", 5, steps)
    at = node.timestamp()
    action = f"compliance.{kind}"
    rows = access_rows(
        actor,
        at,
        action,
        "party" if kind == "manufacturer" else "certificate",
        [(subject.id, (owner,))],
    )
    rows += access_rows(actor, at, action, "instrument", _fleet.scope_rows(listed))
    node.access_log.append(rows)
    if counts.failing:
        verdict = Outcome.FAIL
    elif counts.instruments:
        verdict = Outcome.PASS
    else:
        verdict = Outcome.NOT_APPLICABLE
    return FleetReport(
        kind="manufacturer" if kind == "manufacturer" else "type",
        as_of=today,
        generated_at=at,
        node_id=node.node_id,
        subject=subject,
        instruments=counts.instruments,
        passing=counts.instruments - counts.failing,
        verdict=verdict,
        counts=counts.counts,
        failing=page,
        certificates=lines,
        verification_due=due,
        never_verified=counts.never_verified,
        non_compliances=ncs,
        certificate_history=history,
    )


def manufacturer_report(
    node: Node,
    actor: Actor,
    manufacturer_id: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
    progress: Progress | None = None,
) -> FleetReport:
    """The criteria over every instrument of a manufacturer; failing ones paged by id."""
    require_role(
        actor, PartyRole.AUTHORITY, PartyRole.MANUFACTURER, action="read manufacturer reports"
    )
    if actor.role is PartyRole.MANUFACTURER and manufacturer_id != actor.party_id:
        raise _refuse(actor, f"manufacturer {manufacturer_id} (another manufacturer)")
    with node.db.read() as conn:
        party = conn.execute(select(parties).where(parties.c.id == manufacturer_id)).first()
    if party is None or party.role != PartyRole.MANUFACTURER.value:
        raise NotFound(f"manufacturer {manufacturer_id} is not a party of this node")
    subject = FleetSubject(id=party.id, name=party.name, country=party.country)
    return _fleet_report(
        node,
        actor,
        kind="manufacturer",
        subject=subject,
        owner=party.id,
        scope=instruments.c.manufacturer_id == party.id,
        cert_scope=certificates.c.holder_id == party.id,
        limit=limit,
        cursor=cursor,
        progress=progress,
    )


def type_report(
    node: Node,
    actor: Actor,
    certificate_id: str,
    *,
    limit: int = 100,
    cursor: str | None = None,
    progress: Progress | None = None,
) -> FleetReport:
    """The criteria over every instrument of a type (its EU-type examination certificate)."""
    require_role(
        actor,
        PartyRole.AUTHORITY,
        PartyRole.MANUFACTURER,
        PartyRole.NOTIFIED_BODY,
        action="read type reports",
    )
    with node.db.read() as conn:
        cert = conn.execute(select(certificates).where(certificates.c.id == certificate_id)).first()
    if cert is None:
        raise NotFound(f"certificate {certificate_id} does not exist")
    if actor.role is PartyRole.MANUFACTURER and cert.holder_id != actor.party_id:
        raise _refuse(actor, f"type {cert.number} (held by another manufacturer)")
    if actor.role is PartyRole.NOTIFIED_BODY and cert.notified_body_id != actor.party_id:
        raise _refuse(actor, f"type {cert.number} (certified by another body)")
    subject = FleetSubject(
        id=cert.id,
        name=cert.model,
        holder_id=cert.holder_id,
        notified_body_id=cert.notified_body_id,
        number=cert.number,
        status=_status(cert, node),
        valid_until=cert.valid_until,
        leaf_index=cert.leaf_index,
    )
    return _fleet_report(
        node,
        actor,
        kind="type",
        subject=subject,
        owner=cert.holder_id,
        scope=instruments.c.certificate_id == cert.id,
        cert_scope=certificates.c.id == cert.id,
        limit=limit,
        cursor=cursor,
        progress=progress,
    )


def _status(cert: Any, node: Node) -> str:
    return effective_status(cert.status, cert.valid_until, node.now().date()).value


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, charts as inline SVG, nothing fetched."""
    from metrocloud.services._compliance.html import render

    return render(report)


def render_pdf(report: Report) -> bytes:
    """The report as PDF: a summary and tables as text pages, then the charts."""
    from metrocloud.services._compliance.pdf import render

    return render(report)


def render(report: Report, fmt: str) -> bytes:
    """The report in ``fmt`` (json, html or pdf) as bytes; deterministic for a report."""
    if fmt == "html":
        return render_html(report).encode()
    if fmt == "pdf":
        return render_pdf(report)
    if fmt == "json":
        return (json.dumps(as_json(report), indent=2, ensure_ascii=False) + "\n").encode()
    raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
