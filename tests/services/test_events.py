"""Life-cycle events through the service layer: rules, relationships, details."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from metrocloud.domain.errors import Forbidden, InvalidInput, RuleViolation
from metrocloud.domain.instruments import EventKind
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services.node import Node
from tests.conftest import World, software


def _placed(world: World) -> str:
    cert = world.certificate(world.nb1, world.man1)
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    ev.record_events(
        world.node,
        world.man1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.PLACED_ON_MARKET)],
    )
    return iid


def test_only_the_assigned_operator_acts_once_there_is_one(node: Node, world: World) -> None:
    iid = _placed(world)
    ev.record_events(
        node, world.op1.actor, [ev.EventDraft(instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE)]
    )
    with pytest.raises(Forbidden, match="only its manufacturer, its operator"):
        ev.record_events(
            node,
            world.op2.actor,
            [
                ev.EventDraft(
                    instrument_id=iid, kind=EventKind.RELOCATED, details={"region": "DE30"}
                )
            ],
        )
    out = ev.record_events(
        node,
        world.op1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.RELOCATED, details={"region": "DE30"})],
    )
    assert out[0]["state_after"] == "in_service"
    assert inst.get_instrument(node, world.auth1.actor, iid)["region"] == "DE30"


def test_a_batch_is_all_or_nothing(node: Node, world: World) -> None:
    iid = _placed(world)
    with pytest.raises(RuleViolation):
        ev.record_events(
            node,
            world.op1.actor,
            [
                ev.EventDraft(instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE),
                ev.EventDraft(instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE),
            ],
        )
    got = inst.get_instrument(node, world.man1.actor, iid)
    assert got["state"] == "placed_on_market" and got["operator_id"] is None


def test_future_events_are_refused(node: Node, world: World) -> None:
    iid = _placed(world)
    later = datetime.now(UTC) + timedelta(days=2)
    with pytest.raises(InvalidInput, match="in the future"):
        ev.record_events(
            node,
            world.man1.actor,
            [ev.EventDraft(instrument_id=iid, kind=EventKind.PARAMETER_CHANGED, occurred_at=later)],
        )


def test_software_update_records_whether_it_is_approved(node: Node, world: World) -> None:
    iid = _placed(world)
    approved = software("1.0.0").as_dict()
    rogue = software("6.6.6", name="ROGUE").as_dict()
    ev.record_events(
        node,
        world.man1.actor,
        [
            ev.EventDraft(
                instrument_id=iid, kind=EventKind.SOFTWARE_UPDATED, details={"software": approved}
            ),
            ev.EventDraft(
                instrument_id=iid, kind=EventKind.SOFTWARE_UPDATED, details={"software": rogue}
            ),
        ],
    )
    page = ev.list_events(node, world.auth1.actor, iid)
    flags = [e["details"].get("approved") for e in page.items if e["kind"] == "software_updated"]
    assert flags == [True, False]
    assert inst.get_instrument(node, world.man1.actor, iid)["software"] == rogue


def test_relocation_needs_a_region_and_verification_a_date(node: Node, world: World) -> None:
    iid = _placed(world)
    ev.record_events(
        node, world.op1.actor, [ev.EventDraft(instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE)]
    )
    with pytest.raises(InvalidInput, match=r"details\.region"):
        ev.record_events(
            node, world.op1.actor, [ev.EventDraft(instrument_id=iid, kind=EventKind.RELOCATED)]
        )
    with pytest.raises(InvalidInput, match="verified_until"):
        ev.record_events(
            node, world.auth1.actor, [ev.EventDraft(instrument_id=iid, kind=EventKind.VERIFIED)]
        )
