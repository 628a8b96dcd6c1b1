"""Shared fixtures: a fresh node per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from metrocloud.api.app import create_app
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.parties import PartyRole
from metrocloud.domain.types import ChecksumAlgorithm, SoftwareIdentification
from metrocloud.services import certificates as certs
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.database import Database
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

from ._pg import PG_URL, pooled_schema

# Property tests assert behaviour, never speed: no per-example deadline and no "too slow"
# health check, which a loaded 2-core CI machine would otherwise trip at random.
hypothesis_settings.register_profile(
    "metrocloud", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("metrocloud")


@dataclass(frozen=True)
class DbTarget:
    kind: str
    url: str | None
    schema: str | None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_target(request: pytest.FixtureRequest) -> Iterator[DbTarget]:
    """The database under test: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield DbTarget("sqlite", None, None)
    else:
        with pooled_schema() as schema:
            yield DbTarget("postgresql", PG_URL, schema)


@pytest.fixture
def settings(tmp_path: Path, db_target: DbTarget) -> Settings:
    return Settings(
        data_dir=tmp_path / "node", db=db_target.url, db_schema=db_target.schema, country="DE"
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry database at the newest revision (the product's migrations, run once per
    test process), copied for each test's node: migrating a new SQLite file costs 0.4 s."""
    path = tmp_path_factory.mktemp("template") / "registry.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


@pytest.fixture
def node(settings: Settings, db_target: DbTarget, sqlite_template: Path) -> Iterator[Node]:
    if db_target.kind == "sqlite":
        target = Path(str(make_url(settings.database_url()).database))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sqlite_template, target)
    n = Node.open(settings)
    yield n
    n.db.dispose()


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    with TestClient(create_app(node), raise_server_exceptions=False) as c:
        yield c


def software(version: str = "1.0.0", name: str = "FW") -> SoftwareIdentification:
    import hashlib

    return SoftwareIdentification(
        name=name,
        version=version,
        algorithm=ChecksumAlgorithm.SHA256,
        checksum=hashlib.sha256(f"{name}{version}".encode()).hexdigest(),
    )


@dataclass
class Member:
    party: dict[str, Any]
    token: str
    key: PrivateKey

    @property
    def id(self) -> str:
        return str(self.party["id"])

    @property
    def actor(self) -> Actor:
        return Actor(
            party_id=self.id,
            role=PartyRole(self.party["role"]),
            country=self.party["country"],
            public_key=self.party["public_key"],
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    """Two of each party role, so every test can try own and foreign records."""

    node: Node
    members: dict[str, Member] = field(default_factory=dict)
    _nb_counter: int = 100

    def admit(self, name: str, role: PartyRole) -> Member:
        key = PrivateKey.generate(KeyAlgorithm.ED25519)
        nb = None
        if role is PartyRole.NOTIFIED_BODY:
            self._nb_counter += 1
            nb = f"{self._nb_counter:04d}"
        party, _ = pty.admit_party(
            self.node,
            None,
            name=name,
            role=role,
            nb_number=nb,
            public_key=key.public_key.to_spki_b64(),
        )
        cred = pty.issue_credential(self.node, None, party["id"])
        m = Member(party, cred.token, key)
        self.members[name] = m
        return m

    def __getattr__(self, name: str) -> Member:
        try:
            return self.__dict__["members"][name]
        except KeyError:
            raise AttributeError(name) from None

    def certificate(
        self,
        nb: Member,
        holder: Member,
        number: str | None = None,
        category: InstrumentCategory = InstrumentCategory.MI_003,
        accuracy: str = "B",
    ) -> dict[str, Any]:
        draft = certs.CertificateDraft(
            number=number
            or f"DE-{nb.party['nb_number']}-{len(self.node.now().isoformat())}-"
            f"{PrivateKey.generate().key_id[:8]}",
            holder_id=holder.id,
            category=category,
            model="Test meter",
            accuracy_class=accuracy,
            software=(software("1.0.0"), software("1.1.0")),
        )
        cert, _ = certs.issue_certificate(self.node, nb.actor, draft)
        return cert

    def instruments(
        self, manufacturer: Member, cert: dict[str, Any], n: int = 3, prefix: str = "SN"
    ) -> list[dict[str, Any]]:
        drafts = [
            inst.InstrumentDraft(
                serial=f"{prefix}{i:06d}",
                certificate_id=cert["id"],
                region="DE21",
                device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
            )
            for i in range(n)
        ]
        refs, _ = inst.register_instruments(self.node, manufacturer.actor, drafts)
        return refs


@pytest.fixture
def world(node: Node) -> World:
    w = World(node)
    for name, role in (
        ("admin", PartyRole.NODE_ADMIN),
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("nb2", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("man2", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("op2", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
        ("auth2", PartyRole.AUTHORITY),
    ):
        w.admit(name, role)
    return w


@pytest.fixture(autouse=True, scope="session")
def _wide_cli_console() -> Iterator[None]:
    """The CLI's rich consoles measure the terminal once, when they are created (and a
    dumb or absent terminal is 80 columns, whatever COLUMNS says): tests see a wide one, so
    that tables do not fold the ids and dates they assert on."""
    from metrocloud.cli._common import err, out

    saved = out._width, err._width
    out._width = err._width = 250
    yield
    out._width, err._width = saved
