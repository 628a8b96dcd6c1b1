"""Party encryption keys: publishing a signed X25519 key binding, looking one up
(docs/exchange.md#keys)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from metrocloud.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from metrocloud.services._exchange_common import EXCHANGE_ROLES, RULE, home, newest_key, remote
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.store.schema import parties, party_encryption_keys
from metrocloud.trust.encryption import KeyBinding
from metrocloud.trust.keys import PublicKey

__all__ = ["get_key", "local_key", "register_key"]


def _key_out(row: Any, signing_key: str | None) -> dict[str, Any]:
    return {
        "party_id": row.party_id,
        "key_id": row.key_id,
        "public_key": row.public_key,
        "created_at": row.created_at,
        "binding": KeyBinding.from_json(json.loads(row.binding)).to_json(),
        "signing_key": signing_key,
        "leaf_index": row.leaf_index,
    }


def register_key(
    node: Node, actor: Actor, binding: object, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish the caller's X25519 key: its binding, signed with its registered key, becomes
    a ``party.encryption_key`` statement. Senders seal to the newest key of a party."""
    require_role(actor, *EXCHANGE_ROLES, action="take part in confidential exchange")
    parsed = KeyBinding.from_json(binding)
    if parsed.party_id != actor.party_id:
        raise Forbidden(
            f"a party registers only its own encryption key; the binding names "
            f"{parsed.party_id}, the caller is {actor.party_id}",
            rule=RULE,
        )
    if actor.public_key is None:
        raise InvalidInput(
            f"{actor.party_id} has no registered signing key to check the binding with; the "
            "node admin admits a party with its public key",
            rule=RULE,
        )
    parsed.verify(PublicKey.from_spki_b64(actor.public_key))
    with node.db.write() as conn:
        clash = conn.execute(
            select(party_encryption_keys.c.party_id).where(
                party_encryption_keys.c.key_id == parsed.public_key.key_id
            )
        ).first()
        if clash is not None:
            raise Conflict(
                f"encryption key {parsed.public_key.key_id} is registered already (by "
                f"{'this party' if clash.party_id == actor.party_id else 'another party'}); "
                "generate a new key"
            )
        body = {"binding": parsed.to_json()}
        node.commit(
            conn,
            [
                node.statement(
                    kind="party.encryption_key", signer=actor.party_id, body=body, extra=extra
                )
            ],
        )
        row = conn.execute(
            select(party_encryption_keys).where(
                party_encryption_keys.c.party_id == actor.party_id,
                party_encryption_keys.c.key_id == parsed.public_key.key_id,
            )
        ).one()
    return _key_out(row, actor.public_key)


def get_key(node: Node, actor: Actor, party_id: str) -> dict[str, Any]:
    """A party's newest encryption key with the binding and the party's signing key, so the
    caller can check the binding itself. Parties homed elsewhere are asked of their node."""
    if home(party_id) != node.country:
        return remote(node).encryption_key(home(party_id), party_id)
    return local_key(node, party_id)


def local_key(node: Node, party_id: str) -> dict[str, Any]:
    """The newest encryption key of a party homed on this node (what its home node
    answers to anyone: a party here, or another node of the grid)."""
    with node.db.read() as conn:
        party = conn.execute(select(parties.c.public_key).where(parties.c.id == party_id)).first()
        if party is None:
            raise NotFound(f"party {party_id} does not exist")
        row = newest_key(conn, party_id)
    if row is None:
        raise NotFound(
            f"party {party_id} has registered no encryption key (it runs 'metrocloud exchange "
            "keygen' to create and register one)",
            rule=RULE,
        )
    return _key_out(row, party.public_key)
