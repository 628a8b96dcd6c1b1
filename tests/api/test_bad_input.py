"""Acceptance: bad input gets a specific RFC 9457 problem, and a refused write changes nothing.

Every refusal is ``application/problem+json`` with ``type``, ``title``, ``status`` and a
``detail`` that names what was wrong (asserted on a key phrase), and - for writes - the
ledger does not grow and no instrument of a refused batch exists.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from metrocloud.api.problems import PROBLEM_BASE
from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.instruments import EventKind
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey
from metrocloud.trust.statements import REQUEST_DOMAIN, sign_request
from tests.conftest import Member, World

API = "/api/v1"
WITHDRAWN_RULE = "MID 2014/32/EU Art. 8 and Annex II module B point 7"


def problem(
    resp: httpx.Response, status: int, *phrases: str, code: str | None = None
) -> dict[str, Any]:
    """Assert an RFC 9457 answer with ``status`` whose detail contains every phrase."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status and body["title"] and body["type"].startswith(PROBLEM_BASE)
    if code is not None:
        assert body["type"] == PROBLEM_BASE + code, body
    for phrase in phrases:
        assert phrase in body["detail"], f"{phrase!r} not in detail {body['detail']!r}"
    return dict(body)


def tree_size(client: TestClient) -> int:
    r = client.get(f"{API}/ledger/head")
    assert r.status_code == 200, r.text
    return int(r.json()["tree_size"])


def registered(client: TestClient, member: Member, serial: str) -> bool:
    r = client.get(f"{API}/instruments", params={"serial": serial}, headers=member.headers)
    assert r.status_code == 200, r.text
    return bool(r.json()["items"])


def batch(cert: dict[str, Any], *serials: str) -> dict[str, Any]:
    return {
        "instruments": [
            {"serial": s, "certificate_id": cert["id"], "region": "DE21"} for s in serials
        ]
    }


@pytest.fixture
def cert(world: World) -> dict[str, Any]:
    return world.certificate(world.nb1, world.man1)


# -- malformed JSON and wrong types ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"instruments": [', b"\xff\xfe", b""],
    ids=["syntax", "truncated", "not-utf8", "empty"],
)
def test_malformed_json_is_400(client: TestClient, world: World, raw: bytes) -> None:
    before = tree_size(client)
    for path, member in (
        ("/instruments", world.man1),
        ("/certificates", world.nb1),
        ("/parties", world.admin),
    ):
        r = client.post(
            API + path, content=raw, headers={**member.headers, "Content-Type": "application/json"}
        )
        problem(r, 400, "request body is not valid JSON", code="malformed-json")
    r = client.post(f"{API}/auth/token", content=raw, headers={"Content-Type": "application/json"})
    problem(r, 400, "request body is not valid JSON", code="malformed-json")
    assert tree_size(client) == before


def _wrong_types(world: World, cert: dict[str, Any], ins: str) -> list[tuple[Any, ...]]:
    sw = {"name": "FW", "version": "1", "algorithm": "sha256", "checksum": "ab" * 32}
    good_cert = {
        "number": "DE-X-1",
        "holder_id": world.man1.id,
        "category": "MI-003",
        "model": "M",
        "accuracy_class": "B",
        "software": [sw],
    }
    return [
        (
            "/instruments",
            world.man1,
            {"instruments": [{"serial": 5, "certificate_id": cert["id"]}]},
            "instruments.0.serial",
        ),
        ("/instruments", world.man1, {"instruments": "all of them"}, "instruments"),
        (
            "/instruments",
            world.man1,
            {"instruments": [{"serial": "A1", "certificate_id": cert["id"], "region": 21}]},
            "instruments.0.region",
        ),
        ("/certificates", world.nb1, {**good_cert, "software": "FW 1.0"}, "software"),
        ("/certificates", world.nb1, {**good_cert, "category": "MI-999"}, "category"),
        ("/certificates", world.nb1, {**good_cert, "valid_until": "next year"}, "valid_until"),
        (
            "/certificates",
            world.nb1,
            {**good_cert, "software": [{**sw, "checksum": 7}]},
            "software.0.checksum",
        ),
        (f"/instruments/{ins}/events", world.auth1, {"kind": "exploded"}, "kind"),
        (
            f"/instruments/{ins}/events",
            world.auth1,
            {"kind": "inspected", "occurred_at": "soon"},
            "occurred_at",
        ),
        (
            f"/instruments/{ins}/events",
            world.auth1,
            {"kind": "inspected", "details": [1]},
            "details",
        ),
        ("/grants", world.man1, {"grantee_id": 42}, "grantee_id"),
        ("/parties", world.admin, {"name": "X", "role": "king"}, "role"),
        (
            "/declarations",
            world.man1,
            {"certificate_id": cert["id"], "module": "D", "instrument_ids": ins},
            "instrument_ids",
        ),
    ]


def test_wrong_types_are_422_naming_the_field(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    ins = world.instruments(world.man1, cert, 1)[0]["id"]
    before = tree_size(client)
    for path, member, body, field in _wrong_types(world, cert, ins):
        r = client.post(API + path, json=body, headers=member.headers)
        p = problem(r, 422, f"{field}: ", code="invalid-input")
        assert field in [e["loc"] for e in p["errors"]], (path, p)
    r = client.get(f"{API}/instruments", params={"limit": "many"}, headers=world.man1.headers)
    problem(r, 422, "query.limit: ", code="invalid-input")
    assert tree_size(client) == before


def test_unknown_fields_are_422(client: TestClient, world: World, cert: dict[str, Any]) -> None:
    body = batch(cert, "A1")
    body["instruments"][0]["colour"] = "blue"
    r = client.post(f"{API}/instruments", json=body, headers=world.man1.headers)
    problem(r, 422, "instruments.0.colour", code="invalid-input")
    assert not registered(client, world.man1, "A1")


# -- registration: all or nothing --------------------------------------------------------------


def test_unknown_certificate_on_registration_is_404(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    ghost = "cer-DE-00000000000000000000000000"
    body = batch(cert, "OK-1", "OK-2")
    body["instruments"].append({"serial": "GHOST-1", "certificate_id": ghost})
    before = tree_size(client)
    r = client.post(f"{API}/instruments", json=body, headers=world.man1.headers)
    problem(r, 404, f"certificate {ghost} does not exist", code="not-found")
    assert tree_size(client) == before
    assert not any(registered(client, world.man1, s) for s in ("OK-1", "OK-2", "GHOST-1"))


def test_duplicate_serial_within_a_batch_is_409_and_registers_nothing(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    before = tree_size(client)
    r = client.post(
        f"{API}/instruments",
        json=batch(cert, "D-1", "D-2", "D-3", "D-2"),
        headers=world.man1.headers,
    )
    problem(r, 409, "serial 'D-2' appears twice in this batch", code="conflict")
    assert tree_size(client) == before
    assert not any(registered(client, world.man1, s) for s in ("D-1", "D-2", "D-3"))


def test_duplicate_serial_against_existing_is_409_and_registers_nothing(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    r = client.post(f"{API}/instruments", json=batch(cert, "E-1"), headers=world.man1.headers)
    assert r.status_code == 201, r.text
    before = tree_size(client)
    r = client.post(
        f"{API}/instruments",
        json=batch(cert, "E-2", "E-3", "E-1", "E-4"),
        headers=world.man1.headers,
    )
    problem(r, 409, "serial 'E-1' is already registered", code="conflict")
    assert tree_size(client) == before
    assert not any(registered(client, world.man1, s) for s in ("E-2", "E-3", "E-4"))
    # the same serial is fine for another manufacturer (serials are per manufacturer)
    other = world.certificate(world.nb1, world.man2)
    r = client.post(f"{API}/instruments", json=batch(other, "E-1"), headers=world.man2.headers)
    assert r.status_code == 201, r.text


def test_duplicate_device_key_is_409(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    key = PrivateKey.generate().public_key.to_spki_b64()
    body = batch(cert, "K-1", "K-2")
    for item in body["instruments"]:
        item["device_keys"] = [key]
    before = tree_size(client)
    r = client.post(f"{API}/instruments", json=body, headers=world.man1.headers)
    problem(r, 409, "appears twice in this batch", code="conflict")
    assert tree_size(client) == before and not registered(client, world.man1, "K-1")


def test_unapproved_software_fails_the_whole_batch(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    body = batch(cert, *(f"SW-{i}" for i in range(50)))
    body["instruments"][-1]["software"] = {
        "name": "FW",
        "version": "6.6.6",
        "algorithm": "sha256",
        "checksum": "66" * 32,
    }
    before = tree_size(client)
    r = client.post(f"{API}/instruments", json=body, headers=world.man1.headers)
    p = problem(r, 422, "instrument SW-49", "is not approved by certificate", cert["number"])
    assert p["rule"].startswith("WELMEC 7.2")
    assert tree_size(client) == before
    assert not registered(client, world.man1, "SW-0")


def test_batch_of_10001_is_422_and_10000_is_accepted(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    before = tree_size(client)
    r = client.post(
        f"{API}/instruments",
        json=batch(cert, *(f"B{i}" for i in range(10_001))),
        headers=world.man1.headers,
    )
    problem(r, 422, "instruments: ", "10000", "10001", code="invalid-input")
    assert tree_size(client) == before
    assert not registered(client, world.man1, "B0")
    r = client.post(
        f"{API}/instruments",
        json=batch(cert, *(f"B{i}" for i in range(10_000))),
        headers=world.man1.headers,
    )
    assert r.status_code == 201, r.text[:300]
    assert len(r.json()["instruments"]) == 10_000
    assert tree_size(client) == before + 1  # one statement for the whole batch


def test_empty_batch_is_422(client: TestClient, world: World) -> None:
    r = client.post(f"{API}/instruments", json={"instruments": []}, headers=world.man1.headers)
    problem(r, 422, "instruments: ", code="invalid-input")


@pytest.mark.parametrize("action", [CertificateAction.WITHDRAW, CertificateAction.SUSPEND])
def test_registering_under_a_withdrawn_or_suspended_certificate_is_409_with_the_rule(
    client: TestClient, world: World, cert: dict[str, Any], action: CertificateAction
) -> None:
    certs.change_certificate(world.node, world.nb1.actor, cert["id"], action, reason="test")
    status = {"withdraw": "withdrawn", "suspend": "suspended"}[action.value]
    before = tree_size(client)
    r = client.post(f"{API}/instruments", json=batch(cert, "W-1"), headers=world.man1.headers)
    p = problem(
        r,
        409,
        f"certificate {cert['number']} is {status}",
        "no instrument may be registered",
        code="rule-violation",
    )
    assert p["rule"] == WITHDRAWN_RULE
    assert tree_size(client) == before and not registered(client, world.man1, "W-1")


# -- life-cycle rules ----------------------------------------------------------------------------


def test_verifying_a_decommissioned_instrument_is_409_naming_the_rule(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    for kind in (EventKind.PLACED_ON_MARKET, EventKind.DECOMMISSIONED):
        ev.record_events(
            world.node, world.man1.actor, [ev.EventDraft(instrument_id=iid, kind=kind)]
        )
    before = tree_size(client)
    r = client.post(
        f"{API}/instruments/{iid}/events",
        json={"kind": "verified", "details": {"verified_until": "2030-01-01"}},
        headers=world.auth1.headers,
    )
    p = problem(
        r,
        409,
        "cannot record verified for an instrument that is decommissioned",
        code="rule-violation",
    )
    assert p["rule"] == "national verification law; WELMEC 11.1"
    assert tree_size(client) == before


@pytest.mark.parametrize(
    ("kind", "details", "phrase"),
    [
        ("relocated", {}, "relocated needs details.region"),
        ("verified", {}, "verified needs details.verified_until"),
        ("verified", {"verified_until": "soon"}, "verified needs details.verified_until"),
        ("software_updated", {}, "software_updated needs details.software"),
    ],
)
def test_event_details_are_checked(
    client: TestClient,
    world: World,
    cert: dict[str, Any],
    kind: str,
    details: dict[str, Any],
    phrase: str,
) -> None:
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    ev.record_events(
        world.node,
        world.man1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.PLACED_ON_MARKET)],
    )
    ev.record_events(
        world.node,
        world.op1.actor,
        [ev.EventDraft(instrument_id=iid, kind=EventKind.PUT_INTO_SERVICE)],
    )
    who = world.auth1 if kind == "verified" else world.op1
    before = tree_size(client)
    r = client.post(
        f"{API}/instruments/{iid}/events",
        json={"kind": kind, "details": details},
        headers=who.headers,
    )
    problem(r, 422, phrase, code="invalid-input")
    assert tree_size(client) == before


def test_declaration_under_module_b_is_422(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    r = client.post(
        f"{API}/declarations",
        json={"certificate_id": cert["id"], "module": "B", "instrument_ids": [iid]},
        headers=world.man1.headers,
    )
    problem(r, 422, "module B is the type examination", code="invalid-input")


# -- request signatures ------------------------------------------------------------------------


def _signed_registration(
    client: TestClient, world: World, cert: dict[str, Any], signature: str, serial: str = "SIG-1"
) -> httpx.Response:
    return client.post(
        f"{API}/instruments",
        json=batch(cert, serial),
        headers={**world.man1.headers, "Metrocloud-Signature": signature},
    )


def test_signature_over_another_body_is_400(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    before = tree_size(client)
    sig = sign_request(batch(cert, "SIG-OTHER"), world.man1.key)
    r = _signed_registration(client, world, cert, sig)
    problem(r, 400, "does not verify", code="verification-failed")
    assert tree_size(client) == before and not registered(client, world.man1, "SIG-1")


def test_signature_by_another_key_is_400(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    before = tree_size(client)
    for key in (PrivateKey.generate(), world.man2.key):  # a stranger's, another party's
        sig = sign_request(batch(cert, "SIG-1"), key)
        r = _signed_registration(client, world, cert, sig)
        problem(
            r,
            400,
            f"request signed with key {key.key_id}",
            f"party's key is {world.man1.key.key_id}",
            code="verification-failed",
        )
    assert tree_size(client) == before and not registered(client, world.man1, "SIG-1")


MALFORMED_SIGNATURES = {
    "garbage": "garbage",
    "short keyid": "keyid=abc;alg=ed25519;sig=AAAA",
    "unknown alg": "keyid={kid};alg=rot13;sig=AAAA",
    "bad base64": "keyid={kid};alg=ed25519;sig=***not base64***",
    "no sig": "keyid={kid};alg=ed25519",
}


def test_malformed_signature_header_is_400(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    """docs/api.md: 400 for "a Metrocloud-Signature that does not verify"; docs/concepts.md:
    "a bad one is refused with 400". A header that cannot even be parsed does not verify."""
    before = tree_size(client)
    failures = []
    for name, header in MALFORMED_SIGNATURES.items():
        r = _signed_registration(client, world, cert, header.format(kid=world.man1.key.key_id))
        assert r.status_code < 500 and not registered(client, world.man1, "SIG-1"), r.text
        if r.status_code != 400 or "signature" not in r.json()["detail"]:
            failures.append(f"{name} ({header}): {r.status_code} {r.text[:200]}")
    assert tree_size(client) == before
    assert not failures, "\n".join(failures)


def _entry_payload(client: TestClient, leaf: int) -> dict[str, Any]:
    r = client.get(f"{API}/ledger/entries/{leaf}")
    assert r.status_code == 200, r.text
    return dict(json.loads(base64.b64decode(r.json()["entry"]))["payload"])


def test_good_signature_is_accepted_and_kept_in_the_ledger(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    writes = [
        (world.man1, "/instruments", batch(cert, "SIG-OK")),
        (
            world.nb1,
            "/certificates",
            {
                "number": "DE-SIG-1",
                "holder_id": world.man1.id,
                "category": "MI-003",
                "model": "M",
                "accuracy_class": "B",
                "software": [
                    {"name": "FW", "version": "1", "algorithm": "sha256", "checksum": "ab" * 32}
                ],
            },
        ),
        (
            world.auth1,
            f"/instruments/{iid}/events",
            {"kind": "inspected", "details": {"note": "ok"}},
        ),
        (world.nb1, f"/certificates/{cert['id']}/suspend", {"reason": "audit"}),
    ]
    for member, path, body in writes:
        before = tree_size(client)
        r = client.post(
            API + path,
            json=body,
            headers={**member.headers, "Metrocloud-Signature": sign_request(body, member.key)},
        )
        assert r.status_code in (200, 201), (path, r.text)
        leaf = r.json()["leaf_index"]
        assert tree_size(client) == before + 1 and leaf == before
        payload = _entry_payload(client, leaf)
        assert payload["signer"] == member.id
        rs = payload["request_signature"]
        assert (rs["key_id"], rs["alg"]) == (member.key.key_id, "ed25519"), rs
        # the kept signature is the party's own, over exactly what it sent
        member.key.public_key.verify(
            base64.b64decode(rs["sig"]), REQUEST_DOMAIN + canonical_json(body)
        )
    assert registered(client, world.man1, "SIG-OK")


def test_unsigned_write_has_no_request_signature_in_the_ledger(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    r = client.post(f"{API}/instruments", json=batch(cert, "UNSIGNED"), headers=world.man1.headers)
    assert r.status_code == 201, r.text
    payload = _entry_payload(client, r.json()["leaf_index"])
    assert "request_signature" not in payload
    assert payload["credential"] == world.man1.token.split("_")[1]


# -- lists: cursors and limits -------------------------------------------------------------------


def _list_endpoints(world: World, cert: dict[str, Any]) -> list[tuple[str, type]]:
    """Every list endpoint and the type of its cursor key."""
    iid = world.instruments(world.man1, cert, 1)[0]["id"]
    return [
        ("/parties", str),
        ("/auth/tokens", str),
        ("/access-log", int),
        ("/grants", str),
        ("/certificates", str),
        ("/instruments", str),
        (f"/instruments/{iid}/events", int),
        ("/declarations", str),
    ]


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


CURSORS: dict[str, Any] = {
    "garbage": lambda t: "this is no cursor!",
    "not-a-list": lambda t: _cursor({"after": "x"}),
    "wrong-arity": lambda t: _cursor(["a", "b"]),
    "boolean": lambda t: _cursor([True]),
    "wrong-type": lambda t: _cursor([12345] if t is str else ["ins-DE-x"]),
    "huge-number": lambda t: _cursor([10**30]),
}


@pytest.mark.parametrize("kind", list(CURSORS))
def test_unknown_cursor_is_422_on_every_list(
    client: TestClient, world: World, cert: dict[str, Any], kind: str
) -> None:
    failures = []
    for path, key_type in _list_endpoints(world, cert):
        cursor = CURSORS[kind](key_type)
        r = client.get(API + path, params={"cursor": cursor}, headers=world.man1.headers)
        if r.status_code != 422 or "is not one this node issued" not in r.json().get("detail", ""):
            failures.append(f"GET {path}?cursor={cursor} ({kind}): {r.status_code} {r.text[:160]}")
        else:
            problem(r, 422, code="invalid-input")
    assert not failures, "\n".join(failures)


def test_issued_cursors_page_through(
    client: TestClient, world: World, cert: dict[str, Any]
) -> None:
    """The counterpart: the node's own cursors work, pages do not overlap."""
    world.instruments(world.man1, cert, 5)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"{API}/instruments", params=params, headers=world.man1.headers)
        assert r.status_code == 200, r.text
        seen += [i["id"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize("limit", [0, -1, 1001, 5000])
def test_limit_out_of_range_is_422_on_every_list(
    client: TestClient, world: World, cert: dict[str, Any], limit: int
) -> None:
    for path, _ in _list_endpoints(world, cert):
        r = client.get(API + path, params={"limit": limit}, headers=world.man1.headers)
        problem(r, 422, "query.limit: ", code="invalid-input")
        assert r.json()["errors"][0]["loc"] == "query.limit"


# -- the framework's own refusals are problems too ---------------------------------------------


def test_unknown_path_and_wrong_method_are_problems(client: TestClient, world: World) -> None:
    problem(
        client.get(f"{API}/no-such-thing", headers=world.man1.headers),
        404,
        f"no endpoint at {API}/no-such-thing",
    )
    problem(
        client.put(f"{API}/certificates", json={}, headers=world.nb1.headers),
        405,
        "PUT is not allowed",
    )
