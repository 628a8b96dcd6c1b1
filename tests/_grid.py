"""Several nodes of one grid in one process (tests of services/federation and api/routes/grid).

Each node has its own database (SQLite file, or its own PostgreSQL schema), its own key and
country; one anchor admits them all; :class:`LocalTransport` carries their signed requests
into each other's apps. ``sync`` runs delivery and witnessing rounds until nothing moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from metrocloud.api.grid_local import LocalTransport
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.identity import admit_node
from metrocloud.services import certificates as certs
from metrocloud.services import federation as fed
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

from ._pg import PG_URL, fresh_schema
from .conftest import DbTarget, Member, software


@dataclass
class Grid:
    nodes: dict[str, Node]
    transport: LocalTransport
    anchor: PrivateKey
    members: dict[str, dict[str, Member]] = field(default_factory=dict)
    _nb: int = 200

    def url(self, country: str) -> str:
        return f"http://{country.lower()}.grid.test"

    def admission(self, country: str) -> dict[str, Any]:
        node = self.nodes[country]
        return admit_node(
            self.anchor,
            public_key=node.key.public_key,
            country=country,
            base_url=self.url(country),
            now=datetime.now(UTC),
        ).to_json()

    def admit(self, country: str, name: str, role: PartyRole) -> Member:
        node = self.nodes[country]
        key = PrivateKey.generate(KeyAlgorithm.ED25519)
        nb = None
        if role is PartyRole.NOTIFIED_BODY:
            self._nb += 1
            nb = f"{self._nb:04d}"
        party, _ = pty.admit_party(
            node, None, name=name, role=role, nb_number=nb, public_key=key.public_key.to_spki_b64()
        )
        cred = pty.issue_credential(node, None, party["id"])
        m = Member(party, cred.token, key)
        self.members.setdefault(country, {})[name] = m
        return m

    def certificate(self, country: str, nb: Member, holder: Member, number: str) -> dict[str, Any]:
        draft = certs.CertificateDraft(
            number=number,
            holder_id=holder.id,
            category=InstrumentCategory.MI_003,
            model=f"Meter {number}",
            accuracy_class="B",
            software=(software("1.0.0"),),
        )
        cert, _ = certs.issue_certificate(self.nodes[country], nb.actor, draft)
        return cert

    def instruments(
        self, country: str, man: Member, cert: dict[str, Any], n: int, prefix: str
    ) -> list[dict[str, Any]]:
        drafts = [
            inst.InstrumentDraft(
                serial=f"{prefix}{i:05d}",
                certificate_id=cert["id"],
                region=f"{country}1",
                device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
            )
            for i in range(n)
        ]
        refs, _ = inst.register_instruments(self.nodes[country], man.actor, drafts)
        return refs

    def connect(self, country: str) -> None:
        """Peer ``country``'s node with every other node (both ways)."""
        for c, node in self.nodes.items():
            if c != country:
                fed.add_peer(node, self.admission(country))
                fed.add_peer(self.nodes[country], self.admission(c))

    def sync(self, rounds: int = 3) -> list[dict[str, Any]]:
        """Delivery and witnessing on every node, ``rounds`` times."""
        return [fed.sync(n) for _ in range(rounds) for n in self.nodes.values()]


@contextmanager
def grid_of(
    tmp_path: Path,
    db: DbTarget,
    countries: tuple[str, ...] = ("DE", "FR", "NL"),
    *,
    late: tuple[str, ...] = (),
    **settings: Any,
) -> Iterator[Grid]:
    """Nodes of ``countries``, joined under one anchor, each the others' peer - except the
    ``late`` ones, which join but are peered only by :meth:`Grid.connect`."""
    with ExitStack() as stack:
        nodes = {}
        for c in countries:
            schema = stack.enter_context(fresh_schema()) if db.kind == "postgresql" else None
            s = Settings(
                data_dir=tmp_path / c.lower(),
                db=PG_URL if schema else None,
                db_schema=schema,
                country=c,
                grid_retry_base_s=0.001,
                grid_retry_max_s=0.001,
                **settings,
            )
            node = Node.open(s)
            stack.callback(node.db.dispose)
            nodes[c] = node
        transport = LocalTransport()
        stack.callback(transport.close)
        grid = Grid(nodes=nodes, transport=transport, anchor=PrivateKey.generate())
        for c, node in nodes.items():
            transport.add(grid.url(c), node)
            fed.set_transport(node, transport)
            stack.callback(fed.stop_grid, node)
        for c, node in nodes.items():
            fed.join_grid(node, grid.admission(c), grid.anchor.public_key)
        for c, node in nodes.items():
            for other in nodes:
                if other != c and c not in late and other not in late:
                    fed.add_peer(node, grid.admission(other))
        yield grid
