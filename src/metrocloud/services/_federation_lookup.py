"""Cross-border look-up: an instrument is answered for by its home node, under home rules.

Instrument ids name their home country (``ins-FR-...``). A node asked for an instrument of
another country routes the question to that country's node (query ``instrument``) with the
caller's identity - party id, role, member state - signed by the asking node. The home node
checks that the asking node speaks for one of its own parties (the party id names the
asking node's country) and that the role matches what it knows of the party, applies its
role rules to that caller, and records the read in its access log, so the instrument's
owners see who read it from abroad. The answer names the ``home_node``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import select

from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.errors import PeerRefused
from metrocloud.grid.peers import Peer, home_of, self_node
from metrocloud.services import instruments as inst
from metrocloud.services._federation_core import call_peer, on_query
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.store.ids import parse_id
from metrocloud.store.schema import parties

__all__ = ["INSTRUMENT_QUERY", "caller_of", "home_node_for", "lookup_instrument", "refusal"]

INSTRUMENT_QUERY = "instrument"
_RULE = "metrocloud grid look-up (docs/grid.md#look-up)"


def home_node_for(node: Node, instrument_id: str) -> Peer | None:
    """The peer that is home to ``instrument_id``; None when this node answers itself (its
    own country, a malformed id, or no grid joined)."""
    try:
        _, country = parse_id(instrument_id, "ins")
    except InvalidInput:
        return None
    if country == node.country:
        return None
    with node.db.read() as conn:
        if self_node(conn) is None:
            return None
        home = home_of(conn, country)
    if home is None or home.is_self:
        raise NotFound(
            f"instrument {instrument_id} is homed in {country}, and no node of this grid serves "
            f"{country}",
            rule=_RULE,
        )
    return home


def refusal(exc: PeerRefused, what: str) -> Exception:
    """The home node's refusal as this node's error (same status class)."""
    if exc.status == 403:
        return Forbidden(f"{what}: {exc}", rule=_RULE)
    if exc.status == 404:
        return NotFound(f"{what}: {exc}", rule=_RULE)
    return InvalidInput(f"{what}: {exc}", rule=_RULE)


def caller_of(actor: Actor) -> dict[str, str]:
    return {"party_id": actor.party_id, "role": actor.role.value, "country": actor.country}


def lookup_instrument(node: Node, actor: Actor, instrument_id: str) -> dict[str, Any] | None:
    """The instrument from its home node, with ``home_node``; None if it is homed here."""
    home = home_node_for(node, instrument_id)
    if home is None:
        return None
    try:
        answer = call_peer(
            node,
            home,
            INSTRUMENT_QUERY,
            {"instrument_id": instrument_id, "caller": caller_of(actor)},
        )
    except PeerRefused as exc:
        raise refusal(exc, f"home node {home.node_id} ({home.country})") from None
    out: dict[str, Any] = dict(answer["instrument"])
    out["home_node"] = home.node_id
    return out


def remote_actor(node: Node, sender: Peer, caller: Any) -> Actor:
    """The caller a peer speaks for, checked: its own party, with the role known here."""
    if not isinstance(caller, dict) or set(caller) != {"party_id", "role", "country"}:
        raise InvalidInput("a grid query names its caller as {party_id, role, country}")
    try:
        role = PartyRole(caller["role"])
        _, home = parse_id(str(caller["party_id"]), "pty")
    except (ValueError, InvalidInput) as exc:
        raise InvalidInput(f"caller of the query: {exc}") from None
    if home != sender.country:
        raise Forbidden(
            f"node {sender.node_id} ({sender.country}) asked for party {caller['party_id']}, a "
            f"party of {home}; a node speaks only for the parties it admitted",
            rule=_RULE,
        )
    with node.db.read() as conn:
        known = conn.execute(
            select(parties.c.role).where(parties.c.id == caller["party_id"])
        ).scalar_one_or_none()
    if known is not None and known != role.value:
        raise Forbidden(
            f"party {caller['party_id']} is {known} in the grid's directory, not {role.value}",
            rule=_RULE,
        )
    return Actor(party_id=caller["party_id"], role=role, country=str(caller["country"]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _answer_instrument(node: Node, sender: Peer, args: Mapping[str, Any]) -> dict[str, Any]:
    actor = remote_actor(node, sender, args.get("caller"))
    instrument_id = args.get("instrument_id")
    if not isinstance(instrument_id, str):
        raise InvalidInput("an instrument query names the instrument_id")
    found = inst.get_instrument(node, actor, instrument_id)  # role rules + access log
    return {"instrument": _jsonable(found), "home_node": node.node_id}


on_query(INSTRUMENT_QUERY, _answer_instrument)
