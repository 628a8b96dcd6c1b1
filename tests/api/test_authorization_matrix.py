"""Acceptance: an authorization matrix covers every endpoint x every role x own and foreign
records, and nothing is allowed that the role rules do not allow.

The matrix is DATA (:data:`MATRIX`): one :class:`Row` per (endpoint, caller, ownership) with
the expected outcome. It is written per role (``spec(...)``) from these rules:

- only a notified body issues certificates; only the issuing one revises, suspends,
  reinstates and withdraws them;
- only the certificate holder (a manufacturer) registers instruments of that type and
  declares their conformity;
- operators put into service and relocate; once an instrument has an operator, only that
  operator records operator events on it;
- only authorities record verified, verification_failed, inspected, non_compliance_found;
- instruments are read by their manufacturer, their operator, any authority, the notified
  body that issued their certificate and grantees; the node admin reads no instrument data;
- the node admin alone admits parties and issues tokens for them;
- the node admin alone reads the streaming monitor's queue and puts poisoned segments back;
- certificates and the party directory are readable by any authenticated party;
- the ledger, /node and /public/verify are public; everything else needs a valid bearer
  token (401).

Callers: the nine parties of the ``world`` fixture (two per role, one node admin) and four
unauthenticated "roles": no token, a malformed token, a forged secret, a revoked token.
Ownership: ``own`` (the record belongs to / was issued by / is operated by the caller),
``foreign`` (it belongs to the caller's twin or to nobody the caller is related to),
``granted`` (read access granted to the caller), ``unassigned`` (no operator yet),
``missing`` (no such record) and ``n/a`` (the endpoint names no record).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from metrocloud.api.app import API_PREFIX, create_app
from metrocloud.device.eventlog import DeviceEventKind, EventLog
from metrocloud.domain.certificates import CertificateAction, ConformityModule
from metrocloud.domain.instruments import EventKind
from metrocloud.formats.batches import GENESIS_PREV, encode_batch
from metrocloud.formats.evidence import verify_bundle
from metrocloud.formats.transparenz import read_container
from metrocloud.services import access
from metrocloud.services import certificates as certs
from metrocloud.services import declarations as decl
from metrocloud.services import events as ev
from metrocloud.services import instruments as inst
from metrocloud.services import parties as pty
from metrocloud.services import surveillance as surveillance_svc
from metrocloud.services._streaming_queue import add_queued, queued_row, record_failure
from metrocloud.services.node import Node
from metrocloud.store.schema import (
    credentials,
    exchange_messages,
    grants,
    instruments,
    quarantine,
)
from metrocloud.trust.confidential import Envelope
from metrocloud.trust.credentials import sign_token_request
from metrocloud.trust.encryption import EncryptionKey, bind_encryption_key
from metrocloud.trust.keys import PrivateKey
from metrocloud.trust.receipts import sign_receipt
from tests._exchange import enroll
from tests._exchange import seal as xch_seal
from tests._exchange import send as xch_send
from tests._exchange import upload_body as xch_body
from tests._monitoring import give_results, give_stream_alert
from tests.conftest import Member, World

OK = "ok"  # 2xx; for a list naming a target record: the record is in the page
HIDDEN = "hidden"  # 200, but the (foreign) target record is not in the page
PROOF_REFUSED = 400  # POST /auth/token: a proof of possession that does not verify
Outcome = int | str

ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "nb": ("nb1", "nb2"),
    "man": ("man1", "man2"),
    "op": ("op1", "op2"),
    "auth": ("auth1", "auth2"),
}
UNAUTHENTICATED = ("anon", "malformed", "forged", "revoked")
MEMBERS = tuple(m for ms in ROLES.values() for m in ms)
CALLERS = (*UNAUTHENTICATED, *MEMBERS)
#: each "1" party and its records form side A, each "2" party side B
SIDES = {
    "A": {"nb": "nb1", "man": "man1", "op": "op1"},
    "B": {"nb": "nb2", "man": "man2", "op": "op2"},
}
TWIN = {
    "admin": "man1",
    "nb1": "nb2",
    "nb2": "nb1",
    "man1": "man2",
    "man2": "man1",
    "op1": "op2",
    "op2": "op1",
    "auth1": "auth2",
    "auth2": "auth1",
}
OCMF_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf"
MISSING = {
    "pty": "pty-DE-00000000000000000000000000",
    "cer": "cer-DE-00000000000000000000000000",
    "ins": "ins-DE-00000000000000000000000000",
    "doc": "doc-DE-00000000000000000000000000",
    "grt": "grt-DE-00000000000000000000000000",
    "token": "0000000000000000",
}


@dataclass(frozen=True)
class Row:
    endpoint: str  # "METHOD /api/v1/path/{param}", exactly as routed
    caller: str
    ownership: str
    expected: Outcome
    variant: str = ""  # e.g. the event kind
    by_body: bool = False  # the refusal depends on the body (checked after parsing it)

    @property
    def method(self) -> str:
        return self.endpoint.split(" ", 1)[0]

    def __str__(self) -> str:
        v = f" [{self.variant}]" if self.variant else ""
        return f"{self.endpoint}{v} as {self.caller} on {self.ownership} record"


def spec(
    endpoint: str,
    *,
    variant: str = "",
    scoped: bool = False,
    public: bool = False,
    missing: Outcome | dict[str, Outcome] | None = None,
    by_body: tuple[str, ...] = (),
    extra: tuple[tuple[str, str, Outcome], ...] = (),
    **roles: Outcome | tuple[Outcome, Outcome],
) -> list[Row]:
    """Expand per-role rules into rows.

    A role's value is one outcome (for every member; ``foreign`` record if ``scoped`` else
    ``n/a``) or a pair ``(own, foreign)``. ``missing`` adds one row per role on a record that
    does not exist. ``by_body`` names the roles (``"op"``) or role and ownership
    (``"op:own"``) whose outcome depends on the request body, so cannot be decided before it.
    """
    if public:
        roles = {r: roles.get(r, OK) for r in ROLES}
    assert set(roles) == set(ROLES), f"{endpoint}: rules for {sorted(set(ROLES) - set(roles))}"
    rows = [
        Row(endpoint, c, "foreign" if scoped else "n/a", OK if public else 401, variant)
        for c in UNAUTHENTICATED
    ]

    def body(role: str, ownership: str) -> bool:
        return role in by_body or f"{role}:{ownership}" in by_body

    for role, outcome in roles.items():
        for member in ROLES[role]:
            if isinstance(outcome, tuple):
                rows.append(Row(endpoint, member, "own", outcome[0], variant, body(role, "own")))
                rows.append(
                    Row(endpoint, member, "foreign", outcome[1], variant, body(role, "foreign"))
                )
            else:
                o = "foreign" if scoped else "n/a"
                rows.append(Row(endpoint, member, o, outcome, variant, body(role, o)))
    if missing is not None:
        for role, members in ROLES.items():
            out = missing[role] if isinstance(missing, dict) else missing
            rows.append(Row(endpoint, members[0], "missing", out, variant, role in by_body))
    rows.extend(Row(endpoint, c, o, e, variant) for c, o, e in extra)
    return rows


def only(allowed: Outcome, role: str, *, others: Outcome = 403) -> dict[str, Outcome]:
    return {r: allowed if r == role else others for r in ROLES}


ALL = {r: OK for r in ROLES}
#: node-to-node endpoints: a party's bearer token is no node signature (401 for everyone)
NODE_ONLY: dict[str, Outcome] = {r: 401 for r in ROLES}
ALL_OWN_FOREIGN = {r: (OK, OK) for r in ROLES}
#: instrument data: manufacturer, operator, certifying notified body, any authority; no admin
INSTRUMENT_READ = {"admin": 403, "nb": (OK, 403), "man": (OK, 403), "op": (OK, 403), "auth": OK}
INSTRUMENT_SEARCH = {
    "admin": 403,
    "nb": (OK, HIDDEN),
    "man": (OK, HIDDEN),
    "op": (OK, HIDDEN),
    "auth": OK,
}
INSTRUMENT_MISSING = {"admin": 403, "nb": 404, "man": 404, "op": 404, "auth": 404}
GRANTED = (
    ("man2", "granted", OK),
    ("op2", "granted", OK),
    ("nb2", "granted", OK),
    ("admin", "granted", 403),
)
FORENSIC_READ = {"admin": 403, "nb": (403, 403), "man": (OK, 403), "op": (OK, 403), "auth": OK}
FORENSIC_MISSING = {"admin": 403, "nb": 403, "man": 404, "op": 404, "auth": 404}
NOT_GRANTED = tuple((caller, ownership, 403) for caller, ownership, _ in GRANTED)
ISSUER_ONLY = {"admin": 403, "nb": (OK, 403), "man": (403, 403), "op": 403, "auth": 403}
ISSUER_MISSING = {"admin": 403, "nb": 404, "man": 403, "op": 403, "auth": 403}
EVENTS = "POST /api/v1/instruments/{instrument_id}/events"
EVENT_MISSING = {"admin": 403, "nb": 403, "man": 404, "op": 404, "auth": 404}
AUTHORITY_EVENT = {"admin": 403, "nb": 403, "man": (403, 403), "op": (403, 403), "auth": 201}
#: authority-only surveillance on a record that does not exist
SURVEILLANCE_MISSING = {"admin": 403, "nb": 403, "man": 403, "op": 403, "auth": 404}
#: confidential exchange: the parties to a message see it, to anyone else it does not exist
EXCHANGE_PARTY = {
    "admin": 403,
    "nb": (OK, 404),
    "man": (OK, 404),
    "op": (OK, 404),
    "auth": (OK, 404),
}
EXCHANGE_MISSING = {"admin": 403, "nb": 404, "man": 404, "op": 404, "auth": 404}
#: refusals by event kind: the guard lets the caller in (role and relationship fit), the kind
#: in the body decides - these cannot be refused before the body is read
BY_KIND = ("man:own", "op:own")


# The matrix, as a table (kept compact on purpose):
# fmt: off
MATRIX: list[Row] = [
    # -- public: node identity and the transparency log -----------------------------------
    *spec("GET /api/v1/node", public=True),
    *spec("GET /api/v1/health", public=True),
    *spec("GET /api/v1/ledger/head", public=True),
    *spec("GET /api/v1/ledger/heads/{tree_size}", public=True, missing=404),
    *spec("GET /api/v1/ledger/entries/{index}", public=True, missing=404),
    *spec("GET /api/v1/ledger/proof/inclusion", public=True),
    *spec("GET /api/v1/ledger/proof/consistency", public=True),
    *spec("POST /api/v1/public/verify", public=True),
    # a token for the party whose key signed the proof; a proof for another party is refused
    *spec("POST /api/v1/auth/token", public=True, by_body=tuple(ROLES), missing=401,
          **{r: (OK, PROOF_REFUSED) for r in ROLES}),
    # -- parties, tokens, grants, access log ----------------------------------------------
    *spec("GET /api/v1/me", **ALL),
    *spec("POST /api/v1/parties", **only(OK, "admin")),
    *spec("GET /api/v1/parties", **ALL),
    *spec("GET /api/v1/parties/{party_id}", scoped=True, missing=404, **ALL_OWN_FOREIGN),
    *spec("POST /api/v1/parties/{party_id}/tokens", scoped=True,
          missing={"admin": 404, "nb": 403, "man": 403, "op": 403, "auth": 403},
          admin=(OK, OK), nb=(403, 403), man=(403, 403), op=(403, 403), auth=(403, 403)),
    *spec("GET /api/v1/auth/tokens", **ALL),
    *spec("DELETE /api/v1/auth/tokens/{token_id}", scoped=True, missing=404,
          admin=(OK, OK), nb=(OK, 403), man=(OK, 403), op=(OK, 403), auth=(OK, 403)),
    *spec("GET /api/v1/access-log", **ALL),
    *spec("POST /api/v1/grants", scoped=True, by_body=("man", "op"),
          missing={"admin": 403, "nb": 403, "man": 404, "op": 404, "auth": 403},
          admin=403, nb=403, man=(OK, 403), op=(OK, 403), auth=403),
    *spec("POST /api/v1/grants", variant="all my instruments", admin=403, nb=403, man=OK,
          op=OK, auth=403),
    *spec("GET /api/v1/grants", **ALL),
    *spec("DELETE /api/v1/grants/{grant_id}", scoped=True, missing=404,
          admin=403, nb=403, man=(OK, 403), op=(OK, 403), auth=403,
          extra=(("man1", "granted", 403), ("op1", "granted", 403))),
    # -- certificates ----------------------------------------------------------------------
    *spec("POST /api/v1/certificates", **only(OK, "nb")),
    *spec("GET /api/v1/certificates", **ALL),
    *spec("GET /api/v1/certificates/{certificate_id}", scoped=True, missing=404,
          admin=OK, nb=(OK, OK), man=(OK, OK), op=OK, auth=OK),
    *spec("GET /api/v1/certificates/{certificate_id}/history", scoped=True, missing=404,
          admin=OK, nb=(OK, OK), man=(OK, OK), op=OK, auth=OK),
    *spec("POST /api/v1/certificates/{certificate_id}/revise", scoped=True,
          missing=ISSUER_MISSING, **ISSUER_ONLY),
    *spec("POST /api/v1/certificates/{certificate_id}/suspend", scoped=True,
          missing=ISSUER_MISSING, **ISSUER_ONLY),
    *spec("POST /api/v1/certificates/{certificate_id}/reinstate", scoped=True,
          missing=ISSUER_MISSING, **ISSUER_ONLY),
    *spec("POST /api/v1/certificates/{certificate_id}/withdraw", scoped=True,
          missing=ISSUER_MISSING, **ISSUER_ONLY),
    # -- instruments -------------------------------------------------------------------------
    # own: under a certificate the caller holds; foreign: under the twin's certificate
    *spec("POST /api/v1/instruments", scoped=True, by_body=("man",),
          missing={"admin": 403, "nb": 403, "man": 404, "op": 403, "auth": 403},
          admin=403, nb=403, man=(OK, 403), op=403, auth=403),
    *spec("GET /api/v1/instruments", scoped=True, extra=GRANTED, **INSTRUMENT_SEARCH),
    *spec("GET /api/v1/instruments/{instrument_id}", scoped=True, missing=INSTRUMENT_MISSING,
          extra=GRANTED, **INSTRUMENT_READ),
    *spec("GET /api/v1/instruments/{instrument_id}/events", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    # what the measurement intake flagged: instrument data, read like the instrument
    *spec("GET /api/v1/instruments/{instrument_id}/flags", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    *spec("GET /api/v1/instruments/{instrument_id}/measurements", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    # forensic record (timeline, evidence bundle): authorities, the owner and the operator
    # only - not the certifying NB, not grantees (it holds the owners' access log)
    *spec("GET /api/v1/instruments/{instrument_id}/timeline", scoped=True,
          missing=FORENSIC_MISSING, extra=NOT_GRANTED, **FORENSIC_READ),
    *spec("GET /api/v1/instruments/{instrument_id}/evidence", scoped=True,
          missing=FORENSIC_MISSING, extra=NOT_GRANTED, **FORENSIC_READ),
    # life-cycle events, one block per kind (own/foreign as seen from the caller's role)
    # (placed_on_market: the instrument has no operator yet, so any operator passes the guard)
    *spec(EVENTS, variant="placed_on_market", scoped=True, missing=EVENT_MISSING,
          by_body=("op", "auth"), admin=403, nb=403, man=(201, 403), op=403, auth=403),
    *spec(EVENTS, variant="put_into_service", scoped=True, missing=EVENT_MISSING,
          by_body=("man:own", "auth"), admin=403, nb=403, man=(403, 403), op=(201, 403),
          auth=403, extra=(("op1", "unassigned", 201), ("op2", "unassigned", 201))),
    *spec(EVENTS, variant="relocated", scoped=True, missing=EVENT_MISSING,
          by_body=("man:own", "auth"), admin=403, nb=403, man=(403, 403), op=(201, 403),
          auth=403),
    *spec(EVENTS, variant="tamper_detected", scoped=True, missing=EVENT_MISSING,
          admin=403, nb=403, man=(201, 403), op=(201, 403), auth=201),
    *spec(EVENTS, variant="verified", scoped=True, missing=EVENT_MISSING, by_body=BY_KIND,
          **AUTHORITY_EVENT),
    *spec(EVENTS, variant="verification_failed", scoped=True, missing=EVENT_MISSING,
          by_body=BY_KIND, **AUTHORITY_EVENT),
    *spec(EVENTS, variant="inspected", scoped=True, missing=EVENT_MISSING, by_body=BY_KIND,
          **AUTHORITY_EVENT),
    *spec(EVENTS, variant="non_compliance_found", scoped=True, missing=EVENT_MISSING,
          by_body=BY_KIND, **AUTHORITY_EVENT),
    # -- declarations of conformity ----------------------------------------------------------
    *spec("POST /api/v1/declarations", scoped=True, by_body=("man",),
          missing={"admin": 403, "nb": 403, "man": 404, "op": 403, "auth": 403},
          admin=403, nb=403, man=(OK, 403), op=403, auth=403),
    *spec("GET /api/v1/declarations", scoped=True,
          admin=403, nb=(OK, HIDDEN), man=(OK, HIDDEN), op=403, auth=OK),
    *spec("GET /api/v1/declarations/{declaration_id}", scoped=True,
          missing={"admin": 403, "nb": 404, "man": 404, "op": 403, "auth": 404},
          admin=403, nb=(OK, 403), man=(OK, 403), op=403, auth=OK),
    # -- e-compliance reports: any authority; the manufacturer its own instruments, itself
    # and its types; the notified body the types it certified and their instruments. No
    # operator, no admin, and a grant does not extend to reports -----------------------------
    *spec("GET /api/v1/compliance/instruments/{instrument_id}", scoped=True,
          missing={"admin": 403, "nb": 404, "man": 404, "op": 403, "auth": 404},
          extra=tuple((c, "granted", 403) for c in ("man2", "op2", "nb2", "admin")),
          admin=403, nb=(OK, 403), man=(OK, 403), op=(403, 403), auth=OK),
    *spec("GET /api/v1/compliance/manufacturers/{party_id}", scoped=True,
          missing={"admin": 403, "nb": 403, "man": 403, "op": 403, "auth": 404},
          admin=403, nb=403, man=(OK, 403), op=403, auth=OK),
    *spec("GET /api/v1/compliance/types/{certificate_id}", scoped=True,
          missing={"admin": 403, "nb": 404, "man": 404, "op": 403, "auth": 404},
          admin=403, nb=(OK, 403), man=(OK, 403), op=403, auth=OK),
    # -- monitoring and maintenance: results about instruments, read like the instruments;
    # the list holds what the caller may read, one instrument (?instrument=) is checked ------
    *spec("GET /api/v1/monitoring/alerts", scoped=True, extra=GRANTED, **INSTRUMENT_SEARCH),
    *spec("GET /api/v1/monitoring/alerts", variant="one instrument", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    *spec("GET /api/v1/monitoring/stream-alerts", scoped=True, extra=GRANTED,
          **INSTRUMENT_SEARCH),
    *spec("GET /api/v1/monitoring/stream-alerts", variant="one instrument", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    *spec("GET /api/v1/maintenance/plan", scoped=True, extra=GRANTED, **INSTRUMENT_SEARCH),
    *spec("GET /api/v1/maintenance/plan", variant="one instrument", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    # the streaming monitor's queue: the node's own operation (lake segments, no instrument
    # data), the node admin's alone
    *spec("GET /api/v1/monitoring/stream-queue", **only(OK, "admin")),
    *spec("POST /api/v1/monitoring/stream-queue/{segment}/retry", missing=only(404, "admin"),
          **only(OK, "admin")),
    # -- measurements: head-end systems forward batches; each batch proves itself ------------
    *spec("POST /api/v1/ingest/batches", admin=403, nb=403, man=OK, op=OK, auth=403),
    *spec("POST /api/v1/ingest/ocmf", admin=403, nb=403, man=OK, op=OK, auth=403),
    # -- e-market surveillance: risk and plans are the authorities'; lots also the issuing NB's;
    # notices are non_compliance_found events, read like the instrument -----------------------
    *spec("GET /api/v1/surveillance/risk", scoped=True, missing=SURVEILLANCE_MISSING,
          admin=403, nb=403, man=403, op=403, auth=OK),
    *spec("GET /api/v1/surveillance/risk", variant="type", scoped=True,
          missing=SURVEILLANCE_MISSING, admin=403, nb=403, man=403, op=403, auth=OK),
    *spec("POST /api/v1/surveillance/inspection-plans", **only(201, "auth")),
    *spec("POST /api/v1/surveillance/lot-decisions", scoped=True, by_body=("nb",),
          missing={"admin": 403, "nb": 404, "man": 403, "op": 403, "auth": 404},
          admin=403, nb=(201, 403), man=403, op=403, auth=201),
    *spec("POST /api/v1/surveillance/non-compliance", scoped=True,
          missing=SURVEILLANCE_MISSING, admin=403, nb=403, man=403, op=403, auth=201),
    *spec("GET /api/v1/surveillance/non-compliance", scoped=True, extra=GRANTED,
          admin=403, nb=(OK, HIDDEN), man=(OK, HIDDEN), op=(OK, HIDDEN), auth=OK),
    # -- remote verification: head-ends upload device event logs; authorities evaluate and
    # record signed results; the history is read like the instrument ------------------------
    *spec("PUT /api/v1/instruments/{instrument_id}/event-log", scoped=True,
          missing={"admin": 403, "nb": 403, "man": 404, "op": 404, "auth": 403},
          admin=403, nb=403, man=(OK, 403), op=(OK, 403), auth=403),
    *spec("POST /api/v1/verifications/evaluate", **only(OK, "auth")),
    *spec("POST /api/v1/verifications", **only(201, "auth")),
    *spec("GET /api/v1/instruments/{instrument_id}/verifications", scoped=True,
          missing=INSTRUMENT_MISSING, extra=GRANTED, **INSTRUMENT_READ),
    # -- confidential exchange (docs/exchange.md): every party but the node admin; a message
    # exists for its sender and recipients only (404 to anyone else); keys are public --------
    *spec("POST /api/v1/exchange/keys", admin=403, nb=201, man=201, op=201, auth=201),
    *spec("GET /api/v1/exchange/keys/{party_id}", scoped=True, missing=404,
          admin=(404, OK), nb=(OK, OK), man=(OK, OK), op=(OK, OK), auth=(OK, OK)),
    *spec("POST /api/v1/exchange/messages", admin=403, nb=201, man=201, op=201, auth=201),
    *spec("GET /api/v1/exchange/messages", scoped=True, admin=403, nb=(OK, HIDDEN),
          man=(OK, HIDDEN), op=(OK, HIDDEN), auth=(OK, HIDDEN)),
    *spec("GET /api/v1/exchange/messages/{message_id}", scoped=True,
          missing=EXCHANGE_MISSING, **EXCHANGE_PARTY),
    *spec("GET /api/v1/exchange/messages/{message_id}/content", scoped=True,
          missing=EXCHANGE_MISSING, **EXCHANGE_PARTY),
    *spec("POST /api/v1/exchange/messages/{message_id}/receipt", scoped=True,
          missing=EXCHANGE_MISSING, admin=403, nb=(201, 404), man=(201, 404), op=(201, 404),
          auth=(201, 404)),
    *spec("GET /api/v1/exchange/messages/{message_id}/receipts", scoped=True,
          missing=EXCHANGE_MISSING, **EXCHANGE_PARTY),
    # -- the Legal Metrology Grid (docs/grid.md): node-to-node endpoints authenticate the
    # calling node by its signed request; no party token opens them ----------------------------
    *spec("POST /api/v1/grid/messages", **NODE_ONLY),
    *spec("POST /api/v1/grid/queries/{kind}", **NODE_ONLY),
    *spec("GET /api/v1/grid/status", admin=OK, nb=403, man=403, op=403, auth=OK),
    *spec("GET /api/v1/grid/statistics/{statistic}", admin=403, nb=OK, man=403, op=403,
          auth=OK),
    *spec("GET /api/v1/grid/cosignatures", public=True),
    *spec("POST /api/v1/grid/alerts", **only(201, "auth")),
    *spec("GET /api/v1/grid/alerts", **ALL),
]
# fmt: on


# --------------------------------------------------------------------------------------------
# The scenario: records of side A (nb1 -> man1, operated by op1) and side B (nb2 -> man2, op2)
# --------------------------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    target: str | None = None  # id a list must (OK) or must not (HIDDEN) contain
    target_key: str = "id"  # the item field holding it
    on_allowed: Callable[[httpx.Response], str | None] | None = None
    on_denied: Callable[[], str | None] | None = None
    #: a body other than JSON (sent as is, with ``headers``)
    content: bytes | None = None
    headers: dict[str, str] | None = None


_PREPARE = {
    "registered": (),
    "placed": ("placed_on_market",),
    "in_service": ("placed_on_market", "put_into_service"),
    "out_of_service": ("placed_on_market", "put_into_service", "taken_out_of_service"),
}
_WHO = {"placed_on_market": "man", "put_into_service": "op", "taken_out_of_service": "op"}


class Scenario:
    def __init__(self, client: TestClient, world: World) -> None:
        self.client = client
        self.world = world
        self.node: Node = world.node
        self._memo: dict[Any, Any] = {}
        self._pools: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._seq = itertools.count()

    # -- parties and credentials -------------------------------------------------------------
    def m(self, name: str) -> Member:
        return self.world.members[name]

    def _memoize(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "anon":
            return {}
        if caller == "malformed":
            return {"Authorization": "Bearer not-a-metrocloud-token"}
        if caller == "forged":
            token = self.m("man1").token
            return {"Authorization": f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}"}
        if caller == "revoked":

            def revoked() -> str:
                cred = pty.issue_credential(self.node, None, self.m("man1").id)
                pty.revoke_token(self.node, self.m("man1").actor, cred.token_id)
                return cred.token

            return {"Authorization": f"Bearer {self._memoize('revoked', revoked)}"}
        return self.m(caller).headers

    def party(self, row: Row) -> Member:
        """The party a party-scoped row is about: the caller itself or its twin."""
        if row.ownership == "own":
            return self.m(row.caller)
        return self.m(TWIN.get(row.caller, "man1"))

    def side(self, row: Row) -> str:
        mine = next((s for s, ps in SIDES.items() if row.caller in ps.values()), None)
        if row.ownership == "own":
            assert mine is not None, f"{row}: {row.caller} owns nothing of this kind"
            return mine
        return {"A": "B", "B": "A", None: "A"}[mine]

    def who(self, side: str, role: str) -> Member:
        return self.m(SIDES[side][role])

    def n(self) -> int:
        return next(self._seq)

    # -- records ---------------------------------------------------------------------------------
    def cert(self, side: str) -> dict[str, Any]:
        return self._memoize(("cert", side), lambda: self.fresh_cert(side))

    def fresh_cert(self, side: str, status: str = "valid") -> dict[str, Any]:
        nb = self.who(side, "nb")
        cert = self.world.certificate(nb, self.who(side, "man"), number=f"MX-{side}-{self.n()}")
        if status == "suspended":
            certs.change_certificate(
                self.node, nb.actor, cert["id"], CertificateAction.SUSPEND, reason="matrix setup"
            )
        return cert

    def fresh_instrument(self, side: str, state: str = "in_service") -> dict[str, Any]:
        pool = self._pools.setdefault((side, state), [])
        if not pool:
            refs = self.world.instruments(
                self.who(side, "man"), self.cert(side), 6, prefix=f"{side}{self.n()}-"
            )
            for kind in _PREPARE[state]:
                actor = self.who(side, _WHO[kind]).actor
                ev.record_events(
                    self.node,
                    actor,
                    [ev.EventDraft(instrument_id=r["id"], kind=EventKind(kind)) for r in refs],
                )
            pool.extend(refs)
        return pool.pop()

    def instrument(self, side: str) -> dict[str, Any]:
        return self._memoize(("instrument", side), lambda: self.fresh_instrument(side))

    def granted_instrument(self) -> dict[str, Any]:
        """An instrument of man1 (operated by op1) that man1 let man2, op2, nb2, admin read."""

        def make() -> dict[str, Any]:
            ins = self.fresh_instrument("A")
            for grantee in ("man2", "op2", "nb2", "admin"):
                access.create_grant(
                    self.node,
                    self.m("man1").actor,
                    grantee_id=self.m(grantee).id,
                    instrument_id=ins["id"],
                )
            return ins

        return cast(dict[str, Any], self._memoize("granted", make))

    def declaration(self, side: str) -> dict[str, Any]:
        return self._memoize(
            ("declaration", side),
            lambda: decl.declare_conformity(
                self.node,
                self.who(side, "man").actor,
                certificate_id=self.cert(side)["id"],
                instrument_ids=[self.instrument(side)["id"]],
                module=ConformityModule.D,
            ),
        )

    def instrument_for(self, row: Row) -> dict[str, Any]:
        if row.ownership == "granted":
            return self.granted_instrument()
        if row.ownership == "missing":
            return {"id": MISSING["ins"], "serial": "NO-SUCH-SERIAL"}
        return self.instrument(self.side(row))

    def tree_size(self) -> int:
        with self.node.db.read() as conn:
            return self.node.log.tree_size(conn)

    def snapshot(self) -> tuple[int, ...]:
        """Everything a refused request must leave untouched."""
        with self.node.db.read() as conn:

            def count(table: Any, *where: Any) -> int:
                return int(
                    conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
                )

            return (
                self.node.log.tree_size(conn),
                count(grants),
                count(grants, grants.c.revoked_at.is_(None)),
                count(credentials),
                count(credentials, credentials.c.revoked_at.is_(None)),
            )

    def me(self, token: str) -> httpx.Response:
        return self.client.get(f"{API_PREFIX}/me", headers={"Authorization": f"Bearer {token}"})

    # -- running one row -----------------------------------------------------------------------
    def send_raw(
        self, row: Row, content: bytes, extra_headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, bool]:
        """Send ``content`` as the body of ``row``'s request; also: did the state change?"""
        req = BUILDERS[row.endpoint](self, row)
        headers = {
            **self.headers(row.caller),
            "Content-Type": "application/json",
            **(extra_headers or {}),
        }
        before = self.snapshot()
        resp = self.client.request(
            req.method, req.path, content=content, params=req.params, headers=headers
        )
        return resp, self.snapshot() != before

    def check(self, row: Row) -> list[str]:
        req = BUILDERS[row.endpoint](self, row)
        assert req.method == row.method, f"{row}: builder sent {req.method}"
        headers = {**self.headers(row.caller), **(req.headers or {})}
        before = self.snapshot()
        if req.content is not None:
            resp = self.client.request(
                req.method, req.path, content=req.content, params=req.params, headers=headers
            )
        else:
            resp = self.client.request(
                req.method, req.path, json=req.json, params=req.params, headers=headers
            )
        got = f"got {resp.status_code} {resp.text[:300]}"
        if row.expected in (OK, HIDDEN) or cast(int, row.expected) < 300:
            if not 200 <= resp.status_code < 300:
                return [f"{row}: expected 2xx, {got}"]
            if row.expected not in (OK, HIDDEN) and resp.status_code != row.expected:
                return [f"{row}: expected {row.expected}, {got}"]
            if req.target is not None:
                ids = [item.get(req.target_key) for item in resp.json()["items"]]
                if row.expected == OK and req.target not in ids:
                    return [f"{row}: allowed, but {req.target} is not in the answer: {ids}"]
                if row.expected == HIDDEN and req.target in ids:
                    return [f"{row}: LEAK - foreign record {req.target} is listed"]
            else:
                assert row.expected != HIDDEN, f"{row}: HIDDEN needs a target record"
            problem = req.on_allowed(resp) if req.on_allowed else None
            return [f"{row}: {problem}"] if problem else []
        errors = []
        if resp.status_code != row.expected:
            return [f"{row}: expected {row.expected}, {got}"]
        if not resp.headers.get("content-type", "").startswith("application/problem+json"):
            errors.append(f"{row}: refusal is not problem+json: {resp.headers}")
        elif resp.json().get("status") != row.expected or not resp.json().get("detail"):
            errors.append(f"{row}: problem body does not match: {resp.text[:300]}")
        if row.expected == 401 and "www-authenticate" not in resp.headers:
            errors.append(f"{row}: 401 without WWW-Authenticate")
        if self.snapshot() != before:
            errors.append(
                f"{row}: refused, but the request changed state ({before} -> {self.snapshot()})"
            )
        problem = req.on_denied() if req.on_denied else None
        if problem:
            errors.append(f"{row}: {problem}")
        return errors


# --------------------------------------------------------------------------------------------
# Request builders, one per endpoint: the row's caller and ownership select the record
# --------------------------------------------------------------------------------------------

Builder = Callable[[Scenario, Row], Req]
BUILDERS: dict[str, Builder] = {}


def builds(endpoint: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        BUILDERS[endpoint] = fn
        return fn

    return deco


def _get(path: str, **params: Any) -> Req:
    return Req("GET", f"{API_PREFIX}{path}", params=params or None)


@builds("GET /api/v1/node")
def _node(s: Scenario, row: Row) -> Req:
    return _get("/node")


@builds("GET /api/v1/health")
def _health(s: Scenario, row: Row) -> Req:
    return _get("/health")


@builds("GET /api/v1/ledger/head")
def _head(s: Scenario, row: Row) -> Req:
    size = s.tree_size()
    return Req(
        "GET",
        f"{API_PREFIX}/ledger/head",
        on_allowed=lambda r: None if r.json()["tree_size"] == size else f"head {r.json()}",
    )


@builds("GET /api/v1/ledger/heads/{tree_size}")
def _head_at(s: Scenario, row: Row) -> Req:
    return _get(f"/ledger/heads/{10**6 if row.ownership == 'missing' else s.tree_size()}")


@builds("GET /api/v1/ledger/entries/{index}")
def _entry(s: Scenario, row: Row) -> Req:
    return _get(f"/ledger/entries/{10**6 if row.ownership == 'missing' else 0}")


@builds("GET /api/v1/ledger/proof/inclusion")
def _inclusion(s: Scenario, row: Row) -> Req:
    return _get("/ledger/proof/inclusion", leaf_index=0, tree_size=s.tree_size())


@builds("GET /api/v1/ledger/proof/consistency")
def _consistency(s: Scenario, row: Row) -> Req:
    return _get("/ledger/proof/consistency", first=1, second=s.tree_size())


@builds("POST /api/v1/auth/token")
def _token_by_proof(s: Scenario, row: Row) -> Req:
    if row.caller in UNAUTHENTICATED:
        party, key = s.m("man1"), s.m("man1").key
    else:
        party, key = s.party(row), s.m(row.caller).key  # always signed with the caller's key
    party_id = MISSING["pty"] if row.ownership == "missing" else party.id
    # a proof buys one token: each row signs its own (distinct timestamps, no replay)
    body = sign_token_request(party_id, key, s.node.now() - timedelta(seconds=s.n()))

    def works(r: httpx.Response) -> str | None:
        me = s.me(r.json()["token"])
        return None if me.json().get("party_id") == party.id else f"token is not {party.id}'s"

    return Req("POST", f"{API_PREFIX}/auth/token", json=body, on_allowed=works)


@builds("POST /api/v1/public/verify")
def _public_verify(s: Scenario, row: Row) -> Req:
    value = read_container((OCMF_FIXTURES / "keba_test.xml").read_bytes(), "keba_test.xml")[0]
    body = {"ocmf": value.signed_data, "public_key": value.public_key}
    return Req(
        "POST",
        f"{API_PREFIX}/public/verify",
        json=body,
        on_allowed=lambda r: None if r.json()["verdict"] == "valid" else r.text,
    )


@builds("GET /api/v1/me")
def _me(s: Scenario, row: Row) -> Req:
    def is_caller(r: httpx.Response) -> str | None:
        me = s.m(row.caller)
        return (
            None
            if (r.json()["party_id"], r.json()["role"]) == (me.id, me.party["role"])
            else r.text
        )

    return Req("GET", f"{API_PREFIX}/me", on_allowed=is_caller)


@builds("POST /api/v1/parties")
def _admit(s: Scenario, row: Row) -> Req:
    body = {
        "name": f"Party {s.n()}",
        "role": "operator",
        "public_key": PrivateKey.generate().public_key.to_spki_b64(),
    }
    return Req("POST", f"{API_PREFIX}/parties", json=body)


@builds("GET /api/v1/parties")
def _parties(s: Scenario, row: Row) -> Req:
    return _get("/parties", role="manufacturer", limit=1000)


@builds("GET /api/v1/parties/{party_id}")
def _party(s: Scenario, row: Row) -> Req:
    pid = MISSING["pty"] if row.ownership == "missing" else s.party(row).id
    return Req(
        "GET",
        f"{API_PREFIX}/parties/{pid}",
        on_allowed=lambda r: None if r.json()["id"] == pid else r.text,
    )


@builds("POST /api/v1/parties/{party_id}/tokens")
def _issue_token(s: Scenario, row: Row) -> Req:
    pid = MISSING["pty"] if row.ownership == "missing" else s.party(row).id

    def works(r: httpx.Response) -> str | None:
        me = s.me(r.json()["token"])
        return None if me.json().get("party_id") == pid else f"issued token is not {pid}'s"

    return Req(
        "POST", f"{API_PREFIX}/parties/{pid}/tokens", json={"label": "matrix"}, on_allowed=works
    )


@builds("GET /api/v1/auth/tokens")
def _tokens(s: Scenario, row: Row) -> Req:
    def mine_only(r: httpx.Response) -> str | None:
        me = s.m(row.caller)
        owners = {t["party_id"] for t in r.json()["items"]}
        if row.caller == "admin":  # the node admin sees every party's tokens
            return None if len(owners) == len(MEMBERS) else f"admin sees only {owners}"
        return None if owners == {me.id} else f"lists tokens of other parties: {owners}"

    return Req("GET", f"{API_PREFIX}/auth/tokens", params={"limit": 1000}, on_allowed=mine_only)


@builds("DELETE /api/v1/auth/tokens/{token_id}")
def _revoke_token(s: Scenario, row: Row) -> Req:
    if row.ownership == "missing":
        return Req("DELETE", f"{API_PREFIX}/auth/tokens/{MISSING['token']}")
    cred = pty.issue_credential(s.node, None, s.party(row).id, "spare")
    dead = lambda r: None if s.me(cred.token).status_code == 401 else "token still works"  # noqa: E731
    alive = lambda: None if s.me(cred.token).status_code == 200 else "token was revoked"  # noqa: E731
    return Req(
        "DELETE", f"{API_PREFIX}/auth/tokens/{cred.token_id}", on_allowed=dead, on_denied=alive
    )


@builds("GET /api/v1/access-log")
def _access_log(s: Scenario, row: Row) -> Req:
    return _get("/access-log")


@builds("POST /api/v1/grants")
def _grant(s: Scenario, row: Row) -> Req:
    body: dict[str, Any] = {"grantee_id": s.m("auth2").id}
    if row.variant != "all my instruments":
        body["instrument_id"] = s.instrument_for(row)["id"]
    return Req(
        "POST",
        f"{API_PREFIX}/grants",
        json=body,
        on_allowed=lambda r: None if (r.json()["owner_id"] == s.m(row.caller).id) else r.text,
    )


@builds("GET /api/v1/grants")
def _grants(s: Scenario, row: Row) -> Req:
    s.granted_instrument()  # man1 granted man2, op2, nb2 and admin
    s._memoize(
        "op2 grant",
        lambda: access.create_grant(
            s.node, s.m("op2").actor, grantee_id=s.m("nb1").id, instrument_id=None
        ),
    )

    def involved(r: httpx.Response) -> str | None:
        me = s.m(row.caller).id
        foreign = [g for g in r.json()["items"] if me not in (g["owner_id"], g["grantee_id"])]
        return f"lists grants of others: {foreign}" if foreign else None

    return Req("GET", f"{API_PREFIX}/grants", on_allowed=involved)


@builds("DELETE /api/v1/grants/{grant_id}")
def _revoke_grant(s: Scenario, row: Row) -> Req:
    if row.ownership == "missing":
        return Req("DELETE", f"{API_PREFIX}/grants/{MISSING['grt']}")
    if row.ownership == "granted":  # the caller received it from its twin
        owner, grantee = s.m(TWIN[row.caller]), s.m(row.caller)
    elif row.ownership == "own":
        owner, grantee = s.m(row.caller), s.m("auth1")
    else:
        role = next((r for r in ("man", "op") if row.caller in ROLES[r]), "man")
        owner, grantee = s.who(s.side(row), role), s.m("auth1")
    g = access.create_grant(s.node, owner.actor, grantee_id=grantee.id, instrument_id=None)

    def revoked_at() -> str | None:
        page = access.list_grants(s.node, owner.actor, limit=1000, cursor=None)
        return next(x["revoked_at"] for x in page.items if x["id"] == g["id"])

    return Req(
        "DELETE",
        f"{API_PREFIX}/grants/{g['id']}",
        on_allowed=lambda r: None if revoked_at() else "grant not revoked",
        on_denied=lambda: f"grant revoked at {revoked_at()}" if revoked_at() else None,
    )


@builds("POST /api/v1/certificates")
def _issue_cert(s: Scenario, row: Row) -> Req:
    body = {
        "number": f"MX-NEW-{s.n()}",
        "holder_id": s.m("man1").id,
        "category": "MI-003",
        "model": "EM-1",
        "accuracy_class": "B",
        "software": [
            {"name": "FW", "version": "1.0", "algorithm": "sha256", "checksum": "ab" * 32}
        ],
    }
    return Req(
        "POST",
        f"{API_PREFIX}/certificates",
        json=body,
        on_allowed=lambda r: (
            None if (r.json()["certificate"]["notified_body_id"] == s.m(row.caller).id) else r.text
        ),
    )


def _cert_id(s: Scenario, row: Row, status: str = "valid") -> str:
    if row.ownership == "missing":
        return MISSING["cer"]
    if row.expected == OK:  # a write that goes through: a fresh certificate of its own
        return s.fresh_cert(s.side(row), status)["id"]
    return s._memoize(("cert", s.side(row), status), lambda: s.fresh_cert(s.side(row), status))[
        "id"
    ]


@builds("GET /api/v1/certificates")
def _certs(s: Scenario, row: Row) -> Req:
    cert = s.cert("A")
    return Req(
        "GET", f"{API_PREFIX}/certificates", params={"number": cert["number"]}, target=cert["id"]
    )


@builds("GET /api/v1/certificates/{certificate_id}")
def _cert(s: Scenario, row: Row) -> Req:
    return _get(f"/certificates/{_cert_id(s, row)}")


@builds("GET /api/v1/certificates/{certificate_id}/history")
def _cert_history(s: Scenario, row: Row) -> Req:
    return _get(f"/certificates/{_cert_id(s, row)}/history")


def _cert_change(action: str, before: str, after: str) -> Builder:
    def build(s: Scenario, row: Row) -> Req:
        cid = _cert_id(s, row, before)
        body: dict[str, Any] = {"reason": "matrix"}
        if action == "revise":
            body["model"] = "EM-2"

        def status() -> str:
            return str(certs.get_certificate(s.node, cid)["status"])

        return Req(
            "POST",
            f"{API_PREFIX}/certificates/{cid}/{action}",
            json=body,
            on_allowed=lambda r: None if status() == after else f"status {status()}",
            on_denied=(
                None
                if row.ownership == "missing"
                else lambda: None if status() == before else f"status {status()}"
            ),
        )

    return build


for _action, _before, _after in (
    ("revise", "valid", "valid"),
    ("suspend", "valid", "suspended"),
    ("reinstate", "suspended", "valid"),
    ("withdraw", "valid", "withdrawn"),
):
    BUILDERS[f"POST /api/v1/certificates/{{certificate_id}}/{_action}"] = _cert_change(
        _action, _before, _after
    )


@builds("POST /api/v1/instruments")
def _register(s: Scenario, row: Row) -> Req:
    cid = MISSING["cer"] if row.ownership == "missing" else s.cert(s.side(row))["id"]
    serial = f"REG-{s.n()}"
    body = {"instruments": [{"serial": serial, "certificate_id": cid, "region": "DE21"}]}

    def registered() -> bool:
        with s.node.db.read() as conn:
            return (
                conn.execute(select(instruments.c.id).where(instruments.c.serial == serial)).first()
                is not None
            )

    return Req(
        "POST",
        f"{API_PREFIX}/instruments",
        json=body,
        on_allowed=lambda r: None if registered() else "not registered",
        on_denied=lambda: "registered anyway" if registered() else None,
    )


@builds("POST /api/v1/ingest/batches")
def _ingest(s: Scenario, row: Row) -> Req:
    ins = s.instrument("A")
    line = encode_batch(
        PrivateKey.generate(),
        instrument=ins["id"],
        counter=1,
        prev=GENESIS_PREV,
        software="ab" * 32,
        quantity="1-0:1.8.0",
        unit="kWh",
        t=[1_790_000_000_000 + s.n()],
        value=[1.0],
        status=[0],
    ).wire()

    def quarantined() -> bool:
        with s.node.db.read() as conn:
            return (
                conn.execute(select(quarantine.c.id).where(quarantine.c.wire == line)).first()
                is not None
            )

    def answered(r: httpx.Response) -> str | None:
        if r.json()["outcomes"][0].get("reason") != "unknown-key":
            return f"expected the unknown key to be named, got {r.text[:200]}"
        return None if quarantined() else "not quarantined"

    return Req(
        "POST",
        f"{API_PREFIX}/ingest/batches",
        content=line,
        headers={"Content-Type": "application/x-ndjson"},
        on_allowed=answered,
        on_denied=lambda: "quarantined anyway" if quarantined() else None,
    )


@builds("POST /api/v1/ingest/ocmf")
def _ingest_ocmf(s: Scenario, row: Row) -> Req:
    # a meter serial registered nowhere: the import names it and quarantines the record
    serial = f"NO-SUCH-METER-{s.n()}"
    key = ec.generate_private_key(ec.SECP256R1())
    body = (
        '{"FV":"1.0","PG":"T1","MS":"' + serial + '","RD":[{"TM":"2024-05-01T10:00:00,000+0200 S",'
        '"TX":"B","RV":1.0,"RI":"1-b:1.8.0","RU":"kWh","EF":"","ST":"G"}]}'
    )
    sd = key.sign(body.encode(), ec.ECDSA(hashes.SHA256())).hex().upper()
    text = f'OCMF|{body}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{sd}"}}'

    def quarantined() -> bool:
        with s.node.db.read() as conn:
            return (
                conn.execute(
                    select(quarantine.c.id).where(quarantine.c.wire == text.encode())
                ).first()
                is not None
            )

    def answered(r: httpx.Response) -> str | None:
        if r.json()["outcomes"][0].get("reason") != "unknown-instrument":
            return f"expected the unknown meter to be named, got {r.text[:200]}"
        return None if quarantined() else "not quarantined"

    return Req(
        "POST",
        f"{API_PREFIX}/ingest/ocmf",
        content=text.encode(),
        headers={"Content-Type": "text/plain"},
        on_allowed=answered,
        on_denied=lambda: "quarantined anyway" if quarantined() else None,
    )


@builds("GET /api/v1/instruments")
def _search(s: Scenario, row: Row) -> Req:
    ins = s.instrument_for(row)
    return Req(
        "GET", f"{API_PREFIX}/instruments", params={"serial": ins["serial"]}, target=ins["id"]
    )


@builds("GET /api/v1/instruments/{instrument_id}")
def _instrument(s: Scenario, row: Row) -> Req:
    return _get(f"/instruments/{s.instrument_for(row)['id']}")


@builds("GET /api/v1/instruments/{instrument_id}/events")
def _events(s: Scenario, row: Row) -> Req:
    return _get(f"/instruments/{s.instrument_for(row)['id']}/events")


@builds("GET /api/v1/instruments/{instrument_id}/measurements")
def _measurements(s: Scenario, row: Row) -> Req:
    return _get(f"/instruments/{s.instrument_for(row)['id']}/measurements")


@builds("GET /api/v1/instruments/{instrument_id}/timeline")
def _timeline(s: Scenario, row: Row) -> Req:
    iid = s.instrument_for(row)["id"]
    return Req(
        "GET",
        f"{API_PREFIX}/instruments/{iid}/timeline",
        on_allowed=lambda r: None if r.json()["instrument"]["id"] == iid else r.text[:200],
    )


@builds("GET /api/v1/instruments/{instrument_id}/evidence")
def _evidence(s: Scenario, row: Row) -> Req:
    iid = s.instrument_for(row)["id"]

    def verifies(r: httpx.Response) -> str | None:
        report = verify_bundle(r.content, trusted_key=s.node.key.public_key)
        if not report.ok or report.instrument_id != iid:
            return f"bundle of {report.instrument_id} does not verify: {report.failure}"
        return None

    return Req("GET", f"{API_PREFIX}/instruments/{iid}/evidence", on_allowed=verifies)


@builds("GET /api/v1/instruments/{instrument_id}/flags")
def _flags(s: Scenario, row: Row) -> Req:
    return _get(f"/instruments/{s.instrument_for(row)['id']}/flags")


def _with_results(s: Scenario, row: Row) -> dict[str, Any]:
    """The row's instrument, with an alert and a maintenance estimate (tests/_monitoring.py)."""
    ins = s.instrument_for(row)
    if row.ownership != "missing":
        s._memoize(
            ("results", ins["id"]),
            lambda: give_results(s.node, s.m("auth1").actor, ins["id"], "MI-003"),
        )
    return ins


@builds("GET /api/v1/monitoring/alerts")
def _alerts(s: Scenario, row: Row) -> Req:
    ins = _with_results(s, row)
    params = {"instrument": ins["id"]} if row.variant else None
    return Req("GET", f"{API_PREFIX}/monitoring/alerts", params=params, target=ins["id"],
               target_key="instrument")  # fmt: skip


@builds("GET /api/v1/monitoring/stream-alerts")
def _stream_alerts(s: Scenario, row: Row) -> Req:
    ins = s.instrument_for(row)
    if row.ownership != "missing":
        s._memoize(("stream", ins["id"]), lambda: give_stream_alert(s.node, ins["id"]))
    params = {"instrument": ins["id"]} if row.variant else None
    return Req("GET", f"{API_PREFIX}/monitoring/stream-alerts", params=params, target=ins["id"],
               target_key="instrument")  # fmt: skip


@builds("GET /api/v1/maintenance/plan")
def _plan(s: Scenario, row: Row) -> Req:
    ins = _with_results(s, row)
    params = {"instrument": ins["id"]} if row.variant else None
    return Req("GET", f"{API_PREFIX}/maintenance/plan", params=params, target=ins["id"],
               target_key="instrument")  # fmt: skip


def _poisoned(s: Scenario) -> str:
    """A fresh segment the streaming monitor gave up on (services/_streaming_queue.py)."""
    segment = f"intake-{s.n()}-matrix"
    with s.node.db.write() as conn:
        add_queued(conn, segment, readings=4, at="2026-03-02T00:00:00.000Z")
        record_failure(conn, segment, attempts=8, error="RuntimeError: x", next_try_at=None,
                       poisoned_at="2026-03-02T00:02:00.000Z")  # fmt: skip
    return segment


@builds("GET /api/v1/monitoring/stream-queue")
def _stream_queue(s: Scenario, row: Row) -> Req:
    segment = s._memoize("poisoned", lambda: _poisoned(s))
    return Req("GET", f"{API_PREFIX}/monitoring/stream-queue", target=segment,
               target_key="segment")  # fmt: skip


@builds("POST /api/v1/monitoring/stream-queue/{segment}/retry")
def _stream_retry(s: Scenario, row: Row) -> Req:
    segment = "intake-0-missing" if row.ownership == "missing" else _poisoned(s)

    def still_poisoned() -> str | None:
        with s.node.db.read() as conn:
            row = queued_row(conn, segment)
        return None if row is None or row.state == "poisoned" else f"{segment} was re-queued"

    return Req("POST", f"{API_PREFIX}/monitoring/stream-queue/{segment}/retry",
               json={"reason": "matrix"}, on_denied=still_poisoned,
               on_allowed=lambda r: None if r.json()["state"] == "pending" else r.text)  # fmt: skip


EVENT_STATE = {
    "placed_on_market": "registered",
    "put_into_service": "out_of_service",
    "relocated": "in_service",
    "tamper_detected": "in_service",
    "verified": "in_service",
    "verification_failed": "in_service",
    "inspected": "in_service",
    "non_compliance_found": "in_service",
    "decommissioned": "in_service",
}
EVENT_DETAILS: dict[str, dict[str, Any]] = {
    "put_into_service": {"region": "DE30"},
    "relocated": {"region": "DE30"},
    "verified": {"verified_until": "2031-12-31"},
}


@builds(EVENTS)
def _record(s: Scenario, row: Row) -> Req:
    kind = row.variant
    if row.ownership == "missing":
        iid = MISSING["ins"]
    elif row.ownership == "unassigned":  # placed on the market, no operator yet
        iid = s.fresh_instrument("A", "placed")["id"]
    else:
        iid = s.fresh_instrument(s.side(row), EVENT_STATE[kind])["id"]
    body = {"kind": kind, "details": EVENT_DETAILS.get(kind, {})}

    def recorded(r: httpx.Response) -> str | None:
        page = ev.list_events(s.node, s.m("auth1").actor, iid)
        last = page.items[-1]
        return (
            None
            if (last["kind"], last["recorded_by"]) == (kind, s.m(row.caller).id)
            else (f"last event is {last}")
        )

    return Req("POST", f"{API_PREFIX}/instruments/{iid}/events", json=body, on_allowed=recorded)


@builds("POST /api/v1/declarations")
def _declare(s: Scenario, row: Row) -> Req:
    if row.ownership == "missing":
        cid, iids = MISSING["cer"], [MISSING["ins"]]
    else:
        cid, iids = s.cert(s.side(row))["id"], [s.instrument(s.side(row))["id"]]
    body = {"certificate_id": cid, "module": "D", "instrument_ids": iids}
    return Req(
        "POST",
        f"{API_PREFIX}/declarations",
        json=body,
        on_allowed=lambda r: (
            None if (r.json()["manufacturer_id"] == s.m(row.caller).id) else r.text
        ),
    )


@builds("GET /api/v1/declarations")
def _declarations(s: Scenario, row: Row) -> Req:
    side = s.side(row)
    return Req(
        "GET",
        f"{API_PREFIX}/declarations",
        params={"certificate_id": s.cert(side)["id"]},
        target=s.declaration(side)["id"],
    )


@builds("GET /api/v1/declarations/{declaration_id}")
def _declaration(s: Scenario, row: Row) -> Req:
    did = MISSING["doc"] if row.ownership == "missing" else s.declaration(s.side(row))["id"]
    return _get(f"/declarations/{did}")


@builds("GET /api/v1/surveillance/risk")
def _risk(s: Scenario, row: Row) -> Req:
    if row.variant == "type":  # registry alerts only (lake=false); the other variant asks the lake
        cid = MISSING["cer"] if row.ownership == "missing" else s.cert(s.side(row))["id"]
        return Req(
            "GET",
            f"{API_PREFIX}/surveillance/risk",
            params={"type": cid, "lake": "false"},
            on_allowed=lambda r: None if r.json()["type"]["certificate_id"] == cid else r.text,
        )
    iid = s.instrument_for(row)["id"]
    return Req(
        "GET",
        f"{API_PREFIX}/surveillance/risk",
        params={"instrument": iid},
        on_allowed=lambda r: None if r.json()["instrument"]["instrument_id"] == iid else r.text,
    )


@builds("POST /api/v1/surveillance/inspection-plans")
def _inspection_plan(s: Scenario, row: Row) -> Req:
    s.instrument("A")  # something on the market to plan for

    def planned(r: httpx.Response) -> str | None:
        plan = r.json()
        ok = plan["authority"] == s.m(row.caller).id and len(plan["digest"]) == 64
        return None if ok and plan["size"] >= 1 else r.text

    return Req(
        "POST",
        f"{API_PREFIX}/surveillance/inspection-plans",
        json={"budget": 2, "seed": 7, "lake": False},
        on_allowed=planned,
    )


@builds("POST /api/v1/surveillance/lot-decisions")
def _lot_decision(s: Scenario, row: Row) -> Req:
    if row.ownership == "missing":
        sample = [MISSING["ins"], s.fresh_instrument("A")["id"]]
    else:  # ISO 2859-1, lot of 10, AQL 6.5: inspect 2, accept with none failing
        sample = [s.fresh_instrument(s.side(row))["id"] for _ in range(2)]
    body = {
        "reference": f"LOT-{s.n()}",
        "scheme": "iso2859",
        "lot_size": 10,
        "aql": "6.5",
        "results": [{"instrument_id": i, "conforming": True} for i in sample],
    }

    def decided(r: httpx.Response) -> str | None:
        d = r.json()
        ok = (d["decision"], d["n"], d["decided_by"]) == ("accept", 2, s.m(row.caller).id)
        return None if ok else r.text

    return Req("POST", f"{API_PREFIX}/surveillance/lot-decisions", json=body, on_allowed=decided)


@builds("POST /api/v1/surveillance/non-compliance")
def _notify(s: Scenario, row: Row) -> Req:
    iid = MISSING["ins"] if row.ownership == "missing" else s.fresh_instrument(s.side(row))["id"]
    body = {
        "instrument_ids": [iid],
        "finding": "seal broken, register under-counts",
        "legal_basis": "MID 2014/32/EU Art. 40",
        "measures": ["replace the meter"],
        "deadline": (s.node.now() + timedelta(days=30)).date().isoformat(),
    }

    def kinds() -> list[str]:
        return [e["kind"] for e in ev.list_events(s.node, s.m("auth1").actor, iid).items]

    return Req(
        "POST",
        f"{API_PREFIX}/surveillance/non-compliance",
        json=body,
        on_allowed=lambda r: None if kinds()[-1] == "non_compliance_found" else str(kinds()),
        on_denied=(
            None
            if row.ownership == "missing"
            else lambda: "recorded anyway" if "non_compliance_found" in kinds() else None
        ),
    )


@builds("GET /api/v1/surveillance/non-compliance")
def _notices(s: Scenario, row: Row) -> Req:
    iid = s.instrument_for(row)["id"]
    notice = s._memoize(
        ("notice", iid),
        lambda: surveillance_svc.notify_non_compliance(
            s.node,
            s.m("auth1").actor,
            [iid],
            finding="MPE exceeded",
            measures=["repair"],
            legal_basis="MID 2014/32/EU Art. 40",
            deadline=(s.node.now() + timedelta(days=30)).date(),
        )[0],
    )
    return Req(
        "GET",
        f"{API_PREFIX}/surveillance/non-compliance",
        params={"open": "true", "limit": 1000},
        target=notice["id"],
    )


def _reported(key: str, expected: str) -> Callable[[httpx.Response], str | None]:
    def check(r: httpx.Response) -> str | None:
        doc = r.json()
        got = doc["instrument"]["id"] if key == "instrument" else doc["subject"]["id"]
        return None if got == expected else f"report on {got}, expected {expected}"

    return check


@builds("GET /api/v1/compliance/instruments/{instrument_id}")
def _compliance_instrument(s: Scenario, row: Row) -> Req:
    iid = s.instrument_for(row)["id"]
    return Req(
        "GET",
        f"{API_PREFIX}/compliance/instruments/{iid}",
        on_allowed=_reported("instrument", iid),
    )


@builds("GET /api/v1/compliance/manufacturers/{party_id}")
def _compliance_manufacturer(s: Scenario, row: Row) -> Req:
    pid = MISSING["pty"] if row.ownership == "missing" else s.who(s.side(row), "man").id
    return Req(
        "GET",
        f"{API_PREFIX}/compliance/manufacturers/{pid}",
        on_allowed=_reported("subject", pid),
    )


@builds("GET /api/v1/compliance/types/{certificate_id}")
def _compliance_type(s: Scenario, row: Row) -> Req:
    cid = MISSING["cer"] if row.ownership == "missing" else s.cert(s.side(row))["id"]
    return Req("GET", f"{API_PREFIX}/compliance/types/{cid}", on_allowed=_reported("subject", cid))


def _logged_instrument(s: Scenario, side: str) -> tuple[dict[str, Any], PrivateKey]:
    """An instrument of ``side`` in service whose device key the test holds."""

    def make() -> tuple[dict[str, Any], PrivateKey]:
        key = PrivateKey.generate()
        draft = inst.InstrumentDraft(
            serial=f"LOG-{side}-{s.n()}",
            certificate_id=s.cert(side)["id"],
            device_keys=(key.public_key.to_spki_b64(),),
        )
        ref = inst.register_instruments(s.node, s.who(side, "man").actor, [draft])[0][0]
        for kind in _PREPARE["in_service"]:
            ev.record_events(
                s.node,
                s.who(side, _WHO[kind]).actor,
                [ev.EventDraft(instrument_id=ref["id"], kind=EventKind(kind))],
            )
        return ref, key

    return cast(tuple[dict[str, Any], PrivateKey], s._memoize(("logged", side), make))


@builds("PUT /api/v1/instruments/{instrument_id}/event-log")
def _event_log(s: Scenario, row: Row) -> Req:
    side = "A" if row.caller in UNAUTHENTICATED or row.ownership == "missing" else s.side(row)
    ins, key = _logged_instrument(s, side)

    def device_log() -> bytes:  # one log per device: every upload sends the same records
        log = EventLog.in_memory(key, clock=lambda: s.node.now() - timedelta(days=1))
        log.append(DeviceEventKind.PROVISIONED, {"matrix": True})
        return b"".join(r.to_line() for r in log.records)

    iid = MISSING["ins"] if row.ownership == "missing" else ins["id"]
    return Req(
        "PUT",
        f"{API_PREFIX}/instruments/{iid}/event-log",
        content=cast(bytes, s._memoize(("device log", side), device_log)),
        headers={"Content-Type": "application/x-ndjson"},
        on_allowed=lambda r: None if r.json()["records"] >= 1 else r.text,
    )


@builds("POST /api/v1/verifications/evaluate")
def _evaluate(s: Scenario, row: Row) -> Req:
    iid = s.instrument("A")["id"]
    return Req(
        "POST",
        f"{API_PREFIX}/verifications/evaluate",
        json={"instrument_ids": [iid]},
        on_allowed=lambda r: None if r.json()["results"][0]["instrument_id"] == iid else r.text,
    )


@builds("POST /api/v1/verifications")
def _verifications(s: Scenario, row: Row) -> Req:
    from metrocloud.services import verification as ver

    signer = s.m(row.caller) if row.caller in ROLES["auth"] else s.m("auth1")
    ins = s.fresh_instrument("A") if row.expected == 201 else s.instrument("B")
    result = ver.evaluate(s.node, signer.actor, [ins["id"]])[0]
    body = {"results": [ver.sign_result(result, signer.key).to_json()]}

    def recorded() -> int:
        return len(ver.list_verifications(s.node, s.m("auth1").actor, ins["id"]).items)

    return Req(
        "POST",
        f"{API_PREFIX}/verifications",
        json=body,
        on_allowed=lambda r: None if recorded() == 1 else f"{recorded()} verifications",
        on_denied=lambda: None if recorded() == 0 else "recorded anyway",
    )


@builds("GET /api/v1/instruments/{instrument_id}/verifications")
def _verification_history(s: Scenario, row: Row) -> Req:
    return _get(f"/instruments/{s.instrument_for(row)['id']}/verifications")


# -- confidential exchange -----------------------------------------------------------------------

_NO_MESSAGE = "xch-DE-00000000000000000000000000"
_EXCHANGERS = ("man1", "nb1", "op1", "auth1", "man2", "nb2", "op2", "auth2")


def _others(caller: str, n: int) -> list[str]:
    return [m for m in _EXCHANGERS if m != caller][:n]


def _message(s: Scenario, row: Row, *, fresh: bool = False) -> str:
    """own: a message to the caller; foreign: one between two other parties."""
    if row.ownership == "missing":
        return _NO_MESSAGE
    if row.ownership == "own":
        sender, recipient = _others(row.caller, 1)[0], row.caller
    else:
        sender, recipient = _others(row.caller, 2)

    def make() -> Any:
        return xch_send(s.node, s.m(sender), [s.m(recipient)], f"document {s.n()}".encode())

    key = ("message", sender, recipient, s.n() if fresh else 0)
    return str(s._memoize(key, make).id)


@builds("POST /api/v1/exchange/keys")
def _exchange_key(s: Scenario, row: Row) -> Req:
    member = s.m("man1" if row.caller in UNAUTHENTICATED else row.caller)
    key = EncryptionKey.generate()
    body = bind_encryption_key(member.id, key.public_key, member.key).to_json()
    return Req(
        "POST",
        f"{API_PREFIX}/exchange/keys",
        json=body,
        on_allowed=lambda r: None if r.json()["key_id"] == key.key_id else r.text,
    )


@builds("GET /api/v1/exchange/keys/{party_id}")
def _exchange_key_of(s: Scenario, row: Row) -> Req:
    if row.ownership == "missing":
        return _get(f"/exchange/keys/{MISSING['pty']}")
    party = s.party(row)
    if party.party["role"] != "node_admin":
        enroll(s.node, party)
    return Req(
        "GET",
        f"{API_PREFIX}/exchange/keys/{party.id}",
        on_allowed=lambda r: None if r.json()["party_id"] == party.id else r.text,
    )


@builds("POST /api/v1/exchange/messages")
def _exchange_send(s: Scenario, row: Row) -> Req:
    caller = "man1" if row.caller in UNAUTHENTICATED else row.caller
    recipient = s.m(_others(caller, 1)[0])
    sealed = xch_seal(s.node, s.m(caller), [recipient], f"report {s.n()}".encode())
    return Req(
        "POST",
        f"{API_PREFIX}/exchange/messages",
        content=xch_body(sealed),
        headers={"Content-Type": "application/octet-stream"},
        on_allowed=lambda r: None if r.json()["id"] == sealed.id else r.text,
    )


@builds("GET /api/v1/exchange/messages")
def _exchange_list(s: Scenario, row: Row) -> Req:
    return Req(
        "GET",
        f"{API_PREFIX}/exchange/messages",
        params={"box": "in", "limit": 1000},
        target=_message(s, row),
    )


@builds("GET /api/v1/exchange/messages/{message_id}")
def _exchange_get(s: Scenario, row: Row) -> Req:
    mid = _message(s, row)
    return Req(
        "GET",
        f"{API_PREFIX}/exchange/messages/{mid}",
        on_allowed=lambda r: None if r.json()["envelope"]["header"]["id"] == mid else r.text,
    )


@builds("GET /api/v1/exchange/messages/{message_id}/content")
def _exchange_content(s: Scenario, row: Row) -> Req:
    mid = _message(s, row)
    return Req("GET", f"{API_PREFIX}/exchange/messages/{mid}/content")


@builds("POST /api/v1/exchange/messages/{message_id}/receipt")
def _exchange_receipt(s: Scenario, row: Row) -> Req:
    mid = _message(s, row, fresh=row.ownership == "own")
    caller = s.m("man1" if row.caller in UNAUTHENTICATED else row.caller)
    if mid == _NO_MESSAGE:  # a well-formed receipt of a message this node never saw
        envelope = xch_seal(s.node, s.m("auth2"), [s.m("nb2")], b"-").envelope
    else:
        envelope = _envelope_of(s, mid)
    recipient = caller.id if caller.id in envelope.recipients else envelope.recipients[0]
    body = sign_receipt(envelope, recipient, caller.key).to_json()
    return Req(
        "POST",
        f"{API_PREFIX}/exchange/messages/{mid}/receipt",
        json=body,
        on_allowed=lambda r: None if r.json()["recipient_id"] == caller.id else r.text,
    )


def _envelope_of(s: Scenario, message_id: str) -> Envelope:
    with s.node.db.read() as conn:
        row = conn.execute(
            select(exchange_messages.c.envelope).where(exchange_messages.c.id == message_id)
        ).one()
    return Envelope.from_bytes(row.envelope.encode())


@builds("GET /api/v1/exchange/messages/{message_id}/receipts")
def _exchange_receipts(s: Scenario, row: Row) -> Req:
    return _get(f"/exchange/messages/{_message(s, row)}/receipts")


@builds("POST /api/v1/grid/messages")
def _grid_messages(s: Scenario, row: Row) -> Req:
    return Req("POST", f"{API_PREFIX}/grid/messages", json={"messages": []})


@builds("POST /api/v1/grid/queries/{kind}")
def _grid_query(s: Scenario, row: Row) -> Req:
    return Req("POST", f"{API_PREFIX}/grid/queries/tree-head", json={"from": []})


@builds("GET /api/v1/grid/status")
def _grid_status(s: Scenario, row: Row) -> Req:
    node_id = s.node.node_id
    return Req(
        "GET",
        f"{API_PREFIX}/grid/status",
        on_allowed=lambda r: None if r.json()["node_id"] == node_id else f"status {r.text}",
    )


@builds("GET /api/v1/grid/statistics/{statistic}")
def _grid_statistic(s: Scenario, row: Row) -> Req:
    s.instrument("A")  # something to count

    def complete(r: httpx.Response) -> str | None:
        body = r.json()
        return None if body["complete"] and body["nodes"][0]["status"] == "ok" else r.text

    return Req(
        "GET",
        f"{API_PREFIX}/grid/statistics/non-compliance-rate",
        params={"by": "type"},
        on_allowed=complete,
    )


@builds("GET /api/v1/grid/cosignatures")
def _grid_cosignatures(s: Scenario, row: Row) -> Req:
    return _get("/grid/cosignatures")


@builds("POST /api/v1/grid/alerts")
def _grid_alert(s: Scenario, row: Row) -> Req:
    body = {
        "subject_type": "certificate",
        "subject_id": s.cert("A")["id"],
        "severity": "high",
        "title": f"matrix alert {s.n()}",
        "description": "seal can be lifted",
    }
    return Req("POST", f"{API_PREFIX}/grid/alerts", json=body)


@builds("GET /api/v1/grid/alerts")
def _grid_alerts(s: Scenario, row: Row) -> Req:
    return _get("/grid/alerts")


# --------------------------------------------------------------------------------------------
# The matrix is complete
# --------------------------------------------------------------------------------------------


def api_routes() -> set[str]:
    """Every "METHOD path" the app serves under /api/v1, except the docs and the schema."""
    app = create_app(cast(Node, object()))
    try:  # FastAPI >= 0.13x keeps included routers nested; flatten them
        from fastapi.routing import iter_route_contexts

        routes: Any = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI: app.routes is flat
        routes = app.routes
    skip = {app.openapi_url, app.docs_url, app.redoc_url}
    out = set()
    for r in routes:
        path = getattr(r, "path", None)
        if not path or not path.startswith(API_PREFIX) or path in skip:
            continue
        for method in sorted(getattr(r, "methods", None) or ()):
            if method != "HEAD":
                out.add(f"{method} {path}")
    return out


def test_every_route_is_in_the_matrix() -> None:
    routes = api_routes()
    in_matrix = {row.endpoint for row in MATRIX}
    assert len(routes) >= 32, routes  # the enumeration itself works
    assert routes - in_matrix == set(), "endpoints without authorization rows"
    assert in_matrix - routes == set(), "matrix rows for endpoints the app does not serve"
    assert set(BUILDERS) == routes, "every endpoint needs a request builder"


def test_every_endpoint_has_a_row_for_every_caller() -> None:
    blocks: dict[tuple[str, str], list[Row]] = {}
    for row in MATRIX:
        blocks.setdefault((row.endpoint, row.variant), []).append(row)
    for (endpoint, variant), rows in blocks.items():
        assert {r.caller for r in rows} == set(CALLERS), (endpoint, variant)
        keys = [(r.caller, r.ownership) for r in rows]
        assert len(keys) == len(set(keys)), f"duplicate rows in {endpoint} [{variant}]"
        for r in rows:  # whoever may act on its own records is also tried on foreign ones
            if r.ownership == "own":
                assert (r.caller, "foreign") in keys, r
            assert r.expected in (OK, HIDDEN, 201, 400, 401, 403, 404), r


# --------------------------------------------------------------------------------------------
# The matrix, run: one test per endpoint (and event kind), every row inside
# --------------------------------------------------------------------------------------------

BLOCKS = sorted({(r.endpoint, r.variant) for r in MATRIX})


@pytest.mark.parametrize(
    ("endpoint", "variant"), BLOCKS, ids=[f"{e}{f' [{v}]' if v else ''}" for e, v in BLOCKS]
)
def test_authorization_matrix(
    client: TestClient, world: World, endpoint: str, variant: str
) -> None:
    scenario = Scenario(client, world)
    failures = []
    for row in MATRIX:
        if (row.endpoint, row.variant) == (endpoint, variant):
            failures.extend(scenario.check(row))
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------------------------
# Authorization is decided before the body is read
# --------------------------------------------------------------------------------------------

GARBAGE: tuple[bytes, ...] = (b"{not json", b'{"surprise": [1, 2, 3]}', b"\xff\xfe\x00", b"[]", b"")
WRITES = sorted(
    {
        r.endpoint
        for r in MATRIX
        if r.method in ("POST", "PUT", "PATCH", "DELETE")
        and any(
            x.expected in (401, 403) and not x.by_body for x in MATRIX if x.endpoint == r.endpoint
        )
    }
)


def _refusals(endpoint: str) -> Iterator[Row]:
    """Refused rows of ``endpoint`` whose refusal does not depend on the body (one per key)."""
    seen = set()
    for row in MATRIX:
        key = (row.caller, row.ownership)
        if (
            row.endpoint == endpoint
            and row.expected in (401, 403)
            and not row.by_body
            and key not in seen
        ):
            seen.add(key)
            yield row


def _refuse_all(
    scenario: Scenario,
    endpoint: str,
    bodies: tuple[bytes, ...],
    headers: dict[str, str] | None = None,
) -> list[str]:
    failures = []
    for row in _refusals(endpoint):
        for body in bodies:
            resp, changed = scenario.send_raw(row, body, headers)
            if resp.status_code != row.expected:
                failures.append(
                    f"{row} with body {body!r}: expected {row.expected}, got "
                    f"{resp.status_code} {resp.text[:200]}"
                )
            elif changed:
                failures.append(f"{row} with body {body!r}: refused, but state changed")
    return failures


@pytest.mark.parametrize("endpoint", WRITES)
def test_refused_callers_are_refused_before_the_body_is_read(
    client: TestClient, world: World, endpoint: str
) -> None:
    """401/403 (never 400/422) whatever the body, and nothing changes."""
    failures = _refuse_all(Scenario(client, world), endpoint, GARBAGE)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("endpoint", WRITES)
def test_refused_callers_are_refused_before_their_signature_is_checked(
    client: TestClient, world: World, endpoint: str
) -> None:
    """docs/api.md: "a party without the right gets 403 whatever it sends" - a garbage
    Metrocloud-Signature (over a garbage body) included."""
    failures = _refuse_all(
        Scenario(client, world),
        endpoint,
        (b"{not json", b"{}"),
        {"Metrocloud-Signature": "keyid=zz;alg=x;sig=!"},
    )
    assert not failures, "\n".join(failures)


#: writes whose body is not JSON (NDJSON of signed batches)
NOT_JSON = {
    "POST /api/v1/ingest/batches",
    "POST /api/v1/ingest/ocmf",
    "PUT /api/v1/instruments/{instrument_id}/event-log",
    "POST /api/v1/exchange/messages",  # envelope and ciphertext (docs/exchange.md)
}


#: writes some party may make (the grid's node-to-node endpoints take no party at all)
PARTY_WRITES = sorted(
    e
    for e in WRITES
    if not e.startswith("DELETE")
    and any(r.expected in (OK, 201) for r in MATRIX if r.endpoint == e)
)


@pytest.mark.parametrize("endpoint", PARTY_WRITES)
def test_allowed_callers_get_their_garbage_body_rejected(
    client: TestClient, world: World, endpoint: str
) -> None:
    """The counterpart: the same garbage from a caller with the right is a 400, not a 2xx."""
    scenario = Scenario(client, world)
    row = next(r for r in MATRIX if r.endpoint == endpoint and r.expected in (OK, 201))
    resp, changed = scenario.send_raw(row, b"{not json")
    if endpoint in NOT_JSON:  # the body is not JSON at all: a JSON body is the wrong type
        assert resp.status_code == 415, (str(row), resp.text)
    else:
        assert resp.status_code == 400, (str(row), resp.text)
        assert resp.json()["type"].endswith("/malformed-json")
    assert not changed


def test_expired_token_is_401_but_public_endpoints_still_answer(
    client: TestClient, world: World
) -> None:
    """The fifth unauthenticated caller, which needs the node's clock moved past the TTL."""
    ttl = world.node.settings.token_ttl_days
    now = world.node.now()
    world.node.clock = lambda: now + timedelta(days=ttl, minutes=1)
    for member in (world.man1, world.admin):
        r = client.get(f"{API_PREFIX}/me", headers=member.headers)
        assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
        assert "www-authenticate" in r.headers
        assert client.get(f"{API_PREFIX}/ledger/head", headers=member.headers).status_code == 200
    world.node.clock = lambda: now + timedelta(days=ttl, minutes=-1)
    assert client.get(f"{API_PREFIX}/me", headers=world.man1.headers).status_code == 200


# --------------------------------------------------------------------------------------------
# Foreign reads land in the owner's access log; own reads do not
# --------------------------------------------------------------------------------------------


def _log(client: TestClient, member: Member) -> list[dict[str, Any]]:
    r = client.get(f"{API_PREFIX}/access-log", params={"limit": 1000}, headers=member.headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _entries(log: list[dict[str, Any]], reader: Member) -> set[tuple[str, str, bool]]:
    return {
        (e["action"], e["resource_id"], e["via_grant"]) for e in log if e["reader_id"] == reader.id
    }


def test_foreign_reads_are_in_the_owners_access_log(client: TestClient, world: World) -> None:
    s = Scenario(client, world)
    ia, ig, da = s.instrument("A"), s.granted_instrument(), s.declaration("A")
    auth1, nb1, man2 = world.auth1, world.nb1, world.man2
    for reader, path in (
        (auth1, f"/instruments/{ia['id']}"),
        (auth1, f"/instruments/{ia['id']}/events"),
        (nb1, f"/instruments/{ia['id']}"),
        (man2, f"/instruments/{ig['id']}"),
        (nb1, f"/declarations/{da['id']}"),
    ):
        assert client.get(API_PREFIX + path, headers=reader.headers).status_code == 200, path
    r = client.get(
        f"{API_PREFIX}/instruments", params={"serial": ia["serial"]}, headers=auth1.headers
    )
    assert [i["id"] for i in r.json()["items"]] == [ia["id"]]

    man1_log, op1_log = _log(client, world.man1), _log(client, world.op1)
    assert _entries(man1_log, auth1) == {
        ("instrument.read", ia["id"], False),
        ("events.read", ia["id"], False),
        ("instrument.search", ia["id"], False),
    }
    assert _entries(man1_log, nb1) == {
        ("instrument.read", ia["id"], False),
        ("declaration.read", da["id"], False),
    }
    assert _entries(man1_log, man2) == {("instrument.read", ig["id"], True)}
    # the operator co-owns the instrument data: it sees the same instrument reads
    assert _entries(op1_log, auth1) == _entries(man1_log, auth1)
    assert _entries(op1_log, man2) == {("instrument.read", ig["id"], True)}
    entry = next(e for e in man1_log if e["reader_id"] == auth1.id)
    assert entry["reader_role"] == "authority" and entry["resource_type"] == "instrument"
    # nobody else's log shows these reads
    for other in (world.man2, world.op2, world.nb1, world.auth1, world.admin):
        ids = {e["resource_id"] for e in _log(client, other)}
        assert not ids & {ia["id"], ig["id"], da["id"]}, other.party["name"]


def test_own_reads_are_not_in_the_access_log(client: TestClient, world: World) -> None:
    s = Scenario(client, world)
    ia, da = s.instrument("A"), s.declaration("A")
    man1, op1 = world.man1, world.op1
    for reader, path, params in (
        (man1, f"/instruments/{ia['id']}", None),
        (man1, f"/instruments/{ia['id']}/events", None),
        (man1, "/instruments", {"serial": ia["serial"]}),
        (man1, f"/declarations/{da['id']}", None),
        (man1, "/declarations", None),
        (op1, f"/instruments/{ia['id']}", None),
        (op1, "/instruments", {"serial": ia["serial"]}),
    ):
        r = client.get(API_PREFIX + path, params=params, headers=reader.headers)
        assert r.status_code == 200, (path, r.text)
    assert _entries(_log(client, man1), man1) == set()
    assert _entries(_log(client, op1), op1) == set()


def test_certificate_and_party_reads_are_not_access_logged(
    client: TestClient, world: World
) -> None:
    """Certificates and the party directory are public to members: reading them is no event."""
    s = Scenario(client, world)
    cert = s.cert("A")
    for path in (
        f"/certificates/{cert['id']}",
        f"/certificates/{cert['id']}/history",
        "/certificates",
        f"/parties/{world.man1.id}",
        "/parties",
    ):
        assert client.get(API_PREFIX + path, headers=world.man2.headers).status_code == 200
    assert _log(client, world.man1) == [] and _log(client, world.nb1) == []


def test_refused_reads_are_not_logged_as_reads(client: TestClient, world: World) -> None:
    s = Scenario(client, world)
    ia = s.instrument("A")
    for reader in (world.man2, world.op2, world.nb2):
        r = client.get(f"{API_PREFIX}/instruments/{ia['id']}", headers=reader.headers)
        assert r.status_code == 403
        assert _entries(_log(client, world.man1), reader) == set()


def test_whole_grant_reads_are_logged_as_via_grant(client: TestClient, world: World) -> None:
    s = Scenario(client, world)
    ia = s.instrument("A")
    r = client.post(
        f"{API_PREFIX}/grants", json={"grantee_id": world.op2.id}, headers=world.op1.headers
    )
    assert r.status_code == 201, r.text
    assert (
        client.get(f"{API_PREFIX}/instruments/{ia['id']}", headers=world.op2.headers).status_code
        == 200
    )
    assert ("instrument.read", ia["id"], True) in _entries(_log(client, world.op1), world.op2)
    # revoking the grant ends the access
    r = client.delete(f"{API_PREFIX}/grants/{r.json()['id']}", headers=world.op1.headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert (
        client.get(f"{API_PREFIX}/instruments/{ia['id']}", headers=world.op2.headers).status_code
        == 403
    )


# --------------------------------------------------------------------------------------------
# Beyond the listed rules: an operator without any relation to an instrument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["repaired", "software_updated", "decommissioned"])
def test_unrelated_operator_cannot_write_to_an_instrument_it_may_not_read(
    client: TestClient, world: World, kind: str
) -> None:
    """docs/concepts.md#roles: repaired, software updated, ... are for "the instrument's
    manufacturer or operator". An operator that never put an instrument into service is not
    its operator and may not even read it (403); it must not record those events on it -
    least of all decommission it (final). put_into_service is how an operator takes an
    unassigned instrument on."""
    s = Scenario(client, world)
    ins = s.fresh_instrument("A", "placed")  # man1's, on the market, no operator yet
    details = (
        {
            "software": {
                "name": "FW",
                "version": "1.0.0",
                "algorithm": "sha256",
                "checksum": "00" * 32,
            }
        }
        if kind == "software_updated"
        else {}
    )
    assert (
        client.get(f"{API_PREFIX}/instruments/{ins['id']}", headers=world.op2.headers).status_code
        == 403
    )
    before = s.tree_size()
    r = client.post(
        f"{API_PREFIX}/instruments/{ins['id']}/events",
        json={"kind": kind, "details": details},
        headers=world.op2.headers,
    )
    assert r.status_code == 403, (
        f"op2 recorded {kind} on man1's unassigned instrument: {r.status_code} {r.text}"
    )
    assert s.tree_size() == before
