"""Parties and their credentials: admission, bearer tokens, authentication."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from metrocloud.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from metrocloud.domain.parties import Party, PartyRole
from metrocloud.services.common import (
    Actor,
    Keyset,
    Page,
    require_role,
)
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.store.schema import credentials, parties
from metrocloud.trust._time import parse_utc_timestamp
from metrocloud.trust.credentials import (
    check_secret,
    issue_token,
    parse_token,
    verify_token_request,
)
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "IssuedCredential",
    "admit_party",
    "authenticate",
    "cached_actor",
    "get_party",
    "issue_credential",
    "list_parties",
    "list_tokens",
    "revoke_token",
    "token_by_proof",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedCredential:
    token_id: str
    token: str
    party_id: str
    expires_at: str

    def __repr__(self) -> str:
        return f"IssuedCredential(token_id={self.token_id!r}, party_id={self.party_id!r})"


def party_out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "country": row.country,
        "nb_number": row.nb_number,
        "public_key": row.public_key,
        "key_id": row.key_id,
        "admitted_at": row.admitted_at,
        "leaf_index": row.leaf_index,
    }


def admit_party(
    node: Node,
    actor: Actor | None,
    *,
    name: str,
    role: PartyRole,
    country: str | None = None,
    nb_number: str | None = None,
    public_key: str | None = None,
) -> tuple[dict[str, Any], int]:
    """Admit a party (node admin only; ``actor=None`` is the node bootstrapping itself)."""
    if actor is not None:
        require_role(actor, PartyRole.NODE_ADMIN, action="admit parties")
    key = PublicKey.from_any(public_key).to_spki_b64() if public_key else None
    party = Party(
        id=new_id("pty", node.country),
        name=name,
        role=role,
        country=country or node.country,
        nb_number=nb_number,
        public_key=key,
    )
    body = {
        "party": {
            "id": party.id,
            "name": party.name,
            "role": party.role.value,
            "country": party.country,
            "nb_number": party.nb_number,
            "public_key": party.public_key,
        }
    }
    signer = actor.party_id if actor else node.node_id
    with node.db.write() as conn:
        if (
            nb_number is not None
            and conn.execute(select(parties.c.id).where(parties.c.nb_number == nb_number)).first()
        ):
            raise Conflict(f"notified body number {nb_number} is already admitted")
        if key is not None:
            kid = PublicKey.from_spki_b64(key).key_id
            if conn.execute(select(parties.c.id).where(parties.c.key_id == kid)).first():
                raise Conflict(f"public key {kid[:16]}... already belongs to another party")
        rec = node.commit(conn, [node.statement(kind="party.admitted", signer=signer, body=body)])
        row = conn.execute(select(parties).where(parties.c.id == party.id)).one()
    return party_out(row), rec.leaf_indexes[0]


def get_party(node: Node, party_id: str) -> dict[str, Any]:
    with node.db.read() as conn:
        row = conn.execute(select(parties).where(parties.c.id == party_id)).first()
    if row is None:
        raise NotFound(f"party {party_id} does not exist")
    return party_out(row)


def list_parties(
    node: Node, *, role: PartyRole | None, country: str | None, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    keyset = Keyset(parties.c.id)
    q = keyset.apply(select(parties), limit, cursor)
    if role is not None:
        q = q.where(parties.c.role == role.value)
    if country is not None:
        q = q.where(parties.c.country == country)
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
    return Page([party_out(r) for r in rows], nxt)


def _store_token(
    conn: Connection,
    node: Node,
    party_id: str,
    key_id: str | None,
    label: str,
    proof: str | None = None,
) -> IssuedCredential:
    issued = issue_token()
    now = node.now()
    expires = utc_timestamp(now + timedelta(days=node.settings.token_ttl_days))
    conn.execute(
        insert(credentials).values(
            token_id=issued.token_id,
            party_id=party_id,
            secret_hash=issued.secret_hash,
            key_id=key_id,
            label=label,
            issued_at=utc_timestamp(now),
            expires_at=expires,
            proof_sha256=proof,
        )
    )
    return IssuedCredential(
        token_id=issued.token_id, token=issued.token, party_id=party_id, expires_at=expires
    )


#: a party known here because the grid replicated it acts on the node that admitted it
_HOME_RULE = "ARCHITECTURE.md decision 6 (docs/grid.md#replication)"
_ELSEWHERE = "was admitted by another node of the grid; it gets its tokens there"


def _homed_here(node: Node, party_id: str) -> bool:
    return party_id.startswith(f"pty-{node.country}-")


def issue_credential(
    node: Node, actor: Actor | None, party_id: str, label: str = ""
) -> IssuedCredential:
    """A new bearer token for ``party_id``, issued by the node admin."""
    if actor is not None:
        require_role(actor, PartyRole.NODE_ADMIN, action="issue credentials for other parties")
    with node.db.write() as conn:
        row = conn.execute(select(parties).where(parties.c.id == party_id)).first()
        if row is None:
            raise NotFound(f"party {party_id} does not exist")
        if not _homed_here(node, party_id):
            raise Forbidden(f"party {party_id} {_ELSEWHERE}", rule=_HOME_RULE)
        return _store_token(conn, node, party_id, row.key_id, label)


def token_by_proof(node: Node, request: Mapping[str, Any]) -> IssuedCredential:
    """A token for a party that proves possession of its registered key."""
    party_id = str(request.get("party_id", ""))
    with node.db.write() as conn:
        row = conn.execute(select(parties).where(parties.c.id == party_id)).first()
        if row is None or row.public_key is None:
            raise Unauthenticated("no party with a registered key matches this token request")
        if not _homed_here(node, party_id):
            raise Unauthenticated(f"party {party_id} {_ELSEWHERE}", rule=_HOME_RULE)
        verify_token_request(request, PublicKey.from_spki_b64(row.public_key), now=node.now())
        # a signed request buys one token: a replay within the time window is refused
        proof = hashlib.sha256(str(request.get("signature", "")).encode()).hexdigest()
        if conn.execute(
            select(credentials.c.token_id).where(credentials.c.proof_sha256 == proof)
        ).first():
            raise Unauthenticated("this token request was used already; sign a new one")
        return _store_token(conn, node, party_id, row.key_id, "proof of possession", proof)


#: how long a checked token is trusted without asking the database again. A revocation on
#: this process takes effect at once (the entry is dropped); on other worker processes of the
#: same node within this many seconds.
AUTH_CACHE_SECONDS = 5.0
_AUTH_CACHE_MAX = 10_000


def _cache_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # the secret itself is never a key


def cached_actor(node: Node, token: str) -> Actor | None:
    """The actor of a token checked less than :data:`AUTH_CACHE_SECONDS` ago, else None."""
    hit = node.auth_cache.get(_cache_key(token))
    if hit is None:
        return None
    checked, actor, expires_at = hit
    if time.monotonic() - checked > AUTH_CACHE_SECONDS or (
        expires_at is not None and expires_at < node.now()
    ):
        node.auth_cache.pop(_cache_key(token), None)
        return None
    return actor  # type: ignore[no-any-return]


def authenticate(node: Node, token: str) -> Actor:
    cached = cached_actor(node, token)
    if cached is not None:
        return cached
    token_id, secret = parse_token(token)
    with node.db.read() as conn:
        row = conn.execute(
            select(credentials, parties.c.role, parties.c.country, parties.c.public_key)
            .join(parties, parties.c.id == credentials.c.party_id)
            .where(credentials.c.token_id == token_id)
        ).first()
    if row is None or not check_secret(secret, row.secret_hash):
        raise Unauthenticated("bearer token is not valid")
    if row.revoked_at is not None:
        raise Unauthenticated("bearer token was revoked")
    if row.expires_at is not None and row.expires_at < utc_timestamp(node.now()):
        raise Unauthenticated("bearer token has expired")
    actor = Actor(
        party_id=row.party_id,
        role=PartyRole(row.role),
        country=row.country,
        token_id=token_id,
        key_id=row.key_id,
        public_key=row.public_key,
    )
    if len(node.auth_cache) >= _AUTH_CACHE_MAX:
        node.auth_cache.clear()
    expires = None if row.expires_at is None else parse_utc_timestamp(row.expires_at)
    node.auth_cache[_cache_key(token)] = (time.monotonic(), actor, expires)
    return actor


def _token_out(row: Any) -> dict[str, Any]:
    return {
        "token_id": row.token_id,
        "party_id": row.party_id,
        "label": row.label,
        "issued_at": row.issued_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }


def list_tokens(
    node: Node, actor: Actor, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    keyset = Keyset(credentials.c.token_id)
    q = keyset.apply(select(credentials), limit, cursor)
    if actor.role is not PartyRole.NODE_ADMIN:
        q = q.where(credentials.c.party_id == actor.party_id)
    with node.db.read() as conn:
        rows, nxt = keyset.page(conn.execute(q).all(), limit)
    return Page([_token_out(r) for r in rows], nxt)


def revoke_token(node: Node, actor: Actor, token_id: str) -> dict[str, Any]:
    with node.db.write() as conn:
        row = conn.execute(select(credentials).where(credentials.c.token_id == token_id)).first()
        if row is None or (
            row.party_id != actor.party_id and actor.role is not PartyRole.NODE_ADMIN
        ):
            if row is not None:
                raise Forbidden("a party may revoke only its own tokens")
            raise NotFound(f"token {token_id} does not exist")
        for key, (_, cached, _) in list(node.auth_cache.items()):
            if cached.token_id == token_id:
                node.auth_cache.pop(key, None)
        if row.revoked_at is None:
            conn.execute(
                update(credentials)
                .where(credentials.c.token_id == token_id)
                .values(revoked_at=utc_timestamp(node.now()))
            )
        row = conn.execute(select(credentials).where(credentials.c.token_id == token_id)).one()
    return _token_out(row)
