"""POST /api/v1/public/verify: anyone checks a signed OCMF reading (no login, rate-limited).

Real receipts (tests/fixtures/ocmf, with their keys) for the request-key path; for the
registry path, meters registered here with a P-256 device key and records signed by it
(ECDSA-secp256r1-SHA256, DER signature as hex) with ``cryptography``.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from metrocloud.api.problems import PROBLEM_BASE
from metrocloud.api.ratelimit import TokenBucketLimiter
from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction
from metrocloud.formats.transparenz import ContainerValue, read_container
from metrocloud.services import certificates as certs
from metrocloud.services import instruments as inst
from metrocloud.store.schema import access_log
from metrocloud.trust.keys import PrivateKey
from tests.conftest import Member, World

URL = "/api/v1/public/verify"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf"
KEYS = {"verdict", "reason", "algorithm", "meter_serial", "readings", "key_source", "instrument"}
INSTRUMENT_KEYS = {
    "id",
    "serial",
    "category",
    "certificate_id",
    "certificate_status",
    "certificate_valid",
}


# -- helpers ----------------------------------------------------------------------------------


def keba() -> ContainerValue:
    """The first value of the KEBA KCP30 receipt: an OCMF record and its meter's key (hex)."""
    return read_container((FIXTURES / "keba_test.xml").read_bytes(), "keba_test.xml")[0]


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def spki_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def spki_hex(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.hex().upper()


def payload(serial: str, value: str = "12.3450", page: str = "T7") -> str:
    return json.dumps(
        {
            "FV": "1.0",
            "GI": "METROCLOUD TEST",
            "GS": "GW-1",
            "GV": "1.0.0",
            "PG": page,
            "MV": "EMH",
            "MM": "eHZ",
            "MS": serial,
            "MF": "1.0",
            "IS": True,
            "IL": "VERIFIED",
            "IF": ["RFID_PLAIN"],
            "IT": "ISO14443",
            "ID": "1F2D3A4F5506C7",
            "RD": [
                {
                    "TM": "2024-05-01T10:00:00,000+0000 S",
                    "TX": "B",
                    "RV": 12.2,
                    "RI": "1-b:1.8.0",
                    "RU": "kWh",
                    "EF": "",
                    "ST": "G",
                },
                {"TM": "2024-05-01T10:30:00,000+0000 S", "TX": "E", "RV": float(value)},
            ],
        },
        separators=(",", ":"),
    )


def sign(key: ec.EllipticCurvePrivateKey, body: str) -> str:
    """``OCMF|body|{SA, SD}`` with a DER ECDSA signature over exactly ``body``."""
    sd = key.sign(body.encode(), ec.ECDSA(hashes.SHA256())).hex().upper()
    return f'OCMF|{body}|{{"SA":"ECDSA-secp256r1-SHA256","SD":"{sd}"}}'


def register(
    world: World,
    man: Member,
    serial: str,
    *device_keys: str,
    category: InstrumentCategory = InstrumentCategory.DE_EV,
) -> tuple[dict[str, Any], str]:
    """(certificate, instrument id) of a meter registered by ``man`` under ``serial``."""
    nb = world.nb1 if man is world.man1 else world.nb2
    cert = world.certificate(nb, man, category=category)
    refs, _ = inst.register_instruments(
        world.node,
        man.actor,
        [
            inst.InstrumentDraft(
                serial=serial, certificate_id=cert["id"], device_keys=device_keys, region="DE21"
            )
        ],
    )
    return cert, refs[0]["id"]


def problem(resp: Any, status: int, *phrases: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["type"].startswith(PROBLEM_BASE), body
    for phrase in phrases:
        assert phrase in body["detail"], (phrase, body["detail"])
    return body


def ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == KEYS, body
    return body


@pytest.fixture
def meter(world: World) -> dict[str, Any]:
    """A DE-EV meter of man1 with one P-256 device key, and a record it signed."""
    key = p256()
    serial = "1EMH0012345678"
    cert, iid = register(world, world.man1, serial, spki_b64(key))
    return {
        "key": key,
        "serial": serial,
        "cert": cert,
        "id": iid,
        "ocmf": sign(key, payload(serial)),
    }


# -- the registry path ------------------------------------------------------------------------


def test_valid_via_the_registered_device_key_without_login(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    body = ok(client.post(URL, json={"ocmf": meter["ocmf"]}))
    assert body["verdict"] == "valid" and body["reason"] is None, body
    assert body["key_source"] == "registry"
    assert body["algorithm"] == "ECDSA-secp256r1-SHA256"
    assert body["meter_serial"] == meter["serial"]
    assert [r["transaction"] for r in body["readings"]] == ["B", "E"]
    assert body["readings"][1]["value"] == "12.345" and body["readings"][1]["unit"] == "kWh"
    assert body["instrument"] == {
        "id": meter["id"],
        "serial": meter["serial"],
        "category": "DE-EV",
        "certificate_id": meter["cert"]["id"],
        "certificate_status": "valid",
        "certificate_valid": True,
    }
    # public facts only: no operator, no region, no keys, no manufacturer
    assert set(body["instrument"]) == INSTRUMENT_KEYS


def test_a_bearer_token_is_neither_needed_nor_looked_at(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    for headers in ({"Authorization": "Bearer not-a-token"}, world.man2.headers):
        body = ok(client.post(URL, json={"ocmf": meter["ocmf"]}, headers=headers))
        assert body["verdict"] == "valid"


def test_tampered_reading_is_invalid(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    forged = meter["ocmf"].replace('"RV":12.345', '"RV":2.345')
    assert forged != meter["ocmf"]
    body = ok(client.post(URL, json={"ocmf": forged}))
    assert body["verdict"] == "invalid", body
    assert "signature does not verify" in body["reason"]
    assert "registered device key" in body["reason"] and meter["id"] in body["reason"]
    assert body["key_source"] == "registry" and body["instrument"]["id"] == meter["id"]
    assert body["readings"][1]["value"] == "2.345"  # what the record claims, for the consumer


def test_record_signed_by_another_key_is_invalid(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload(meter["serial"]))}))
    assert body["verdict"] == "invalid" and "signature does not verify" in body["reason"]


def test_any_registered_key_may_verify(client: TestClient, world: World) -> None:
    old, new = p256(), p256()
    register(world, world.man1, "MULTIKEY-1", spki_b64(old), spki_b64(new))
    for key in (old, new):
        body = ok(client.post(URL, json={"ocmf": sign(key, payload("MULTIKEY-1"))}))
        assert body["verdict"] == "valid" and body["key_source"] == "registry", body
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload("MULTIKEY-1"))}))
    assert body["verdict"] == "invalid" and "any of the 2 registered device keys" in body["reason"]


@pytest.mark.parametrize(
    ("action", "status"),
    [(CertificateAction.SUSPEND, "suspended"), (CertificateAction.WITHDRAW, "withdrawn")],
)
def test_certificate_no_longer_valid_is_reported(
    client: TestClient,
    world: World,
    meter: dict[str, Any],
    action: CertificateAction,
    status: str,
) -> None:
    certs.change_certificate(world.node, world.nb1.actor, meter["cert"]["id"], action, reason="t")
    body = ok(client.post(URL, json={"ocmf": meter["ocmf"]}))
    assert body["verdict"] == "valid"  # the signature still holds ...
    assert body["instrument"]["certificate_status"] == status  # ... the type approval does not
    assert body["instrument"]["certificate_valid"] is False


def test_expired_certificate_is_reported(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    now = world.node.now()
    world.node.clock = lambda: now + timedelta(days=11 * 366)
    body = ok(client.post(URL, json={"ocmf": meter["ocmf"]}))
    assert body["instrument"]["certificate_status"] == "expired"
    assert body["instrument"]["certificate_valid"] is False


def test_unknown_serial_without_key_is_an_error_with_reason(client: TestClient) -> None:
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload("NOT-REGISTERED-1"))}))
    assert body["verdict"] == "error"
    assert "no public key given" in body["reason"]
    assert "'NOT-REGISTERED-1' (MS) is not registered on this node" in body["reason"]
    assert body["key_source"] is None and body["instrument"] is None
    assert body["meter_serial"] == "NOT-REGISTERED-1" and len(body["readings"]) == 2


def test_record_without_meter_serial_and_key_is_an_error(client: TestClient) -> None:
    body = ok(client.post(URL, json={"ocmf": keba().signed_data}))  # KEBA gives GS only
    assert body["verdict"] == "error" and "names no meter serial (MS)" in body["reason"]
    assert body["meter_serial"] is None and body["key_source"] is None


def test_meter_with_only_an_ed25519_key_cannot_be_checked(client: TestClient, world: World) -> None:
    register(world, world.man1, "ED-ONLY-1", PrivateKey.generate().public_key.to_spki_b64())
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload("ED-ONLY-1"))}))
    assert body["verdict"] == "error", body
    assert "no registered device key of instrument" in body["reason"]
    assert "fits SA ECDSA-secp256r1-SHA256" in body["reason"] and "ed25519" in body["reason"]
    assert body["key_source"] == "registry" and body["instrument"]["serial"] == "ED-ONLY-1"


def test_meter_without_device_keys_is_an_error(client: TestClient, world: World) -> None:
    register(world, world.man1, "NO-KEYS-1")
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload("NO-KEYS-1"))}))
    assert body["verdict"] == "error" and "has no registered device key" in body["reason"]


def test_shared_serial_prefers_the_only_ev_charging_meter(client: TestClient, world: World) -> None:
    key = p256()
    register(world, world.man1, "SHARED-1", category=InstrumentCategory.MI_003)
    _, ev_id = register(world, world.man2, "SHARED-1", spki_b64(key))
    body = ok(client.post(URL, json={"ocmf": sign(key, payload("SHARED-1"))}))
    assert body["verdict"] == "valid" and body["instrument"]["id"] == ev_id


def test_ambiguous_serial_is_a_conflict(client: TestClient, world: World) -> None:
    key = p256()
    for man in (world.man1, world.man2):
        register(world, man, "SHARED-2", spki_b64(p256()), category=InstrumentCategory.MI_003)
    resp = client.post(URL, json={"ocmf": sign(key, payload("SHARED-2"))})
    problem(resp, 409, "meter serial 'SHARED-2' is ambiguous", "2 instruments")


# -- the key comes with the request -------------------------------------------------------------


def test_real_receipt_with_its_key_is_valid(client: TestClient) -> None:
    value = keba()
    body = ok(client.post(URL, json={"ocmf": value.signed_data, "public_key": value.public_key}))
    assert body["verdict"] == "valid", body
    assert body["key_source"] == "request" and body["instrument"] is None
    assert body["readings"][0]["value"] == "1234.56"


def test_real_receipt_with_another_key_is_invalid(client: TestClient) -> None:
    body = ok(client.post(URL, json={"ocmf": keba().signed_data, "public_key": spki_hex(p256())}))
    assert body["verdict"] == "invalid" and "signature does not verify" in body["reason"]


def test_unusable_key_is_an_error(client: TestClient) -> None:
    body = ok(client.post(URL, json={"ocmf": keba().signed_data, "public_key": "00ff"}))
    assert body["verdict"] == "error" and body["key_source"] == "request", body


def test_instrument_is_shown_when_the_key_came_with_the_request(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    body = ok(client.post(URL, json={"ocmf": meter["ocmf"], "public_key": spki_hex(meter["key"])}))
    assert body["verdict"] == "valid" and body["key_source"] == "request"
    assert body["instrument"]["id"] == meter["id"]


def test_container_with_one_value_uses_its_key(client: TestClient) -> None:
    xml = (FIXTURES / "keba_test.xml").read_text()
    first = xml[: xml.index("</value>") + len("</value>")] + "</values>"
    body = ok(client.post(URL, json={"xml": first}))
    assert body["verdict"] == "valid" and body["key_source"] == "request", body


def test_container_with_several_values_is_refused(client: TestClient) -> None:
    xml = (FIXTURES / "keba_test.xml").read_text()
    end = 0
    for _ in range(3):
        end = xml.index("</value>", end) + len("</value>")
    problem(client.post(URL, json={"xml": xml[:end] + "</values>"}), 422, "holds 3 values")


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"ocmf": "hello"}, "ocmf: expected OCMF|payload|signature"),
        ({"ocmf": 'OCMF|{"FV":"1.0"|{"SD":"00"}'}, "ocmf: "),
        ({"ocmf": "XML|{}|{}"}, "header is 'XML'"),
        ({}, "give exactly one of 'ocmf'"),
        ({"ocmf": "OCMF|{}|{}", "xml": "<values/>"}, "give exactly one of 'ocmf'"),
        ({"ocmf": 42}, "ocmf"),
        ({"ocmf": "OCMF|{}|{}", "surprise": 1}, "surprise"),
        ({"xml": "<values><value>"}, "invalid XML"),
        ({"xml": "<Billing/>"}, "not a Transparenzsoftware container"),
    ],
)
def test_not_one_ocmf_record_is_422(client: TestClient, body: Any, phrase: str) -> None:
    problem(client.post(URL, json=body), 422, phrase)


def test_body_that_is_no_json_object_is_refused(client: TestClient) -> None:
    problem(client.post(URL, json=["OCMF|{}|{}"]), 422, "body")
    body = problem(client.post(URL, content=b"OCMF|{}|{}"), 400, "not valid JSON")
    assert body["type"].endswith("/malformed-json")


def test_oversized_body_is_413(client: TestClient) -> None:
    big = {"ocmf": "OCMF|" + "x" * (64 * 1024) + "|{}"}
    problem(client.post(URL, json=big), 413, "65536 bytes (64 KiB)")


def test_oversized_body_without_length_is_cut_off(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"ocmf": "'
        for _ in range(10):
            yield b"x" * 10_000

    resp = client.post(URL, content=chunks(), headers={"Content-Type": "application/json"})
    problem(resp, 413, "64 KiB")


def test_nothing_is_written(client: TestClient, world: World, meter: dict[str, Any]) -> None:
    def counts() -> tuple[int, int]:
        with world.node.db.read() as conn:
            logged = conn.execute(select(func.count()).select_from(access_log)).scalar_one()
            return world.node.log.tree_size(conn), int(logged)

    before = counts()
    ok(client.post(URL, json={"ocmf": meter["ocmf"]}))
    ok(client.post(URL, json={"ocmf": sign(p256(), payload("NOT-REGISTERED-2"))}))
    assert counts() == before


# -- the rate limit -----------------------------------------------------------------------------


def test_over_the_limit_is_429_with_retry_after(
    client: TestClient, world: World, meter: dict[str, Any]
) -> None:
    world.node.settings.public_verify_per_minute = 3  # burst 3, one token every 20 s
    for _ in range(3):
        ok(client.post(URL, json={"ocmf": meter["ocmf"]}))
    resp = client.post(URL, json={"ocmf": meter["ocmf"]})
    body = problem(resp, 429, "more than 3 requests a minute", "retry in")
    assert body["type"] == PROBLEM_BASE + "rate-limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 20
    # refused before the body is read: garbage and oversized bodies get 429 too
    assert client.post(URL, content=b"{not json").status_code == 429
    assert client.post(URL, content=b"x" * 100_000).status_code == 429
    # other public endpoints are not limited
    assert client.get("/api/v1/node").status_code == 200


def test_limit_zero_turns_it_off(client: TestClient, world: World) -> None:
    world.node.settings.public_verify_per_minute = 0
    for _ in range(30):
        assert client.post(URL, json={"ocmf": "hello"}).status_code == 422


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_per_client() -> None:
    clock = Clock()
    lim = TokenBucketLimiter(60, 2, clock=clock)
    assert lim.acquire("a") is None and lim.acquire("a") is None
    wait = lim.acquire("a")
    assert wait is not None and wait == pytest.approx(1.0)
    assert lim.acquire("b") is None  # another client has its own bucket
    clock.t += 0.5
    assert lim.acquire("a") == pytest.approx(0.5)
    clock.t += 0.5
    assert lim.acquire("a") is None
    clock.t += 100
    assert lim.acquire("a") is None and lim.acquire("a") is None
    assert lim.acquire("a") is not None


def test_token_bucket_memory_is_bounded() -> None:
    clock = Clock()
    lim = TokenBucketLimiter(60, 5, max_clients=100, clock=clock)
    for i in range(1000):
        lim.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) == 100
    clock.t += 5.0  # every bucket is full again: idle clients are forgotten
    lim.acquire("10.9.9.9")
    assert len(lim) == 1


def test_token_bucket_allows_exactly_the_burst_across_threads() -> None:
    lim = TokenBucketLimiter(60, 20, clock=Clock())
    allowed: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        allowed.append(sum(lim.acquire("same") is None for _ in range(50)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 20


@pytest.mark.parametrize("serial", ["a\u0000b", "x" * 65, " lead", "ü-meter"])
def test_serial_the_registry_cannot_hold_is_not_looked_up(client: TestClient, serial: str) -> None:
    body = ok(client.post(URL, json={"ocmf": sign(p256(), payload(serial))}))
    assert body["verdict"] == "error" and "is not registered on this node" in body["reason"]
    assert body["meter_serial"] == serial and body["instrument"] is None
