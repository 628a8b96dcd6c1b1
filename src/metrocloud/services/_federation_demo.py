"""The grid demo's population (``metrocloud demo --grid N``): one member state per node, and
the cross-border stories the grid exists for.

Each node gets its own national parties (a node admin, a notified body, two manufacturers,
two operators, an authority), two EU-type examination certificates of its notified body,
instruments with life cycles, and a few non-compliance notices. Then, across borders:

* the German notified body certifies a type of a French manufacturer; the French
  manufacturer registers instruments of that type on the French node;
* the Dutch authority raises a market-surveillance alert about that type;
* the German notified body withdraws one of its certificates (every notified body sees it);
* each authority records non-compliance notices on some instruments of its country; the
  notices reach every node's alert board;
* the German manufacturer sends the technical documentation of a new type, end-to-end
  encrypted, to the French notified body, which decrypts it and acknowledges it with a
  signed receipt (:mod:`metrocloud.services._demo_exchange`: the real exchange, the nodes
  store and forward ciphertext only).

The party of each role that gets a token keeps its keys in its own key directory,
``keys_dir/<country>/<role>/`` (what ``metrocloud exchange --keys`` reads), with its X25519
key registered at its node; the other parties' private keys are not kept.

``sync`` is called between the steps that depend on replication (the seeding runs with the
nodes in one process; :mod:`metrocloud.api.grid_local` carries their requests).
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.errors import VerificationError
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import ChecksumAlgorithm, SoftwareIdentification
from metrocloud.services import alerts, surveillance
from metrocloud.services import certificates as certs
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
from metrocloud.services.demo import ROLES
from metrocloud.services.node import Node
from metrocloud.trust.keys import PrivateKey

__all__ = ["NATIONAL", "GridDemo", "seed_grid_demo"]

#: per member state: notified body (name, NANDO number), manufacturers, operators, authority
NATIONAL: Mapping[str, dict[str, Any]] = {
    "DE": {
        "nb": ("PTB Physikalisch-Technische Bundesanstalt", "0102"),
        "man": ["Elektro-Messtechnik Hansa GmbH", "Gaswerk Instruments AG"],
        "op": ["Stadtwerke Musterstadt", "Ladepark Europa GmbH"],
        "auth": "Eichamt Bayern (LGL)",
    },
    "FR": {
        "nb": ("LNE Laboratoire national de métrologie et d'essais", "0071"),
        "man": ["Compteurs Bleus SA", "Balances de Lyon SAS"],
        "op": ["Régie d'électricité de Grenoble", "Stations Service du Rhône"],
        "auth": "DGE - Bureau de la métrologie",
    },
    "NL": {
        "nb": ("NMi Certin B.V.", "0122"),
        "man": ["AquaMeter BV", "Delta Weegtechniek BV"],
        "op": ["Netbeheer Holland", "Laadpunt Nederland BV"],
        "auth": "Agentschap Telecom - Metrologie",
    },
    "AT": {
        "nb": ("BEV Bundesamt für Eich- und Vermessungswesen", "0445"),
        "man": ["Alpenzähler GmbH", "Wiener Waagenbau AG"],
        "op": ["Netz Tirol", "Tankstellen Austria"],
        "auth": "Eichbehörde Wien",
    },
    "BE": {
        "nb": ("SMD Metrologische Dienst", "0493"),
        "man": ["Compteurs de Wallonie SA", "Vlaamse Meters NV"],
        "op": ["Fluvius Netbeheer", "Bornes Bruxelles"],
        "auth": "FOD Economie - Metrologie",
    },
}
_TYPES = [
    (InstrumentCategory.MI_003, "B", "three-phase electricity meter"),
    (InstrumentCategory.MI_001, "2", "Q3=2.5 water meter"),
    (InstrumentCategory.MI_002, "1.5", "G4 diaphragm gas meter"),
    (InstrumentCategory.NAWI, "III", "retail counter scale"),
]


#: the party groups of a nation, in the order of ROLES (the first party of each gets a token)
_GROUPS = ("admin", "nb", "man", "op", "auth")
_ROLE_OF = dict(zip(_GROUPS, ROLES, strict=True))
_actor = Actor.of_party


@dataclass(frozen=True, kw_only=True)
class GridDemo:
    """What the seeding hands out: per country and role ``{party_id, token, keys}`` (the
    key directory), and the confidential exchange it made."""

    credentials: dict[str, dict[str, dict[str, str]]]
    exchange: SeededMessage


def _software(name: str) -> SoftwareIdentification:
    return SoftwareIdentification(
        name=name,
        version="1.0.0",
        algorithm=ChecksumAlgorithm.SHA256,
        checksum=hashlib.sha256(name.encode()).hexdigest(),
    )


@dataclass
class _Nation:
    node: Node
    keys_dir: Path
    parties: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, PartyKeys] = field(default_factory=dict)

    def admit(self, group: str, name: str, role: PartyRole, nb: str | None = None) -> None:
        if group not in self.parties:  # the group's first party: the one with a token
            party, keys = admit_with_keys(
                self.node, self.keys_dir / _ROLE_OF[group], name=name, role=role, nb_number=nb
            )
            self.keys[group] = register_encryption_key(self.node, party, keys)
        else:
            party, _ = pty.admit_party(
                self.node,
                None,
                name=name,
                role=role,
                nb_number=nb,
                public_key=PrivateKey.generate().public_key.to_spki_b64(),
            )
        self.parties.setdefault(group, []).append(party)

    def first(self, group: str) -> dict[str, Any]:
        return self.parties[group][0]


def _certificate(node: Node, nb: dict[str, Any], holder: dict[str, Any], i: int) -> dict[str, Any]:
    cat, acc, model = _TYPES[i % len(_TYPES)]
    issued = node.now().date() - timedelta(days=400 + 30 * i)
    draft = certs.CertificateDraft(
        number=f"{nb['country']}-{nb['nb_number']}-{issued.year % 100:02d}-{i + 1:04d}",
        holder_id=holder["id"],
        category=cat,
        model=f"{model} ({holder['name'].split()[0]})",
        accuracy_class=acc,
        software=(_software(f"{model.split()[0]}-FW-{i}"),),
        module=ConformityModule.B,
        issued_on=issued,
        valid_until=issued.replace(year=issued.year + 10),
    )
    cert, _ = certs.issue_certificate(node, _actor(nb), draft)
    return cert


def _fleet(
    nation: _Nation, man: dict[str, Any], cert: dict[str, Any], n: int, rng: random.Random
) -> list[str]:
    node = nation.node
    drafts = [
        inst.InstrumentDraft(
            serial=f"{node.country}{cert['number'][-4:]}{k:05d}",
            certificate_id=cert["id"],
            region=f"{node.country}1",
            device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
        )
        for k in range(n)
    ]
    refs, _ = inst.register_instruments(node, _actor(man), drafts)
    ids = [r["id"] for r in refs]
    ev.record_events(
        node,
        _actor(man),
        [ev.EventDraft(instrument_id=i, kind=EventKind.PLACED_ON_MARKET) for i in ids],
    )
    op = rng.choice(nation.parties["op"])
    ev.record_events(
        node,
        _actor(op),
        [
            ev.EventDraft(
                instrument_id=i,
                kind=EventKind.PUT_INTO_SERVICE,
                details={"region": f"{node.country}1"},
            )
            for i in ids
        ],
    )
    return ids


def _notices(nation: _Nation, ids: list[str], share: float, rng: random.Random) -> None:
    chosen = [i for i in ids if rng.random() < share]
    if not chosen:
        return
    node = nation.node
    surveillance.notify_non_compliance(
        node,
        _actor(nation.first("auth")),
        chosen,
        finding="error outside the maximum permissible error in service",
        measures=["recalibrate or replace the instruments concerned"],
        legal_basis="MID 2014/32/EU Art. 40",
        deadline=node.now().date() + timedelta(days=60),
    )


def _exchange(sender: _Nation, recipient: _Nation, sync: Callable[[], None]) -> SeededMessage:
    """The sender's manufacturer sends a technical file to the recipient's notified body,
    which fetches, decrypts, checks and acknowledges it; the receipt travels back."""
    man, nb = sender.first("man"), recipient.first("nb")
    document = technical_file(
        manufacturer=man["name"],
        notified_body=f"{nb['name']} (NB {nb['nb_number']})",
        model=f"EM-580 three-phase electricity meter, class B ({man['name'].split()[0]})",
        reference=f"TD-{sender.node.country}-{secrets.token_hex(8).upper()}",
        issued=sender.node.now().date().isoformat(),
    )
    media = "application/pdf"
    message_id = send_document(
        sender.node, man, sender.keys["man"], [nb["id"]], document, content_type=media
    )
    sync()  # offer, pieces, completion: the ciphertext reaches the recipient's node
    opened, _receipt = receive_document(recipient.node, nb, recipient.keys["nb"], message_id)
    if opened != document:
        raise VerificationError(f"{message_id} opened to other bytes than were sent")
    sync()  # the receipt, back to the sender's node
    return SeededMessage(
        message_id=message_id,
        sender_id=man["id"],
        recipient_ids=(nb["id"],),
        content_type=media,
        document=document,
    )


def seed_grid_demo(
    nodes: Mapping[str, Node],
    sync: Callable[[], None],
    *,
    keys_dir: Path,
    per_type: int = 40,
    seed: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> GridDemo:
    """Seed every node and the cross-border stories; the parties with a token keep their
    keys in ``keys_dir/<country>/<role>/``. Returns the credentials per country."""
    step = progress or (lambda _w, _d, _t: None)
    rng = random.Random(seed)
    nations: dict[str, _Nation] = {}
    for k, (country, node) in enumerate(nodes.items()):
        n = _Nation(node, keys_dir / country)
        spec = NATIONAL[country]
        n.admit("admin", f"Node operator {country}", PartyRole.NODE_ADMIN)
        n.admit("nb", spec["nb"][0], PartyRole.NOTIFIED_BODY, spec["nb"][1])
        for name in spec["man"]:
            n.admit("man", name, PartyRole.MANUFACTURER)
        for name in spec["op"]:
            n.admit("op", name, PartyRole.OPERATOR)
        n.admit("auth", spec["auth"], PartyRole.AUTHORITY)
        nations[country] = n
        step("parties", k + 1, len(nodes))
    sync()  # the notified bodies, manufacturers and authorities are known on every node
    types: dict[str, list[dict[str, Any]]] = {}
    for k, (country, n) in enumerate(nations.items()):
        nb = n.first("nb")
        types[country] = [
            _certificate(n.node, nb, man, i) for i, man in enumerate(n.parties["man"])
        ]
        for cert, man in zip(types[country], n.parties["man"], strict=True):
            ids = _fleet(n, man, cert, per_type, rng)
            _notices(n, ids, 0.1, rng)
        step("national fleets", k + 1, len(nations))
    sync()
    countries = list(nations)
    home, abroad = countries[0], countries[1 % len(countries)]
    watcher = countries[-1]
    # a notified body certifies a foreign manufacturer's type; it is produced and registered
    # in the manufacturer's country
    foreign_man = nations[abroad].first("man")
    cross = _certificate(nations[home].node, nations[home].first("nb"), foreign_man, 7)
    sync()
    ids = _fleet(nations[abroad], foreign_man, cross, per_type, rng)
    _notices(nations[abroad], ids, 0.15, rng)
    # an authority elsewhere raises an alert about that type
    alerts.raise_alert(
        nations[watcher].node,
        _actor(nations[watcher].first("auth")),
        subject_type="certificate",
        subject_id=cross["id"],
        severity="high",
        title=f"{cross['model']}: tamper-prone seal on the terminal cover",
        description="Seals of the terminal cover can be lifted without visible traces; "
        "inspections found manipulated instruments in two regions.",
        measures=["inspect the seals of installed instruments", "report findings to the NB"],
    )
    # the notified body withdraws one of its certificates: every notified body sees it
    certs.change_certificate(
        nations[home].node,
        _actor(nations[home].first("nb")),
        types[home][-1]["id"],
        CertificateAction.WITHDRAW,
        reason="surveillance found the production no longer conforms to the type",
    )
    sync()
    step("cross-border", 1, 1)
    exchange = _exchange(nations[home], nations[abroad], sync)
    step("confidential exchange", 1, 1)
    creds: dict[str, dict[str, dict[str, str]]] = {}
    for country, n in nations.items():
        creds[country] = {}
        for role, group in zip(ROLES, _GROUPS, strict=True):
            party = n.first(group)
            c = pty.issue_credential(n.node, None, party["id"], label="demo --grid")
            creds[country][role] = {
                "party_id": party["id"],
                "token": c.token,
                "keys": str(n.keys[group].directory),
            }
    return GridDemo(credentials=creds, exchange=exchange)
