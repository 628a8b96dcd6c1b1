"""EU-type examination certificates: issue, revise, suspend, reinstate, withdraw, read.

Certificates are public information (NANDO and the notified bodies publish them), so every
authenticated party may read them and no read is access-logged. Only a notified body issues
a certificate, and only the notified body that issued it may change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import (
    DEFAULT_VALIDITY_YEARS,
    Certificate,
    CertificateAction,
    CertificateStatus,
    ConformityModule,
    next_status,
)
from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import InstrumentType, SoftwareIdentification
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import certificate_history, certificates, parties

__all__ = [
    "CertificateDraft",
    "certificate_out",
    "change_certificate",
    "check_certificate_owner",
    "get_certificate",
    "history",
    "issue_certificate",
    "list_certificates",
    "to_domain",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateDraft:
    number: str
    holder_id: str
    category: InstrumentCategory
    model: str
    accuracy_class: str
    software: tuple[SoftwareIdentification, ...]
    module: ConformityModule = ConformityModule.B
    rated_conditions: dict[str, str] | None = None
    issued_on: date | None = None
    valid_until: date | None = None


def certificate_out(row: Any, today: date | None = None) -> dict[str, Any]:
    status = row.status
    if today is not None and status in ("valid", "suspended") and today > row.valid_until:
        status = CertificateStatus.EXPIRED.value
    return {
        "id": row.id,
        "number": row.number,
        "notified_body_id": row.notified_body_id,
        "holder_id": row.holder_id,
        "module": row.module,
        "category": row.category,
        "model": row.model,
        "accuracy_class": row.accuracy_class,
        "software": row.software,
        "rated_conditions": row.rated_conditions,
        "issued_on": row.issued_on.isoformat(),
        "valid_until": row.valid_until.isoformat(),
        "status": status,
        "revision": row.revision,
        "leaf_index": row.leaf_index,
    }


def to_domain(row: Any) -> Certificate:
    sw = tuple(SoftwareIdentification(**s) for s in row.software)
    itype = InstrumentType(
        manufacturer_id=row.holder_id,
        model=row.model,
        category=InstrumentCategory(row.category),
        accuracy_class=row.accuracy_class,
        software=sw,
    )
    return Certificate(
        id=row.id,
        number=row.number,
        notified_body_id=row.notified_body_id,
        holder_id=row.holder_id,
        module=ConformityModule(row.module),
        instrument_type=itype,
        issued_on=row.issued_on,
        valid_until=row.valid_until,
        status=CertificateStatus(row.status),
        revision=row.revision,
    )


def issue_certificate(
    node: Node, actor: Actor, draft: CertificateDraft, extra: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    require_role(actor, PartyRole.NOTIFIED_BODY, action="issue EU-type examination certificates")
    issued_on = draft.issued_on or node.now().date()
    valid_until = draft.valid_until or issued_on.replace(
        year=issued_on.year + DEFAULT_VALIDITY_YEARS
    )
    cert_id = new_id("cer", node.country)
    itype = InstrumentType(
        manufacturer_id=draft.holder_id,
        model=draft.model,
        category=draft.category,
        accuracy_class=draft.accuracy_class,
        software=draft.software,
    )
    Certificate(
        id=cert_id,
        number=draft.number,
        notified_body_id=actor.party_id,
        holder_id=draft.holder_id,
        module=draft.module,
        instrument_type=itype,
        issued_on=issued_on,
        valid_until=valid_until,
    )
    body = {
        "certificate": {
            "id": cert_id,
            "number": draft.number,
            "notified_body_id": actor.party_id,
            "holder_id": draft.holder_id,
            "module": draft.module.value,
            "category": draft.category.value,
            "model": draft.model,
            "accuracy_class": draft.accuracy_class,
            "software": [s.as_dict() for s in draft.software],
            "rated_conditions": dict(draft.rated_conditions or {}),
            "issued_on": issued_on.isoformat(),
            "valid_until": valid_until.isoformat(),
        }
    }
    with node.db.write() as conn:
        holder = conn.execute(
            select(parties.c.role).where(parties.c.id == draft.holder_id)
        ).scalar_one_or_none()
        if holder is None:
            raise NotFound(f"holder {draft.holder_id} is not a party of this node")
        if holder != PartyRole.MANUFACTURER.value:
            raise InvalidInput(
                f"the holder of a type examination certificate must be a "
                f"manufacturer, {draft.holder_id} is a {holder}",
                rule="MID 2014/32/EU Annex II module B point 1",
            )
        if conn.execute(
            select(certificates.c.id).where(certificates.c.number == draft.number)
        ).first():
            raise Conflict(f"certificate number {draft.number!r} exists already")
        rec = node.commit(
            conn,
            [
                node.statement(
                    kind="certificate.issued", signer=actor.party_id, body=body, extra=extra
                )
            ],
        )
        row = _row(conn, cert_id)
    return certificate_out(row), rec.leaf_indexes[0]


def _row(conn: Connection, cert_id: str) -> Any:
    row = conn.execute(select(certificates).where(certificates.c.id == cert_id)).first()
    if row is None:
        raise NotFound(f"certificate {cert_id} does not exist")
    return row


def check_certificate_owner(node: Node, actor: Actor, cert_id: str) -> None:
    """Only the notified body that issued a certificate may change it."""
    require_role(actor, PartyRole.NOTIFIED_BODY, action="change certificates")
    with node.db.read() as conn:
        row = _row(conn, cert_id)
    if row.notified_body_id != actor.party_id:
        raise Forbidden(
            f"certificate {cert_id} was issued by another notified body; only "
            "the issuing body may change it",
            rule="MID 2014/32/EU Annex II module B point 7",
        )


_KIND = {
    CertificateAction.REVISE: "certificate.revised",
    CertificateAction.SUSPEND: "certificate.suspended",
    CertificateAction.REINSTATE: "certificate.reinstated",
    CertificateAction.WITHDRAW: "certificate.withdrawn",
}


def change_certificate(
    node: Node,
    actor: Actor,
    cert_id: str,
    action: CertificateAction,
    *,
    reason: str,
    changes: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], int]:
    check_certificate_owner(node, actor, cert_id)
    if action not in _KIND:
        raise InvalidInput(f"{action} is not a change of an existing certificate")
    if not reason.strip():
        raise InvalidInput(
            f"a reason is required to {action} a certificate",
            rule="MID 2014/32/EU Annex II module B point 7",
        )
    body: dict[str, Any] = {"certificate_id": cert_id, "reason": reason}
    with node.db.write() as conn:
        row = _row(conn, cert_id)
        next_status(CertificateStatus(row.status), action)  # refuse early, with the rule
        if action is CertificateAction.REVISE:
            if not changes:
                raise InvalidInput("a revision must change at least one field")
            merged = {**certificate_out(row), **changes}
            itype = InstrumentType(
                manufacturer_id=row.holder_id,
                model=merged["model"],
                category=InstrumentCategory(row.category),
                accuracy_class=merged["accuracy_class"],
                software=tuple(SoftwareIdentification(**s) for s in merged["software"]),
            )
            valid_until = date.fromisoformat(str(merged["valid_until"]))
            Certificate(
                id=row.id,
                number=row.number,
                notified_body_id=row.notified_body_id,
                holder_id=row.holder_id,
                module=ConformityModule(row.module),
                instrument_type=itype,
                issued_on=row.issued_on,
                valid_until=valid_until,
            )
            body["changes"] = changes
        rec = node.commit(
            conn,
            [node.statement(kind=_KIND[action], signer=actor.party_id, body=body, extra=extra)],
        )
        row = _row(conn, cert_id)
    return certificate_out(row, node.now().date()), rec.leaf_indexes[0]


def get_certificate(node: Node, cert_id: str) -> dict[str, Any]:
    with node.db.read() as conn:
        return certificate_out(_row(conn, cert_id), node.now().date())


def history(node: Node, cert_id: str) -> list[dict[str, Any]]:
    with node.db.read() as conn:
        _row(conn, cert_id)
        rows = conn.execute(
            select(certificate_history)
            .where(certificate_history.c.certificate_id == cert_id)
            .order_by(certificate_history.c.seq)
        ).all()
    return [
        {
            "seq": r.seq,
            "action": r.action,
            "status": r.status,
            "revision": r.revision,
            "reason": r.reason,
            "at": r.at,
            "leaf_index": r.leaf_index,
        }
        for r in rows
    ]


def list_certificates(
    node: Node,
    *,
    notified_body_id: str | None = None,
    holder_id: str | None = None,
    category: InstrumentCategory | None = None,
    status: CertificateStatus | None = None,
    number: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    c = certificates.c
    keyset = Keyset(c.id)
    q = keyset.apply(select(certificates), limit, cursor)
    if notified_body_id:
        q = q.where(c.notified_body_id == notified_body_id)
    if holder_id:
        q = q.where(c.holder_id == holder_id)
    if category:
        q = q.where(c.category == category.value)
    if status:
        # the effective status: a valid or suspended certificate past its date is expired
        today = node.now().date()
        live = c.status.in_([CertificateStatus.VALID.value, CertificateStatus.SUSPENDED.value])
        if status is CertificateStatus.EXPIRED:
            q = q.where(or_(c.status == status.value, and_(live, c.valid_until < today)))
        elif status in (CertificateStatus.VALID, CertificateStatus.SUSPENDED):
            q = q.where(c.status == status.value, c.valid_until >= today)
        else:
            q = q.where(c.status == status.value)
    if number:
        q = q.where(c.number == number)
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
    today = node.now().date()
    return Page([certificate_out(r, today) for r in rows], nxt)
