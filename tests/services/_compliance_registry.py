"""A registry with one instrument failing each compliance criterion, and one passing all.

Shared by the service, API and CLI tests of e-compliance reports. Every record is made the
way the platform makes it: signed statements through the services, intake flags through
the measurement intake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.instruments import EventKind
from metrocloud.services import certificates as certs
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services import measurements
from metrocloud.services.compliance import Criterion
from metrocloud.trust.keys import PrivateKey
from tests.conftest import Member, World, software
from tests.ingest.test_intake import Meter

C = Criterion
#: serial -> the criteria its instrument fails
EXPECTED: dict[str, set[Criterion]] = {
    "PASS-1": set(),
    "CERT-1": {C.CERTIFICATE_VALID},
    "SOFT-1": {C.SOFTWARE_APPROVED},
    "FLAG-1": {C.SOFTWARE_APPROVED},
    "VERI-1": {C.VERIFICATION_CURRENT},
    "DECL-1": {C.DECLARATION_PRESENT},
    "NONC-1": {C.NO_OPEN_NON_COMPLIANCE},
    "CLOSED-1": set(),
    "REG-1": set(),
}
HOSTILE_NAME = "Evil <script>alert('name')</script> & Söhne $x$"


@dataclass
class Registry:
    world: World
    ids: dict[str, str]  # serial -> instrument id
    cert_a: dict[str, Any]  # valid, nb1 -> man1
    cert_w: dict[str, Any]  # withdrawn, nb1 -> man1
    cert_b: dict[str, Any]  # valid, nb2 -> man2
    foreign: str  # man2's instrument

    @property
    def node(self) -> Any:
        return self.world.node


def _event(world: World, who: Member, iid: str, kind: EventKind, **details: Any) -> dict[str, Any]:
    return ev.record_events(
        world.node, who.actor, [ev.EventDraft(instrument_id=iid, kind=kind, details=details)]
    )[0]


def in_service(world: World, man: Member, op: Member, ids: list[str]) -> None:
    for kind, who, details in (
        (EventKind.PLACED_ON_MARKET, man, {}),
        (EventKind.PUT_INTO_SERVICE, op, {"region": "DE30"}),
    ):
        ev.record_events(
            world.node,
            who.actor,
            [ev.EventDraft(instrument_id=i, kind=kind, details=details) for i in ids],
        )


def verify(world: World, iid: str, days: int, auth: Member | None = None) -> None:
    until = world.node.now().date() + timedelta(days=days)
    _event(world, auth or world.auth1, iid, EventKind.VERIFIED, verified_until=until.isoformat())


def build(world: World) -> Registry:
    node, man1, op1, auth1 = world.node, world.man1, world.op1, world.auth1
    cert_a = world.certificate(world.nb1, man1, number="DE-A-0001")
    cert_w = world.certificate(world.nb1, man1, number="DE-W-0001")
    cert_b = world.certificate(world.nb2, world.man2, number="DE-B-0001")
    flag_key = PrivateKey.generate()
    drafts = [
        inst.InstrumentDraft(
            serial=s,
            certificate_id=cert_w["id"] if s == "CERT-1" else cert_a["id"],
            region="DE21",
            device_keys=(flag_key.public_key.to_spki_b64(),) if s == "FLAG-1" else (),
        )
        for s in EXPECTED
    ]
    refs, _ = inst.register_instruments(node, man1.actor, drafts)
    ids = {r["serial"]: r["id"] for r in refs}
    serials = [s for s in EXPECTED if s != "REG-1"]
    active = [ids[s] for s in serials]
    in_service(world, man1, op1, active)
    for s in serials:
        verify(world, ids[s], -1 if s == "VERI-1" else 365)
    # unapproved software installed (the update voids the verification: verify again)
    _event(
        world, man1, ids["SOFT-1"], EventKind.SOFTWARE_UPDATED, software=software("9.9.9").as_dict()
    )
    verify(world, ids["SOFT-1"], 365)
    # a device that reports software its certificate does not approve: flagged by the intake
    meter = Meter(ids["FLAG-1"], flag_key, software("1.0.0").checksum)
    out = measurements.submit_batches(
        node, man1.actor, [meter.batch(software="cd" * 32).wire()], "http"
    )
    assert out[0].reason == "unapproved-software", out
    _event(world, auth1, ids["NONC-1"], EventKind.NON_COMPLIANCE_FOUND, reason="seal missing")
    _event(world, auth1, ids["CLOSED-1"], EventKind.NON_COMPLIANCE_FOUND, reason="label")
    _event(world, man1, ids["CLOSED-1"], EventKind.CORRECTIVE_ACTION, action="label replaced")
    decl.declare_conformity(
        node,
        man1.actor,
        certificate_id=cert_a["id"],
        instrument_ids=[ids[s] for s in serials if s not in ("DECL-1", "CERT-1")],
        module=ConformityModule.D,
    )
    decl.declare_conformity(
        node,
        man1.actor,
        certificate_id=cert_w["id"],
        instrument_ids=[ids["CERT-1"]],
        module=ConformityModule.D,
    )
    certs.change_certificate(
        node, world.nb1.actor, cert_w["id"], CertificateAction.WITHDRAW, reason="type unsafe"
    )
    foreign = world.instruments(world.man2, cert_b, 1, prefix="B-")[0]["id"]
    return Registry(world, ids, cert_a, cert_w, cert_b, foreign)
