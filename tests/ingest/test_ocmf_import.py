"""Imported OCMF becomes measurements of the registered EV charging instrument (issue #4).

Real records from the field (tests/fixtures/ocmf, see its README) and records signed on the
spot: each check of :mod:`metrocloud.ingest.ocmf` names its reason, rejected records are in
the quarantine with it, accepted readings reach the lake exactly once.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.parties import PartyRole
from metrocloud.formats._ocmf_crypto import decode_binary_text
from metrocloud.formats.ocmf import read_values
from metrocloud.ingest import REASONS
from metrocloud.lake import DuckDBEngine, Lake
from metrocloud.services import certificates as certs
from metrocloud.services import instruments as inst
from metrocloud.services import measurements as svc
from metrocloud.services.node import Node
from metrocloud.store.schema import intake_batches, intake_flags, intake_rounds, quarantine

from ..conftest import World
from ..formats._support import FIXTURES, Signer, container, payload, reading, record

EV = InstrumentCategory.DE_EV


def _spki_b64(der: bytes) -> str:
    key = serialization.load_der_public_key(der)
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(spki).decode()


def _fixture_key(name: str) -> str:
    value = read_values((FIXTURES / name).read_bytes(), name)[0]
    assert value.public_key
    return _spki_b64(decode_binary_text(value.public_key, value.key_encoding, "key"))


def _register(world: World, serial: str, *keys: str) -> str:
    cert = world.certificate(world.nb1, world.man1, category=EV, accuracy="A")
    refs, _ = inst.register_instruments(
        world.node,
        world.man1.actor,
        [
            inst.InstrumentDraft(
                serial=serial, certificate_id=cert["id"], region="DE21", device_keys=keys
            )
        ],
    )
    return str(refs[0]["id"])


def _import(node: Node, data: bytes, name: str = "test.xml") -> list[dict[str, Any]]:
    return [o.as_dict() for o in svc.import_ocmf(node, None, data, name, "file").outcomes]


def _lake_rows(node: Node, instrument: str) -> list[dict[str, Any]]:
    assert svc.flush_lake(node) is not None
    engine = DuckDBEngine(Lake.open(node.settings.lake_path()))
    try:
        rows = engine.instrument_readings(instrument).to_pylist()
    finally:
        engine.close()
    return rows


def _quarantined(node: Node) -> list[Any]:
    with node.db.read() as conn:
        return conn.execute(select(quarantine).order_by(quarantine.c.id)).all()


# --- real records -------------------------------------------------------------------------------


def test_a_real_charging_record_becomes_measurements_of_its_instrument(world: World) -> None:
    iid = _register(world, "33019230", _fixture_key("chargepoint_3.xml"))
    data = (FIXTURES / "chargepoint_3.xml").read_bytes()
    outcomes = _import(world.node, data)
    assert [o["status"] for o in outcomes] == ["accepted"]
    assert outcomes[0]["instrument"] == iid and outcomes[0]["readings"] == 2
    assert outcomes[0]["counter"] == -1
    # the same file again: acknowledged, stored once
    again = _import(world.node, data)
    assert again[0]["status"] == "duplicate" and again[0]["counter"] == -1
    rows = _lake_rows(world.node, iid)
    assert [(r["quantity"], r["value"], r["unit"], r["status"]) for r in rows] == [
        ("1-0:1.8.0", 0.0, "kWh", 0),
        ("1-0:1.8.0", 1.304, "kWh", 0),
    ]
    assert [r["t"].isoformat() for r in rows] == [
        "2021-04-09T07:09:51+00:00",
        "2021-04-09T07:21:30+00:00",
    ]
    assert {r["batch_counter"] for r in rows} == {-1}
    # the stored wire is the record's exact bytes, its digest their SHA-256
    with world.node.db.read() as conn:
        row = conn.execute(select(intake_batches)).one()
    text = read_values(data, "x")[0].signed_data
    assert text is not None
    assert row.digest == hashlib.sha256(text.strip().encode()).hexdigest()
    assert row.segment is not None  # flushed: in a lake segment, its round gone
    with world.node.db.read() as conn:
        assert conn.execute(select(intake_rounds)).all() == []


def test_a_session_in_two_records_and_its_tampered_copy(world: World) -> None:
    iid = _register(world, "000033022620", _fixture_key("test_ocmf_ebee_01.xml"))
    good = _import(world.node, (FIXTURES / "test_ocmf_ebee_01.xml").read_bytes())
    assert [o["status"] for o in good] == ["accepted", "accepted"]
    assert [o["counter"] for o in good] == [-1, -2]
    bad = _import(world.node, (FIXTURES / "test_ocmf_ebee_02.xml").read_bytes())
    # record 0 has its value changed (7763 for 7753): the signature fails; record 1 is
    # the same record as before: a duplicate
    assert [(o["status"], o.get("reason")) for o in bad] == [
        ("rejected", "bad-signature"),
        ("duplicate", None),
    ]
    q = _quarantined(world.node)
    assert [(r.reason, r.instrument_id) for r in q] == [("bad-signature", iid)]
    assert b"7763" in q[0].wire
    rows = _lake_rows(world.node, iid)
    assert [r["value"] for r in rows] == [7753.0, 7753.0]


def test_every_real_file_gets_an_answer(world: World) -> None:
    """Files that are not OCMF are a clear error; every OCMF value an outcome."""
    for path in sorted(FIXTURES.glob("*.xml")):
        try:
            outcomes = _import(world.node, path.read_bytes(), path.name)
        except InvalidInput as exc:
            assert path.name in exc.message
            continue
        for o in outcomes:
            assert o["status"] == "rejected"  # nothing of these is registered here
            assert o["reason"] in REASONS


# --- records signed on the spot --------------------------------------------------------------


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("secp256r1")


@pytest.fixture
def meter(world: World, signer: Signer) -> str:
    return _register(world, "METER-1", _spki_b64(signer.public_der()))


def _one(world: World, text: str, key: str | None = None) -> dict[str, Any]:
    return _import(world.node, container((text, key)))[0]


def test_reasons_in_order(world: World, signer: Signer, meter: str) -> None:
    other = Signer.generate("secp256r1")
    assert _one(world, "OCMF|not json|{}")["reason"] == "malformed"
    assert _one(world, record(signer, payload(MS="METER-404")))["reason"] == "unknown-instrument"
    carried = other.public_der().hex()
    assert _one(world, record(other), carried)["reason"] == "unknown-key"
    assert _one(world, record(other))["reason"] == "bad-signature"
    # signed by the meter but with a meter status that is not G: a rule of the record
    body = payload(readings=[reading("B", 1.0, ST="M"), reading("E", 2.0, "11:00:00")])
    out = _one(world, record(signer, body))
    assert out["reason"] == "invalid-record" and "ST=M" in out["detail"]
    future = payload(
        readings=[
            {**reading("B", 1.0), "TM": "2099-05-01T10:00:00,000+0200 S"},
            {**reading("E", 2.0), "TM": "2099-05-01T11:00:00,000+0200 S"},
        ]
    )
    assert _one(world, record(signer, future))["reason"] == "implausible-time"
    ok = _one(world, record(signer))
    assert ok["status"] == "accepted" and ok["instrument"] == meter
    reasons = [r.reason for r in _quarantined(world.node)]
    assert reasons == [
        "malformed",
        "unknown-instrument",
        "unknown-key",
        "bad-signature",
        "invalid-record",
        "implausible-time",
    ]


def test_firmware_must_be_approved_and_the_instrument_is_flagged(
    world: World, signer: Signer, meter: str
) -> None:
    # the certificate approves software versions 1.0.0 and 1.1.0 (tests/conftest.py)
    assert _one(world, record(signer, payload(MF="1.1.0")))["status"] == "accepted"
    out = _one(world, record(signer, payload(pg="T2", MF="9.9.9")))
    assert out["reason"] == "unapproved-software" and "'9.9.9'" in out["detail"]
    with world.node.db.read() as conn:
        flags = conn.execute(select(intake_flags.c.instrument_id, intake_flags.c.kind)).all()
    assert [tuple(f) for f in flags] == [(meter, "unapproved-software")]


def test_a_withdrawn_certificate_approves_nothing(world: World, signer: Signer, meter: str) -> None:
    cert_id = inst.get_instrument(world.node, world.man1.actor, meter)["certificate_id"]
    certs.change_certificate(
        world.node, world.nb1.actor, cert_id, CertificateAction.WITHDRAW, reason="test"
    )
    out = _one(world, record(signer))
    assert out["reason"] == "unapproved-software" and "withdrawn" in out["detail"]


def test_a_revoked_carried_key_is_named(world: World, signer: Signer, meter: str) -> None:
    from metrocloud.store.schema import device_keys

    with world.node.db.write() as conn:
        conn.execute(device_keys.update().values(revoked_leaf=1))
    out = _one(world, record(signer), signer.public_der().hex())
    assert out["reason"] == "revoked-key"
    assert _one(world, record(signer))["reason"] == "unknown-key"  # no key in force


def test_a_gap_in_the_pages_is_flagged_not_refused(
    world: World, signer: Signer, meter: str
) -> None:
    data = container(
        (record(signer, payload(pg="T1")), None), (record(signer, payload(pg="T3")), None)
    )
    outcomes = _import(world.node, data)
    assert [o["status"] for o in outcomes] == ["accepted", "accepted"]
    assert all(o["flags"] == ["ocmf-sequence"] for o in outcomes)
    with world.node.db.read() as conn:
        kinds = conn.execute(select(intake_flags.c.kind)).scalars().all()
    assert kinds == ["ocmf-sequence"]


def test_a_record_twice_in_one_file_is_stored_once(
    world: World, signer: Signer, meter: str
) -> None:
    text = record(signer)
    outcomes = _import(world.node, container((text, None), (text, None)))
    assert [o["status"] for o in outcomes] == ["accepted", "duplicate"]
    assert outcomes[0]["counter"] == outcomes[1]["counter"] == -1
    rows = _lake_rows(world.node, meter)
    assert len(rows) == 2  # B and E of the one record
    assert pa.array([r["seq"] for r in rows]).to_pylist() == [0, 1]


def test_not_ocmf_is_a_clear_error(world: World) -> None:
    with pytest.raises(InvalidInput, match=r"upload\.txt"):
        _import(world.node, b"hello", "upload.txt")


# --- HTTP ---------------------------------------------------------------------------------------


def test_http_import(world: World, signer: Signer, meter: str) -> None:
    from fastapi.testclient import TestClient

    from metrocloud.api.app import create_app

    with TestClient(create_app(world.node), raise_server_exceptions=False) as client:
        r = client.post(
            "/api/v1/ingest/ocmf",
            content=record(signer).encode(),
            headers={**world.op1.headers, "Content-Type": "text/plain"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1 and r.json()["outcomes"][0]["instrument"] == meter
        r = client.post(
            "/api/v1/ingest/ocmf",
            content=b"{}",
            headers={**world.op1.headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 415
        assert r.headers["content-type"].startswith("application/problem+json")
        r = client.post(
            "/api/v1/ingest/ocmf",
            content=b"not ocmf",
            headers={**world.op1.headers, "Content-Type": "text/plain"},
        )
        assert r.status_code == 422 and "request body" in r.json()["detail"]
        r = client.post(
            "/api/v1/ingest/ocmf",
            content=record(signer).encode(),
            headers={**world.auth1.headers, "Content-Type": "text/plain"},
        )
        assert r.status_code == 403


def test_cli_import(signer: Signer, tmp_path: Path) -> None:
    """On the embedded default (the services above run on both databases)."""
    from typer.testing import CliRunner

    from metrocloud.cli import app
    from metrocloud.services.settings import Settings

    world = World(Node.open(Settings(data_dir=tmp_path / "node", country="DE")))
    for name, role in (
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
    ):
        world.admit(name, role)
    meter = _register(world, "METER-1", _spki_b64(signer.public_der()))
    f = tmp_path / "session.xml"
    f.write_bytes(container((record(signer), None), (record(Signer.generate("secp256r1")), None)))
    world.node.db.dispose()
    result = CliRunner().invoke(
        app, ["ocmf", "import", str(f), "--json", "--data-dir", str(world.node.settings.data_dir)]
    )
    assert result.exit_code == 1, result.output  # one record rejected
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and '"accepted"' in lines[0] and '"bad-signature"' in lines[1]
    assert meter in lines[0]
    reopened = Node.open(world.node.settings, create=False)
    try:
        assert len(_lake_rows(reopened, meter)) == 2  # the CLI flushed them into the lake
    finally:
        reopened.close()
