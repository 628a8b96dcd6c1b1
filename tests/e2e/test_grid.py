"""Acceptance (issue 6): a Legal Metrology Grid of three node processes on loopback.

A (DE), B (FR) and C (NL) run as ``metrocloud serve`` processes with short outbox and
witnessing intervals; a fourth node E (AT), admitted like the others, is served from this
test and shows A and C two different histories of its log. Over HTTP, with the parties'
tokens: a certificate issued on A is visible on B and C; an instrument registered on B is
found from C (``home_node``); an alert raised on C reaches A and B; with B killed (SIGKILL),
A and C go on, and B, restarted, catches up with nothing lost; E's split view is detected
and alerted; a federated statistic equals the one computed from all nodes' raw rows while
the recorded node-to-node traffic shows no raw record; a French manufacturer sends its
technical file to the German notified body with ``metrocloud exchange``, end-to-end
encrypted: the notified body decrypts it on its own node, its receipt verifies back on the
French node, and no node's files or log hold a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.instruments import EventKind
from metrocloud.domain.parties import PartyRole
from metrocloud.grid.identity import admit_node
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.services import federation as fed
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services import surveillance
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.database import sqlite_url
from metrocloud.store.schema import events, grid_traffic, instruments
from metrocloud.trust import _files
from metrocloud.trust.keys import KeyStore, PrivateKey
from metrocloud.trust.statements import parse_utc_timestamp
from tests.conftest import software
from tests.grid._forked import ForkedNode

from ._cli import cli_command, cli_env, free_port, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GRID_ENV = {
    "METROCLOUD_GRID_OUTBOX_INTERVAL_S": "0.2",
    "METROCLOUD_GRID_WITNESS_INTERVAL_S": "1",
    "METROCLOUD_GRID_RETRY_BASE_S": "0.2",
    "METROCLOUD_GRID_RETRY_MAX_S": "1",
    "METROCLOUD_GRID_MIN_GROUP_SIZE": "3",
}
DEADLINE = 40.0  # seconds any one expectation may take to come true on a loaded machine
PASSPHRASE = "e2e grid passphrase"  # of the parties' key directories (metrocloud exchange)


@dataclass
class Member:
    party_id: str
    token: str
    role: str
    country: str
    keys: Path | None = None  # the party's key directory, for metrocloud exchange

    @property
    def actor(self) -> Actor:
        return Actor(party_id=self.party_id, role=PartyRole(self.role), country=self.country)


@dataclass
class GridNode:
    country: str
    data_dir: Path
    port: int
    node_id: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self, method: str, path: str, who: str, *, json_body: Any = None, params: Any = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.members[who].token}"}
        return httpx.request(
            method,
            f"{self.url}/api/v1{path}",
            headers=headers,
            json=json_body,
            params=params,
            timeout=30,
            trust_env=False,
        )

    def start(self, log: Path) -> None:
        cmd = cli_command(
            "serve", "--country", self.country, "--port", str(self.port), data_dir=self.data_dir
        )
        env = {**cli_env(), **GRID_ENV}
        handle = log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        assert wait_healthy(self.proc, self.url, log), log.read_text()[-3000:]

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rows(self, query: Any) -> list[Any]:
        """Read this node's database directly (what the test may, and no node sends)."""
        engine = create_engine(sqlite_url(self.data_dir))
        try:
            with engine.connect() as conn:
                return list(conn.execute(query))
        finally:
            engine.dispose()


def eventually(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {DEADLINE} s (last: {last!r:.500})")


class _Handler(BaseHTTPRequestHandler):
    forked: ForkedNode

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = self.forked.base_url + self.path
        reply = self.forked.handle(url, {k: v for k, v in self.headers.items()}, body)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _admit(
    node: Node, name: str, role: PartyRole, nb: str | None = None, keys: Path | None = None
) -> Member:
    """Admit a party; with ``keys``, its signing key is kept there (as its own CLI would)."""
    key = PrivateKey.generate()
    party, _ = pty.admit_party(
        node, None, name=name, role=role, nb_number=nb, public_key=key.public_key.to_spki_b64()
    )
    cred = pty.issue_credential(node, None, party["id"])
    if keys is not None:
        _files.ensure_private_directory(keys)
        path = KeyStore(keys, PASSPHRASE.encode()).path(party["id"])
        _files.write_new_file(path, key.to_pem(PASSPHRASE.encode()))
    return Member(party["id"], cred.token, role.value, node.country, keys)


def _exchange(g: GridNode, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``metrocloud exchange ...`` as party ``who`` of node ``g``, with its key directory."""
    m = g.members[who]
    env = {
        **cli_env(),
        "METROCLOUD_KEY_PASSPHRASE": PASSPHRASE,
        "METROCLOUD_NODE_URL": g.url,
        "METROCLOUD_TOKEN": m.token,
        "METROCLOUD_PARTY_KEYS": str(m.keys),
    }
    done = subprocess.run(
        [sys.executable, "-m", "metrocloud.cli", "exchange", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _seed(tmp: Path, grid: dict[str, GridNode], forked: ForkedNode, anchor: PrivateKey) -> None:
    """Nodes, admissions and parties, set up in-process before the processes start."""
    nodes = {c: Node.open(Settings(data_dir=g.data_dir, country=c)) for c, g in grid.items()}
    try:
        now = datetime.now(UTC)
        adm = {
            c: admit_node(
                anchor, public_key=n.key.public_key, country=c, base_url=grid[c].url, now=now
            ).to_json()
            for c, n in nodes.items()
        }
        for c, n in nodes.items():
            grid[c].node_id = n.node_id
            fed.join_grid(n, adm[c], anchor.public_key)
        for c, n in nodes.items():
            for other in nodes:
                if other != c:
                    fed.add_peer(n, adm[other])
            fed.add_peer(n, forked.admission())
        a, b, c = grid["DE"], grid["FR"], grid["NL"]
        a.members = {
            "nb": _admit(nodes["DE"], "PTB", PartyRole.NOTIFIED_BODY, "0102", tmp / "ptb-keys"),
            "man": _admit(nodes["DE"], "Hansa", PartyRole.MANUFACTURER),
            "auth": _admit(nodes["DE"], "Eichamt", PartyRole.AUTHORITY),
        }
        b.members = {
            "man": _admit(
                nodes["FR"], "Compteurs Bleus", PartyRole.MANUFACTURER, keys=tmp / "cb-keys"
            ),
            "auth": _admit(nodes["FR"], "DGE", PartyRole.AUTHORITY),
        }
        c.members = {"auth": _admit(nodes["NL"], "Agentschap", PartyRole.AUTHORITY)}
        # a national fleet on A with notices, for the statistic (replicated once serving)
        de = nodes["DE"]
        draft = certs.CertificateDraft(
            number="DE-0102-26-0001",
            holder_id=a.members["man"].party_id,
            category=InstrumentCategory.MI_003,
            model="EM-340",
            accuracy_class="B",
            software=(software(),),
        )
        cert, _ = certs.issue_certificate(de, a.members["nb"].actor, draft)
        refs, _ = inst.register_instruments(
            de,
            a.members["man"].actor,
            [
                inst.InstrumentDraft(
                    serial=f"DE{i:05d}",
                    certificate_id=cert["id"],
                    region="DE21",
                    device_keys=(PrivateKey.generate().public_key.to_spki_b64(),),
                )
                for i in range(5)
            ],
        )
        ids = [r["id"] for r in refs]
        ev.record_events(
            de,
            a.members["man"].actor,
            [ev.EventDraft(instrument_id=i, kind=EventKind.PLACED_ON_MARKET) for i in ids],
        )
        surveillance.notify_non_compliance(
            de,
            a.members["auth"].actor,
            ids[:2],
            finding="error beyond the MPE",
            measures=["recalibrate"],
            legal_basis="MID Art. 40",
            deadline=de.now().date().replace(year=de.now().year + 1),
        )
    finally:
        for n in nodes.values():
            fed.stop_grid(n)
            n.close()


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[tuple[dict[str, GridNode], ForkedNode]]:
    anchor = PrivateKey.generate()
    ports = [free_port() for _ in range(4)]
    nodes = {
        c: GridNode(c, tmp_path / c.lower(), p)
        for c, p in zip(("DE", "FR", "NL"), ports, strict=False)
    }
    forked = ForkedNode(tmp_path / "forked", anchor, f"http://127.0.0.1:{ports[3]}", "AT")
    (tmp_path / "forked").mkdir()
    _seed(tmp_path, nodes, forked, anchor)
    forked.show(nodes["DE"].node_id, [b"a", b"b", b"c", b"d"])
    forked.show(nodes["FR"].node_id, [b"a", b"b", b"c", b"d"])
    forked.show(nodes["NL"].node_id, [b"a", b"b", b"X", b"Y"])  # another history for C
    handler = type("H", (_Handler,), {"forked": forked})
    server = ThreadingHTTPServer(("127.0.0.1", ports[3]), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for g in nodes.values():
            g.start(tmp_path / f"{g.country.lower()}.log")
        yield nodes, forked
    finally:
        for g in nodes.values():
            g.stop()
        server.shutdown()
        server.server_close()
        forked.close()


def _certificate(nb_node: GridNode, holder: Member, number: str) -> dict[str, Any]:
    sw = {
        "name": "FW",
        "version": "1.0.0",
        "algorithm": "sha256",
        "checksum": hashlib.sha256(b"FW1").hexdigest(),
    }
    r = nb_node.call(
        "POST",
        "/certificates",
        "nb",
        json_body={
            "number": number,
            "holder_id": holder.party_id,
            "category": "MI-003",
            "model": "Compteur triphasé",
            "accuracy_class": "B",
            "software": [sw],
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["certificate"])


def _alerts(g: GridNode, who: str) -> set[str]:
    r = g.call("GET", "/grid/alerts", who, params={"limit": 1000})
    assert r.status_code == 200, r.text
    return {a["id"] for a in r.json()["items"]}


def test_three_nodes_replicate_look_up_survive_a_crash_and_catch_a_split_view(
    grid: tuple[dict[str, GridNode], ForkedNode], tmp_path: Path
) -> None:
    nodes, forked = grid
    a, b, c = nodes["DE"], nodes["FR"], nodes["NL"]

    # -- a certificate issued on A (for B's manufacturer) is visible on B and C ---------------
    eventually(
        "B's manufacturer known on A",
        lambda: a.call("GET", f"/parties/{b.members['man'].party_id}", "nb").status_code == 200,
    )
    cert = _certificate(a, b.members["man"], "DE-0102-26-0002")
    for g in (b, c):
        eventually(
            f"certificate on {g.country}",
            lambda g=g: (
                g.call("GET", f"/certificates/{cert['id']}", "auth").json()["number"]
                == cert["number"]
            ),
        )

    # -- an instrument registered on B is found from C, answered by its home node -------------
    r = b.call(
        "POST",
        "/instruments",
        "man",
        json_body={
            "instruments": [
                {
                    "serial": f"FR{i:05d}",
                    "certificate_id": cert["id"],
                    "region": "FR10",
                    "device_keys": [PrivateKey.generate().public_key.to_spki_b64()],
                }
                for i in range(4)
            ]
        },
    )
    assert r.status_code == 201, r.text
    fr_ids = [i["id"] for i in r.json()["instruments"]]
    found = c.call("GET", f"/instruments/{fr_ids[0]}", "auth")
    assert found.status_code == 200, found.text
    assert found.json()["home_node"] == b.node_id and found.json()["serial"] == "FR00000"
    # the read from abroad is in B's access log, for B's manufacturer
    log = b.call("GET", "/access-log", "man").json()["items"]
    assert any(
        e["reader_id"] == c.members["auth"].party_id and e["resource_id"] == fr_ids[0] for e in log
    )

    # -- an alert raised on C reaches A and B -------------------------------------------------
    r = c.call(
        "POST",
        "/grid/alerts",
        "auth",
        json_body={
            "subject_type": "certificate",
            "subject_id": cert["id"],
            "severity": "high",
            "title": "terminal cover seal can be lifted",
            "description": "two regions",
        },
    )
    assert r.status_code == 201, r.text
    alert1 = r.json()["id"]
    for g in (a, b):
        eventually(f"alert on {g.country}", lambda g=g: alert1 in _alerts(g, "auth"))

    # -- B killed: A and C go on; B restarted catches up with nothing lost --------------------
    assert b.proc is not None
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    r = a.call(
        "POST",
        f"/certificates/{cert['id']}/suspend",
        "nb",
        json_body={"reason": "surveillance found non-conforming production"},
    )
    assert r.status_code == 200, r.text
    r = c.call(
        "POST",
        "/grid/alerts",
        "auth",
        json_body={
            "subject_type": "instrument",
            "subject_id": fr_ids[1],
            "severity": "serious",
            "title": "manipulated meter",
            "description": "found during inspection",
        },
    )
    alert2 = r.json()["id"]
    eventually(
        "suspension on C",
        lambda: (
            c.call("GET", f"/certificates/{cert['id']}", "auth").json()["status"] == "suspended"
        ),
    )
    eventually("second alert on A", lambda: alert2 in _alerts(a, "auth"))
    # the look-up of B's instrument says B is down, with a problem, not a hang
    down = c.call("GET", f"/instruments/{fr_ids[0]}", "auth")
    assert down.status_code == 502 and down.json()["type"].endswith("/peer-unavailable")
    waiting = a.call("GET", "/grid/status", "auth").json()
    b_link = next(p for p in waiting["peers"] if p["node_id"] == b.node_id)
    assert b_link["outbox"]["pending"] >= 1 and b_link["outbox"]["failed"] == 0
    b.start(tmp_path / "fr.log")
    eventually(
        "B caught up: suspension",
        lambda: (
            b.call("GET", f"/certificates/{cert['id']}", "auth").json()["status"] == "suspended"
        ),
    )
    eventually("B caught up: both alerts", lambda: {alert1, alert2} <= _alerts(b, "auth"))
    for g in (a, c):
        eventually(
            f"{g.country}'s outbox to B drained",
            lambda g=g: all(
                p["outbox"]["pending"] == 0 and p["outbox"]["failed"] == 0
                for p in g.call("GET", "/grid/status", "auth").json()["peers"]
                if p["node_id"] == b.node_id
            ),
        )

    # -- E showed A and C two histories: caught within one witnessing round ------------------
    def split_views(g: GridNode) -> list[dict[str, Any]]:
        items = g.call("GET", "/grid/alerts", "auth", params={"kind": "split_view"}).json()
        return [x for x in items["items"] if x["subject_id"] == forked.node_id]

    eventually("split view alert on C", lambda: split_views(c))
    found = [
        x for g in (a, c) for x in split_views(g) if x["origin_node_id"] in (a.node_id, c.node_id)
    ]
    first = min(found, key=lambda x: x["raised_at"])
    heads = first["details"]["heads"]
    assert len({h["root_hash"] for h in heads}) == 2 and {h["tree_size"] for h in heads} == {4}
    raised = parse_utc_timestamp(first["raised_at"]).timestamp()
    # both views existed from the later viewer's first fetch on; no viewer fetched again
    # (beyond a round already under way) before the alert: one witnessing round
    both = max(forked.fetches[a.node_id][0], forked.fetches[c.node_id][0])
    for viewer in (a.node_id, c.node_id):
        later = [t for t in forked.fetches[viewer] if both < t <= raised]
        assert len(later) <= 1, (viewer, later, both, raised)
    # the honest nodes are not suspected
    assert all(x["subject_id"] == forked.node_id for x in split_views(a) + split_views(c))

    # -- a federated statistic equals the raw one; only aggregates crossed --------------------
    for iid in fr_ids:
        r = b.call(
            "POST", f"/instruments/{iid}/events", "man", json_body={"kind": "placed_on_market"}
        )
        assert r.status_code == 201, r.text
    r = b.call(
        "POST",
        "/surveillance/non-compliance",
        "auth",
        json_body={
            "instrument_ids": fr_ids[:3],
            "finding": "seal broken",
            "measures": ["replace seals"],
            "legal_basis": "MID Art. 40",
            "deadline": "2099-01-01",
        },
    )
    assert r.status_code == 201, r.text
    marks = {
        g.country: max([0, *(x.id for x in g.rows(select(grid_traffic.c.id)))])
        for g in nodes.values()
    }
    stat = c.call("GET", "/grid/statistics/non-compliance-rate", "auth", params={"by": "type"})
    assert stat.status_code == 200 and stat.json()["complete"], stat.text
    got = {x["key"]: (x["instruments"], x["non_compliant"]) for x in stat.json()["groups"]}
    raw: dict[str, list[int]] = {}
    serials, ids = set(), set()
    for g in nodes.values():
        flagged = {
            r.instrument_id
            for r in g.rows(
                select(events.c.instrument_id).where(events.c.kind == "non_compliance_found")
            )
        }
        per: dict[str, list[int]] = {}
        for row in g.rows(
            select(instruments.c.id, instruments.c.serial, instruments.c.certificate_id)
        ):
            ids.add(row.id)
            serials.add(row.serial)
            t = per.setdefault(row.certificate_id, [0, 0])
            t[0] += 1
            t[1] += row.id in flagged
        for k, (n, bad) in per.items():
            if n >= 3:
                t = raw.setdefault(k, [0, 0])
                t[0] += n
                t[1] += bad
    assert got == {k: (v[0], v[1]) for k, v in raw.items()}
    assert got[cert["id"]] == (4, 3)
    crossed = []
    for g in nodes.values():
        crossed += g.rows(
            select(grid_traffic).where(
                grid_traffic.c.id > marks[g.country],
                grid_traffic.c.path == "/api/v1/grid/queries/statistics",
            )
        )
    assert len(crossed) == 5  # C asked A, B and E: C recorded 3, A and B one each
    for row in crossed:
        text = (row.request_body or "") + (row.response_body or "")
        leaked = [x for x in (*ids, *serials) if x in text]
        assert not leaked, text
        for group in json.loads(row.response_body)["groups"]:
            assert set(group) == {"key", "instruments", "non_compliant"}

    # -- the operator's view: metrocloud grid status --------------------------------------------
    out = subprocess.run(
        cli_command("grid", "status", "--json", data_dir=a.data_dir),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert {p["country"] for p in st["peers"]} == {"FR", "NL", "AT"}
    assert all(p["witnessed_head"] for p in st["peers"] if p["country"] in ("FR", "NL"))

    # -- confidential exchange across nodes: B's manufacturer sends its technical file to
    # -- A's notified body with the CLI; A stores ciphertext only; the receipt goes back ----
    _exchange(a, "nb", "keygen", "--party", a.members["nb"].party_id)
    marker = ("CONFIDENTIAL-" + secrets.token_hex(24)).encode()
    document = tmp_path / "technical-file.pdf"
    document.write_bytes(os.urandom(700_000) + marker + os.urandom(300_000))
    sent = _exchange(b, "man", "send", "--to", a.members["nb"].party_id, str(document))
    message = sent.stdout.split()[1].rstrip(":")
    eventually(
        "the document on A",
        lambda: a.call("GET", f"/exchange/messages/{message}", "nb").status_code == 200,
    )
    received = tmp_path / "received" / "technical-file.pdf"
    _exchange(a, "nb", "fetch", message, "-o", str(received), "--ack")
    assert received.read_bytes() == document.read_bytes()
    eventually(
        "the receipt back on B",
        lambda: b.call("GET", f"/exchange/messages/{message}/receipts", "man").json()["items"],
    )
    listed = _exchange(b, "man", "receipts", message, "--json")  # checks each signature
    assert [r["recipient_id"] for r in json.loads(listed.stdout)] == [a.members["nb"].party_id]
    for g in nodes.values():  # files (databases with grid_traffic, ciphertext) and logs
        for path in [*g.data_dir.rglob("*"), tmp_path / f"{g.country.lower()}.log"]:
            if path.is_file():
                data = path.read_bytes()
                assert marker not in data and marker.hex().encode() not in data, path
