"""A fleet for the twin: a certificate of every seeded category, instruments with histories."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.instruments import EventKind
from metrocloud.services import certificates as certs
from metrocloud.services import declarations as decl
from metrocloud.services import instruments as inst
from metrocloud.services.events import EventDraft, record_events
from metrocloud.services.node import Node
from metrocloud.trust.keys import PrivateKey
from tests.conftest import World, software

#: every category services/demo.py seeds, with an accuracy class that exists for it
CATEGORIES: dict[InstrumentCategory, str] = {
    InstrumentCategory.MI_001: "2",
    InstrumentCategory.MI_002: "1.5",
    InstrumentCategory.MI_003: "B",
    InstrumentCategory.MI_004: "2",
    InstrumentCategory.MI_005: "0.5",
    InstrumentCategory.MI_006: "XIII",
    InstrumentCategory.NAWI: "III",
    InstrumentCategory.DE_EV: "A",
}


@dataclass
class Fleet:
    world: World
    certificates: list[dict[str, Any]] = field(default_factory=list)
    instruments: list[str] = field(default_factory=list)
    #: instrument id -> what its history ends with, for the content checks
    story: dict[str, str] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        return self.world.node


def register(world: World, cert: dict[str, Any], serials: list[str]) -> list[str]:
    drafts = [
        inst.InstrumentDraft(
            serial=s,
            certificate_id=cert["id"],
            region="DE21",
            device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
        )
        for s in serials
    ]
    refs, _ = inst.register_instruments(world.node, world.man1.actor, drafts)
    return [r["id"] for r in refs]


@pytest.fixture
def fleet(world: World) -> Fleet:
    """Per category one certificate and two instruments, each with a different history.

    The first instrument of a category is verified (or, for every other category, fails its
    verification); the second is relocated, gets a software update, a broken seal and a
    note. Half the instruments are covered by a module D declaration; one certificate is
    revised and another suspended.
    """
    f = Fleet(world)
    w = world
    events: dict[str, list[EventDraft]] = {"man1": [], "op1": [], "auth1": []}
    for n, (category, accuracy) in enumerate(CATEGORIES.items()):
        cert = w.certificate(w.nb1, w.man1, category=category, accuracy=accuracy)
        f.certificates.append(cert)
        first, second = register(w, cert, [f"{category.value[:2]}{n}.A/1", f"{category}-{n}-B"])
        f.instruments += [first, second]
        decl.declare_conformity(
            w.node,
            w.man1.actor,
            certificate_id=cert["id"],
            instrument_ids=[first],
            module=ConformityModule.D,
            document_sha256=hashlib.sha256(cert["id"].encode()).hexdigest(),
        )
        for iid in (first, second):
            events["man1"].append(EventDraft(instrument_id=iid, kind=EventKind.PLACED_ON_MARKET))
            events["op1"].append(
                EventDraft(
                    instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE, details={"region": "DE30"}
                )
            )
        if n % 2 == 0:
            events["auth1"].append(
                EventDraft(
                    instrument_id=first,
                    kind=EventKind.VERIFIED,
                    details={"verified_until": "2031-12-31"},
                )
            )
            f.story[first] = "verified"
        else:
            events["auth1"].append(
                EventDraft(
                    instrument_id=first,
                    kind=EventKind.VERIFICATION_FAILED,
                    details={"reason": "error outside the in-service MPE"},
                )
            )
            f.story[first] = "verification_failed"
        events["op1"] += [
            EventDraft(instrument_id=second, kind=EventKind.RELOCATED, details={"region": "DE40"}),
            EventDraft(
                instrument_id=second,
                kind=EventKind.SOFTWARE_UPDATED,
                details={"software": software("1.1.0").as_dict()},
            ),
            EventDraft(
                instrument_id=second,
                kind=EventKind.SEAL_BROKEN,
                details={"note": "seal found broken", "ticket": 4711},
            ),
        ]
        f.story[second] = "seal_broken"
    for who in ("man1", "op1", "auth1"):
        record_events(w.node, getattr(w, who).actor, events[who])
    certs.change_certificate(
        w.node,
        w.nb1.actor,
        f.certificates[0]["id"],
        CertificateAction.REVISE,
        reason="new software approved",
        changes={"rated_conditions": {"temperature": "-25 °C .. +55 °C", "environment": "M1/E2"}},
    )
    certs.change_certificate(
        w.node,
        w.nb1.actor,
        f.certificates[1]["id"],
        CertificateAction.SUSPEND,
        reason="non-conformity found during surveillance",
    )
    return f
