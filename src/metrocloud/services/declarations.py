"""Declarations of conformity (per instrument or per batch) by the certificate holder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import func, select

from metrocloud.domain.certificates import ConformityModule
from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services.certificates import to_domain
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    article,
    log_reads,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import certificates, declarations, instruments

__all__ = ["declare_conformity", "get_declaration", "list_declarations"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RULE = "MID 2014/32/EU Art. 14 (EU declaration of conformity) and Annex XIII"


def declaration_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "certificate_id": r.certificate_id,
        "manufacturer_id": r.manufacturer_id,
        "module": r.module,
        "instrument_ids": r.instrument_ids,
        "declared_on": r.declared_on.isoformat(),
        "document_sha256": r.document_sha256,
        "leaf_index": r.leaf_index,
    }


def declare_conformity(
    node: Node,
    actor: Actor,
    *,
    certificate_id: str,
    instrument_ids: Sequence[str],
    module: ConformityModule,
    declared_on: date | None = None,
    document_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    require_role(actor, PartyRole.MANUFACTURER, action="declare conformity")
    if not instrument_ids:
        raise InvalidInput("a declaration of conformity covers at least one instrument")
    if len(instrument_ids) > node.settings.max_batch:
        raise InvalidInput(
            f"a declaration covers at most {node.settings.max_batch} "
            f"instruments, got {len(instrument_ids)}"
        )
    if len(set(instrument_ids)) != len(instrument_ids):
        raise InvalidInput("a declaration names each instrument once")
    if document_sha256 is not None and not _SHA256.match(document_sha256):
        raise InvalidInput("document_sha256 must be 64 lowercase hex characters")
    if module is ConformityModule.B:
        raise InvalidInput(
            "module B is the type examination; a declaration of conformity "
            "follows module D, D1, E, E1, F, F1, G, H or H1",
            rule=_RULE,
        )
    with node.db.write() as conn:
        row = conn.execute(select(certificates).where(certificates.c.id == certificate_id)).first()
        if row is None:
            raise NotFound(f"certificate {certificate_id} does not exist")
        if row.holder_id != actor.party_id:
            raise Forbidden(
                f"only the holder of certificate {certificate_id} declares "
                "conformity for its instruments",
                rule=_RULE,
            )
        to_domain(row).ensure_allows_registration(node.now().date())
        ids = list(instrument_ids)
        found = 0
        for start in range(0, len(ids), 500):
            found += conn.execute(
                select(func.count())
                .select_from(instruments)
                .where(
                    instruments.c.id.in_(ids[start : start + 500]),
                    instruments.c.certificate_id == certificate_id,
                )
            ).scalar_one()
        if found != len(ids):
            raise InvalidInput(
                f"{len(ids) - found} of the {len(ids)} instruments are not "
                f"registered under certificate {certificate_id}",
                rule=_RULE,
            )
        decl_id = new_id("doc", node.country)
        body = {
            "declaration": {
                "id": decl_id,
                "certificate_id": certificate_id,
                "manufacturer_id": actor.party_id,
                "module": module.value,
                "instrument_ids": ids,
                "declared_on": (declared_on or node.now().date()).isoformat(),
                "document_sha256": document_sha256,
            }
        }
        node.commit(
            conn,
            [
                node.statement(
                    kind="conformity.declared", signer=actor.party_id, body=body, extra=extra
                )
            ],
        )
        return declaration_out(
            conn.execute(select(declarations).where(declarations.c.id == decl_id)).one()
        )


def _can_read(conn: Any, actor: Actor, r: Any) -> None:
    if actor.role is PartyRole.AUTHORITY or r.manufacturer_id == actor.party_id:
        return
    if (
        actor.role is PartyRole.NOTIFIED_BODY
        and conn.execute(
            select(certificates.c.notified_body_id).where(certificates.c.id == r.certificate_id)
        ).scalar_one()
        == actor.party_id
    ):
        return
    raise Forbidden(
        f"{actor.party_id} may not read declaration {r.id}",
        rule="ARCHITECTURE.md decision 4 (data sovereignty)",
    )


def get_declaration(node: Node, actor: Actor, declaration_id: str) -> dict[str, Any]:
    with node.db.write() as conn:
        r = conn.execute(select(declarations).where(declarations.c.id == declaration_id)).first()
        if r is None:
            raise NotFound(f"declaration {declaration_id} does not exist")
        _can_read(conn, actor, r)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "declaration.read",
            "declaration",
            [(r.id, (r.manufacturer_id,))],
        )
        return declaration_out(r)


def list_declarations(
    node: Node,
    actor: Actor,
    *,
    certificate_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    d = declarations.c
    keyset = Keyset(d.id)
    q = keyset.apply(select(declarations), limit, cursor)
    if actor.role is PartyRole.MANUFACTURER:
        q = q.where(d.manufacturer_id == actor.party_id)
    elif actor.role is PartyRole.NOTIFIED_BODY:
        q = q.where(
            d.certificate_id.in_(
                select(certificates.c.id)
                .where(certificates.c.notified_body_id == actor.party_id)
                .scalar_subquery()
            )
        )
    elif actor.role is not PartyRole.AUTHORITY:
        raise Forbidden(
            f"{article(actor.role.value)} reads no declarations of conformity",
            rule="ARCHITECTURE.md decision 4 (data sovereignty)",
        )
    if certificate_id:
        q = q.where(d.certificate_id == certificate_id)
    with node.db.write() as conn:
        page, nxt = keyset.page(conn.execute(q).all(), limit)
        log_reads(
            conn,
            actor,
            node.timestamp(),
            "declaration.list",
            "declaration",
            [(r.id, (r.manufacturer_id,)) for r in page],
        )
    return Page([declaration_out(r) for r in page], nxt)
