"""A realistic demo population for one node (``metrocloud demo``).

Three notified bodies, ten manufacturers, five operators, two authorities; twenty EU-type
examination certificates across electricity, gas, water, heat, fuel dispensers, scales and
EV charging; 10,000 instruments with device keys and life-cycle histories (placed on the
market, put into service, verified, relocated, repaired, updated, out of service,
decommissioned), one suspended and one withdrawn certificate. Deterministic for a seed.
The first certificate (an electricity meter of the first manufacturer) also approves the
reference device's software, so ``metrocloud device init`` can provision devices of that
type with the demo's manufacturer token.

With ``keys_dir``, the party of each role that gets a token keeps its keys in its own key
directory ``keys_dir/<role>/`` with its X25519 key registered at the node, and the
manufacturer has sent the notified body a technical file through the confidential exchange,
which the notified body opened and acknowledged (:mod:`metrocloud.services._demo_exchange`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from metrocloud.device import reference_software
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.errors import VerificationError
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import ChecksumAlgorithm, SoftwareIdentification
from metrocloud.services import certificates as certs
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services._demo_exchange import (
    PartyKeys,
    SeededMessage,
    admit_with_keys,
    receive_document,
    register_encryption_key,
    send_document,
    technical_file,
)
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

__all__ = ["ROLES", "DemoPopulation", "seed_demo"]

ROLES = ("node_admin", "notified_body", "manufacturer", "operator", "authority")
_GROUPS = ("admin", "nb", "man", "op", "auth")

_NBS = [
    ("PTB Physikalisch-Technische Bundesanstalt", "0102", "DE"),
    ("LNE Laboratoire national de métrologie et d'essais", "0071", "FR"),
    ("NMi Certin B.V.", "0122", "NL"),
]
_MANUFACTURERS = [
    "Elektro-Messtechnik Hansa GmbH",
    "Compteurs Bleus SA",
    "AquaMeter BV",
    "Gaswerk Instruments AG",
    "Nordic Heat Oy",
    "PumpTech Fuel Systems GmbH",
    "Balanza Precisa SL",
    "VoltCharge Technologies GmbH",
    "Itron-like Metering SE",
    "Wägetechnik Süd GmbH",
]
_OPERATORS = [
    "Stadtwerke Musterstadt",
    "Netz Nord GmbH",
    "Wasserverband Rhein",
    "TankPunkt Tankstellen GmbH",
    "Ladepark Europa GmbH",
]
_AUTHORITIES = ["Eichamt Bayern (LGL)", "Landesamt für Mess- und Eichwesen Berlin-Brandenburg"]

# (category, accuracy class, model) templates; two certificates per manufacturer
_TYPES = [
    (InstrumentCategory.MI_003, "B", "EM-340 three-phase meter"),
    (InstrumentCategory.MI_003, "A", "EM-120 single-phase meter"),
    (InstrumentCategory.MI_002, "1.5", "G4 diaphragm gas meter"),
    (InstrumentCategory.MI_001, "2", "Q3=2.5 water meter"),
    (InstrumentCategory.MI_004, "2", "ultrasonic heat meter"),
    (InstrumentCategory.MI_005, "0.5", "fuel dispenser"),
    (InstrumentCategory.NAWI, "III", "retail counter scale"),
    (InstrumentCategory.DE_EV, "A", "AC wallbox with meter"),
    (InstrumentCategory.DE_EV, "A", "DC fast charger meter"),
    (InstrumentCategory.MI_006, "XIII", "automatic catchweigher"),
]
_NUTS = ["DE11", "DE21", "DE30", "DE40", "DE60", "DE71", "DE91", "DEA1", "DEB3", "DEE0"]


@dataclass(frozen=True, kw_only=True)
class DemoPopulation:
    credentials: dict[str, dict[str, str]]
    parties: int
    certificates: int
    instruments: int
    events: int
    exchange: SeededMessage | None = None


def _software(name: str, version: str) -> SoftwareIdentification:
    digest = hashlib.sha256(f"{name} {version}".encode()).hexdigest()
    return SoftwareIdentification(
        name=name, version=version, algorithm=ChecksumAlgorithm.SHA256, checksum=digest
    )


@dataclass
class _Seeder:
    node: Node
    rng: random.Random
    step: Callable[[str, int, int], None]
    keys_dir: Path | None = None
    parties: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, PartyKeys] = field(default_factory=dict)
    batches: dict[str, tuple[dict[str, Any], list[ev.EventDraft]]] = field(default_factory=dict)
    events: int = 0

    def admit(
        self,
        group: str,
        name: str,
        role: PartyRole,
        nb: str | None = None,
        country: str | None = None,
    ) -> dict[str, Any]:
        if self.keys_dir is not None and group not in self.parties:  # the one with a token
            role_dir = self.keys_dir / ROLES[_GROUPS.index(group)]
            party, keys = admit_with_keys(
                self.node, role_dir, name=name, role=role, nb_number=nb, country=country
            )
            self.keys[group] = register_encryption_key(self.node, party, keys)
            self.parties.setdefault(group, []).append(party)
            return party
        key = PrivateKey.generate(KeyAlgorithm.ED25519)
        party, _ = pty.admit_party(
            self.node,
            None,
            name=name,
            role=role,
            nb_number=nb,
            country=country,
            public_key=key.public_key.to_spki_b64(),
        )
        self.parties.setdefault(group, []).append(party)
        return party

    def seed_parties(self) -> None:
        self.admit("admin", "Node operator (member-state authority IT)", PartyRole.NODE_ADMIN)
        for n, nb, c in _NBS:
            self.admit("nb", n, PartyRole.NOTIFIED_BODY, nb, c)
        for n in _MANUFACTURERS:
            self.admit("man", n, PartyRole.MANUFACTURER)
        for n in _OPERATORS:
            self.admit("op", n, PartyRole.OPERATOR)
        for n in _AUTHORITIES:
            self.admit("auth", n, PartyRole.AUTHORITY)
        self.step("parties", 1, 1)

    def seed_certificates(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        mans, nbs = self.parties["man"], self.parties["nb"]
        today = self.node.now().date()
        out = []
        for i in range(20):
            man = mans[i % len(mans)]
            cat, acc, model = _TYPES[(i + i // len(mans)) % len(_TYPES)]
            nb = nbs[i % len(nbs)]
            sw_name = f"{model.split()[0]}-FW"
            software: tuple[SoftwareIdentification, ...] = (
                _software(sw_name, "1.0.0"),
                _software(sw_name, "1.1.0"),
            )
            if i == 0:  # the reference device (metrocloud device init) runs on this type
                software += (reference_software().identification,)
            issued = today - timedelta(days=self.rng.randint(200, 3000))
            draft = certs.CertificateDraft(
                number=f"{nb['country']}-{nb['nb_number']}-{issued.year % 100:02d}-{i + 1:04d}",
                holder_id=man["id"],
                category=cat,
                model=model,
                accuracy_class=acc,
                software=software,
                module=ConformityModule.B,
                issued_on=issued,
                valid_until=issued.replace(year=issued.year + 10),
                rated_conditions={"temperature": "-25 °C .. +55 °C", "environment": "M1/E2"},
            )
            cert, _ = certs.issue_certificate(self.node, Actor.of_party(nb), draft)
            out.append((cert, man))
        self.step("certificates", 20, 20)
        return out

    def seed_instruments(
        self, cert_rows: list[tuple[dict[str, Any], dict[str, Any]]], count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        per_cert = max(1, count // len(cert_rows))
        created: list[tuple[str, dict[str, Any]]] = []
        total = 0
        for k, (cert, man) in enumerate(cert_rows):
            n_here = per_cert if k < len(cert_rows) - 1 else count - total
            prefix = "".join(ch for ch in cert["model"] if ch.isalnum())[:3].upper()
            drafts = [
                inst.InstrumentDraft(
                    serial=f"{prefix}{k:02d}{n:07d}",
                    certificate_id=cert["id"],
                    region=self.rng.choice(_NUTS),
                    device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
                )
                for n in range(n_here)
            ]
            refs, _ = inst.register_instruments(self.node, Actor.of_party(man), drafts)
            created.extend((r["id"], man) for r in refs)
            total += n_here
            self.step("instruments", total, count)
            decl.declare_conformity(
                self.node,
                Actor.of_party(man),
                certificate_id=cert["id"],
                instrument_ids=[r["id"] for r in refs][:2000],
                module=ConformityModule.D,
            )
        return created

    def add(self, party: dict[str, Any], draft: ev.EventDraft) -> None:
        self.batches.setdefault(party["id"], (party, []))[1].append(draft)

    def flush(self) -> None:
        for party, drafts in self.batches.values():
            for start in range(0, len(drafts), 2000):
                chunk = drafts[start : start + 2000]
                self.events += len(ev.record_events(self.node, Actor.of_party(party), chunk))
        self.batches.clear()
        self.step("events", self.events, self.events)

    def seed_life_cycles(self, created: list[tuple[str, dict[str, Any]]]) -> None:
        rng, ops, auths = self.rng, self.parties["op"], self.parties["auth"]
        today = self.node.now().date()
        for iid, man in created:
            self.add(man, ev.EventDraft(instrument_id=iid, kind=EventKind.PLACED_ON_MARKET))
        self.flush()
        in_service: list[tuple[str, dict[str, Any]]] = []
        for iid, _man in created:
            if rng.random() < 0.9:
                op = rng.choice(ops)
                self.add(
                    op,
                    ev.EventDraft(
                        instrument_id=iid,
                        kind=EventKind.PUT_INTO_SERVICE,
                        details={"region": rng.choice(_NUTS)},
                    ),
                )
                in_service.append((iid, op))
        self.flush()
        for iid, op in in_service:
            self.add_later_event(iid, op, rng.choice(auths), rng.random(), today)
        self.flush()
        for iid, op in in_service[: len(in_service) // 50]:
            self.add(op, ev.EventDraft(instrument_id=iid, kind=EventKind.DECOMMISSIONED))
        self.flush()

    def add_later_event(
        self, iid: str, op: dict[str, Any], auth: dict[str, Any], r: float, today: date
    ) -> None:
        if r < 0.6:
            until = today + timedelta(days=self.rng.randint(-200, 8 * 365))
            self.add(
                auth,
                ev.EventDraft(
                    instrument_id=iid,
                    kind=EventKind.VERIFIED,
                    details={"verified_until": until.isoformat()},
                ),
            )
        elif r < 0.63:
            self.add(
                auth,
                ev.EventDraft(
                    instrument_id=iid,
                    kind=EventKind.VERIFICATION_FAILED,
                    details={"reason": "error outside the in-service MPE"},
                ),
            )
        elif r < 0.68:
            self.add(
                op,
                ev.EventDraft(
                    instrument_id=iid,
                    kind=EventKind.RELOCATED,
                    details={"region": self.rng.choice(_NUTS)},
                ),
            )
        elif r < 0.70:
            self.add(op, ev.EventDraft(instrument_id=iid, kind=EventKind.TAKEN_OUT_OF_SERVICE))
        elif r < 0.71:
            self.add(
                op,
                ev.EventDraft(
                    instrument_id=iid,
                    kind=EventKind.SEAL_BROKEN,
                    details={"note": "seal found broken at meter reading"},
                ),
            )

    def change_some_certificates(
        self,
        cert_rows: list[tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        nbs = {n["id"]: n for n in self.parties["nb"]}
        for (cert, _man), action in (
            (cert_rows[-1], CertificateAction.SUSPEND),
            (cert_rows[-2], CertificateAction.WITHDRAW),
        ):
            certs.change_certificate(
                self.node,
                Actor.of_party(nbs[cert["notified_body_id"]]),
                cert["id"],
                action,
                reason="demo: non-conformity found during surveillance",
            )

    def exchange(self) -> SeededMessage | None:
        """The manufacturer's technical file to the notified body, opened and acknowledged."""
        if not self.keys:
            return None
        man, nb = self.parties["man"][0], self.parties["nb"][0]
        document = technical_file(
            manufacturer=man["name"],
            notified_body=f"{nb['name']} (NB {nb['nb_number']})",
            model="EM-580 three-phase electricity meter, class B",
            reference=f"TD-{self.node.country}-{self.rng.getrandbits(64):016X}",
            issued=self.node.now().date().isoformat(),
        )
        media = "application/pdf"
        mid = send_document(
            self.node, man, self.keys["man"], [nb["id"]], document, content_type=media
        )
        opened, _ = receive_document(self.node, nb, self.keys["nb"], mid)
        if opened != document:
            raise VerificationError(f"{mid} opened to other bytes than were sent")
        self.step("confidential exchange", 1, 1)
        return SeededMessage(
            message_id=mid,
            sender_id=man["id"],
            recipient_ids=(nb["id"],),
            content_type=media,
            document=document,
        )

    def credentials(self) -> dict[str, dict[str, str]]:
        creds: dict[str, dict[str, str]] = {}
        for role, group in zip(ROLES, _GROUPS, strict=True):
            party = self.parties[group][0]
            c = pty.issue_credential(self.node, None, party["id"], label="demo")
            creds[role] = {"party_id": party["id"], "token": c.token}
            if group in self.keys:
                creds[role]["keys"] = str(self.keys[group].directory)
        return creds


def seed_demo(
    node: Node,
    *,
    instruments: int = 10_000,
    seed: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    keys_dir: Path | None = None,
) -> DemoPopulation:
    """Seed ``node`` (which must be empty) and return one credential per role; with
    ``keys_dir``, each of them with its key directory there, and one exchange made."""
    s = _Seeder(
        node, random.Random(seed), progress or (lambda _what, _done, _total: None), keys_dir
    )
    s.seed_parties()
    cert_rows = s.seed_certificates()
    created = s.seed_instruments(cert_rows, instruments)
    s.seed_life_cycles(created)
    s.change_some_certificates(cert_rows)
    exchange = s.exchange()
    return DemoPopulation(
        exchange=exchange,
        credentials=s.credentials(),
        parties=sum(len(v) for v in s.parties.values()),
        certificates=len(cert_rows),
        instruments=len(created),
        events=s.events,
    )
