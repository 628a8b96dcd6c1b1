"""Forensic support: an instrument's timeline, evidence bundles, and their offline check.

The case (tests/_evidence.py) runs through the real services: registration, life-cycle
events, a declaration, certificate changes, signed batches through the intake (one lost on
the way, one quarantined) into the lake, and a read by another authority. The bundle is
then checked by the offline verifier, and broken in every way we can think of.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from metrocloud.domain.errors import Forbidden, InvalidInput, NotFound, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.formats import _evidence_zip as container
from metrocloud.formats._evidence_format import sign_manifest, verify_manifest_signature
from metrocloud.formats.evidence import CHECKS, BundleReport, verify_bundle
from metrocloud.services import access
from metrocloud.services import forensics as fx
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.schema import access_log, certificate_history, events, parties
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from metrocloud.trust.statements import SignedStatement, sign_statement
from tests._evidence import Case, populate
from tests.conftest import World
from tests.ingest.test_intake import T0

# -- the case on both databases ------------------------------------------------------------


@pytest.fixture
def case(world: World) -> Case:
    return populate(world)


def _types(entries: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in entries]


def test_the_timeline_tells_the_life_cycle_in_time_order(case: Case) -> None:
    world = case.world
    story = fx.timeline(world.node, world.man1.actor, case.instrument).to_json()
    entries = story["entries"]
    assert story["instrument"]["id"] == case.instrument
    assert story["window"] == {"start": None, "end": None}
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    assert set(_types(entries)) == {
        "registered",
        "certificate",
        "declaration",
        "event",
        "verification",
        "flag",
        "quarantine",
        "measurements",
        "access",
    }
    # life-cycle events carry their leaf index; the verification its result
    by_leaf = {e["leaf_index"]: e for e in entries if e["leaf_index"] is not None}
    assert set(case.leaves["events"]) <= set(by_leaf)
    [verified] = [e for e in entries if e["type"] == "verification"]
    assert (verified["details"]["kind"], verified["details"]["result"]) == ("verified", "passed")
    assert verified["details"]["recorded_by"] == world.auth1.id
    assert by_leaf[case.leaves["registered"][0]]["type"] == "registered"
    assert by_leaf[case.leaves["declarations"][0]]["type"] == "declaration"
    actions = [e["details"]["action"] for e in entries if e["type"] == "certificate"]
    assert actions == ["issue", "suspend", "reinstate"]
    # the other instrument of the same certificate is not in the story
    assert case.other not in json.dumps(story)
    # measurements: one quantity on one day, the 15 accepted readings, first and last value
    [day] = [e["details"] for e in entries if e["type"] == "measurements"]
    assert (day["quantity"], day["count"], day["unit"]) == ("1-0:1.8.0", 15, "kWh")
    assert (day["first_value"], day["last_value"]) == (100.0, 104.0)
    assert day["first_t"] == datetime.fromtimestamp(T0 / 1000, UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    # the intake's findings
    [flag] = [e for e in entries if e["type"] == "flag"]
    assert flag["details"]["kind"] == "counter-gap"
    [quarantined] = [e for e in entries if e["type"] == "quarantine"]
    assert quarantined["details"]["reason"] == "unknown-key"
    assert len(quarantined["details"]["wire_sha256"]) == 64
    # auth2's read, from both owners' logs, as one read
    [read] = [e["details"] for e in entries if e["type"] == "access"]
    assert (read["reader_id"], read["action"], read["reads"]) == (
        world.auth2.id,
        "instrument.read",
        1,
    )
    assert read["owners"] == sorted([world.man1.id, world.op1.id])


def _logged(node: Node, action: str) -> list[tuple[str, str]]:
    with node.db.read() as conn:
        rows = conn.execute(
            select(access_log.c.owner_id, access_log.c.reader_id).where(
                access_log.c.action == action
            )
        ).all()
    return sorted((r.owner_id, r.reader_id) for r in rows)


def test_only_authorities_the_owner_and_the_operator_read_the_forensic_record(
    case: Case,
) -> None:
    world = case.world
    node = world.node
    access.create_grant(
        node, world.man1.actor, grantee_id=world.man2.id, instrument_id=case.instrument
    )
    for who in ("auth1", "auth2", "man1", "op1"):
        fx.timeline(node, world.members[who].actor, case.instrument)
    for who in ("man2", "op2", "nb1", "nb2", "admin"):  # nb1 certified it; man2 holds a grant
        with pytest.raises(Forbidden) as refused:
            fx.timeline(node, world.members[who].actor, case.instrument)
        assert refused.value.rule is not None
        with pytest.raises(Forbidden):
            fx.export_bundle(node, world.members[who].actor, case.instrument)
    # reads by others than the owner and the operator land in their access logs
    logged = _logged(node, "forensics.timeline")
    assert (world.man1.id, world.auth1.id) in logged and (world.op1.id, world.auth1.id) in logged
    assert (world.op1.id, world.man1.id) in logged  # the operator sees the owner's read
    assert not any(reader in (world.man2.id, world.nb1.id) for _, reader in logged)
    fx.export_bundle(node, world.auth1.actor, case.instrument)
    assert _logged(node, "evidence.export") == sorted(
        [(world.man1.id, world.auth1.id), (world.op1.id, world.auth1.id)]
    )


def test_unknown_instruments_and_empty_windows_are_refused(case: Case) -> None:
    world = case.world
    with pytest.raises(NotFound):
        fx.timeline(world.node, world.auth1.actor, "ins-DE-00000000000000000000000000")
    t = datetime.now(UTC)
    with pytest.raises(InvalidInput, match="must be after"):
        fx.timeline(world.node, world.auth1.actor, case.instrument, start=t, end=t)


def _statement_leaves(case: Case) -> set[int]:
    """Every statement about the instrument, from the registry, independently."""
    with case.world.node.db.read() as conn:
        evs = set(
            conn.execute(
                select(events.c.leaf_index).where(events.c.instrument_id == case.instrument)
            ).scalars()
        )
        history = set(
            conn.execute(
                select(certificate_history.c.leaf_index).where(
                    certificate_history.c.certificate_id == case.certificate
                )
            ).scalars()
        )
        signers = [case.world.members[m].id for m in ("man1", "op1", "auth1", "nb1")]
        admissions = set(
            conn.execute(select(parties.c.leaf_index).where(parties.c.id.in_(signers))).scalars()
        )
    return (
        evs
        | history
        | admissions
        | set(case.leaves["registered"])
        | set(case.leaves["declarations"])
    )


def test_the_bundle_proves_every_statement_about_the_instrument_offline(
    case: Case, tmp_path: Path
) -> None:
    world = case.world
    out = tmp_path / "bundle.zip"
    bundle = fx.build_bundle(world.node, world.auth1.actor, case.instrument, out)
    assert out.read_bytes() == bundle.data
    assert bundle.sha256 == hashlib.sha256(bundle.data).hexdigest()
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left over
    node_key = world.node.key.public_key
    world.node.db.dispose()  # the check needs no node and no database
    report = verify_bundle(out)
    assert report.ok, report.failure
    assert [c.number for c in report.checks] == [n for n, _ in CHECKS]
    assert report.instrument_id == case.instrument
    assert report.node_id == world.node.node_id and report.key_id == node_key.key_id
    assert not report.key_pinned
    assert report.readings == case.readings == bundle.readings
    names = [n for n, _ in container.unpack(bundle.data)]
    leaves = {int(n.split("/")[-1].split(".")[0]) for n in names if n.startswith("ledger/entries/")}
    assert leaves == _statement_leaves(case)
    assert report.statements == len(leaves) == bundle.statements
    pinned = verify_bundle(out, trusted_key=node_key)
    assert pinned.ok and pinned.key_pinned
    stranger = verify_bundle(out, trusted_key=PrivateKey.generate().public_key)
    assert not stranger.ok
    status = {c.number: c.status for c in stranger.checks}
    assert status[2] == status[4] == status[5] == status[6] == "fail"


def test_a_window_restricts_the_timeline_and_the_readings(case: Case) -> None:
    world = case.world
    start = datetime.fromtimestamp(T0 / 1000, UTC) + timedelta(minutes=3)
    end = start + timedelta(minutes=5)
    story = fx.timeline(world.node, world.auth1.actor, case.instrument, start=start, end=end)
    assert [e.type for e in story.entries] == ["measurements"]
    assert story.entries[0].details["count"] == 5
    bundle = fx.export_bundle(world.node, world.op1.actor, case.instrument, start=start, end=end)
    report = verify_bundle(bundle.data, trusted_key=world.node.key.public_key)
    assert report.ok, report.failure
    assert report.readings == bundle.readings == 5
    assert bundle.statements == len(_statement_leaves(case))  # the whole life cycle, always


# -- one bundle, broken in many ways (SQLite; the verifier has no database anyway) ---------


class Made(tuple[bytes, PrivateKey]):
    """(bundle, node key), with a short repr for hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<bundle of {len(self[0])} bytes, node key {self[1].key_id[:12]}>"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    root = tmp_path_factory.mktemp("forensics")
    node = Node.open(Settings(data_dir=root / "node", country="DE"))
    world = World(node)
    for name, role in (
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
        ("auth2", PartyRole.AUTHORITY),
    ):
        world.admit(name, role)
    case = populate(world)
    data = fx.export_bundle(node, world.auth1.actor, case.instrument).data
    yield Made((data, node.key))
    node.db.dispose()


def _failed(report: BundleReport) -> set[int]:
    return {c.number for c in report.checks if c.status == "fail"}


@given(data=st.data())
def test_any_changed_byte_fails_verification(made: tuple[bytes, PrivateKey], data: Any) -> None:
    bundle, key = made
    at = data.draw(st.integers(0, len(bundle) - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    broken = bytearray(bundle)
    broken[at] ^= flip
    report = verify_bundle(bytes(broken), trusted_key=key.public_key)
    assert not report.ok, f"byte {at} ^ {flip} went unnoticed"
    assert report.failure is not None and report.failure.status in ("fail", "skip")


@given(data=st.data())
def test_a_cut_or_an_insertion_anywhere_fails(made: tuple[bytes, PrivateKey], data: Any) -> None:
    bundle, _key = made
    at = data.draw(st.integers(0, len(bundle) - 1), label="offset")
    if data.draw(st.booleans(), label="insert"):
        changed = bundle[:at] + data.draw(st.binary(min_size=1, max_size=8)) + bundle[at:]
    else:
        changed = bundle[:at] + bundle[at + data.draw(st.integers(1, 64)) :]
    assert changed != bundle
    assert not verify_bundle(changed).ok


def _members(bundle: bytes) -> dict[str, bytes]:
    return dict(container.unpack(bundle))


def _rebuild(members: dict[str, bytes], *, key: PrivateKey | None = None) -> bytes:
    """Re-hash every member into the manifest; re-sign it only when given the key."""
    manifest = json.loads(members["manifest.json"])
    for m in manifest["members"]:
        data = members[m["name"]]
        m["sha256"], m["size"] = hashlib.sha256(data).hexdigest(), len(data)
    raw = canonical_json(manifest)
    sig = sign_manifest(key, raw) if key is not None else members["manifest.sig"]
    rest = [(n, d) for n, d in members.items() if n not in ("manifest.json", "manifest.sig")]
    return container.pack([("manifest.json", raw), ("manifest.sig", sig), *rest])


def _an_event(members: dict[str, bytes]) -> str:
    return next(
        n
        for n, d in members.items()
        if n.startswith("ledger/entries/") and b'"instrument.event"' in d
    )


def test_an_altered_statement_fails_even_with_the_manifest_rehashed(
    made: tuple[bytes, PrivateKey],
) -> None:
    bundle, key = made
    members = _members(bundle)
    name = _an_event(members)
    signed = SignedStatement.from_bytes(members[name])
    body = json.loads(json.dumps(dict(signed.statement.body)))
    body["event"]["details"]["note"] = "rewritten afterwards"
    forged = sign_statement(
        type(signed.statement)(
            kind=signed.statement.kind,
            signer=signed.statement.signer,
            issued_at=signed.statement.issued_at,
            body=body,
            extra=signed.statement.extra,
        ),
        key,
    ).to_bytes()
    # without the node key: the manifest signature no longer holds
    members[name] = forged
    assert _failed(verify_bundle(_rebuild(members))) == {4, 7}
    # even the node itself (its key re-signing statement and manifest) cannot pass: the
    # statement is not the entry the log holds at that leaf
    report = verify_bundle(_rebuild(members, key=key), trusted_key=key.public_key)
    assert 7 in _failed(report) and {1, 2, 3, 4, 5, 6} - _failed(report) == {1, 2, 3, 4, 5, 6}
    [seven] = [c for c in report.checks if c.number == 7]
    assert "RFC 9162" in (seven.rule or "")


def test_a_changed_proof_node_fails(made: tuple[bytes, PrivateKey]) -> None:
    bundle, key = made
    members = _members(bundle)
    proofs = json.loads(members["ledger/proofs.json"])
    first = next(p for p in proofs["proofs"] if p["path"])
    h = bytearray(bytes.fromhex(first["path"][0]))
    h[0] ^= 1
    first["path"][0] = h.hex()
    members["ledger/proofs.json"] = canonical_json(proofs)
    assert _failed(verify_bundle(_rebuild(members))) == {4, 7}
    assert _failed(verify_bundle(_rebuild(members, key=key))) == {7}


def test_an_extra_member_or_trailing_bytes_fail(made: tuple[bytes, PrivateKey]) -> None:
    bundle, key = made
    members = container.unpack(bundle)
    extra = container.pack([*members, ("notes.txt", b"planted")])
    assert 3 in _failed(verify_bundle(extra))
    # listed in a manifest re-signed by the node key: still not a member a v1 bundle has
    resigned = _members(extra)
    manifest = json.loads(resigned["manifest.json"])
    manifest["members"].append({"name": "notes.txt", "sha256": "", "size": 0})
    manifest["members"].sort(key=lambda m: m["name"])
    resigned["manifest.json"] = canonical_json(manifest)
    assert 3 in _failed(verify_bundle(_rebuild(resigned, key=key)))
    assert _failed(verify_bundle(bundle + b"\x00")) == {1}
    assert _failed(verify_bundle(b"PK\x05\x06" + bundle)) >= {1}


def test_a_changed_reading_fails(made: tuple[bytes, PrivateKey]) -> None:
    bundle, key = made
    members = _members(bundle)
    table = pq.read_table(io.BytesIO(members["readings.parquet"]))
    values = table.column("value").to_pylist()
    values[0] -= 1.0  # the first reading of the day: the timeline's summary disagrees
    table = table.set_column(
        table.schema.get_field_index("value"), "value", pa.array(values, pa.float64())
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    members["readings.parquet"] = buffer.getvalue()
    assert _failed(verify_bundle(container.pack(list(members.items())))) == {3}
    assert _failed(verify_bundle(_rebuild(members))) == {4, 10}
    assert _failed(verify_bundle(_rebuild(members, key=key))) == {10}
    # another instrument's reading smuggled in, re-signed: refused by the extract check
    ids = table.column("instrument").to_pylist()
    ids[-1] = "ins-DE-00000000000000000000000000"
    other = table.set_column(0, "instrument", pa.array(ids, pa.string()))
    buffer = io.BytesIO()
    pq.write_table(other, buffer)
    members["readings.parquet"] = buffer.getvalue()
    assert 9 in _failed(verify_bundle(_rebuild(members, key=key)))


def test_a_bundle_of_another_node_fails_under_the_pinned_key(
    made: tuple[bytes, PrivateKey],
) -> None:
    bundle, key = made
    assert verify_bundle(bundle, trusted_key=key.public_key).ok
    other = PrivateKey.generate()
    report = verify_bundle(bundle, trusted_key=other.public_key)
    [two] = [c for c in report.checks if c.number == 2]
    assert two.status == "fail" and other.public_key.key_id in two.detail
    # a bundle whose manifest a stranger re-signed names the stranger's key: not the node's
    members = _members(bundle)
    assert _failed(verify_bundle(_rebuild(members, key=other), trusted_key=key.public_key)) >= {4}


def test_the_container_is_a_zip_any_tool_reads_and_only_its_canonical_form_verifies(
    made: tuple[bytes, PrivateKey],
) -> None:
    bundle, _key = made
    members = container.unpack(bundle)
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        assert z.testzip() is None
        assert [(i.filename, z.read(i)) for i in z.infolist()] == members
    rezipped = io.BytesIO()
    with zipfile.ZipFile(rezipped, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, data)
    assert _failed(verify_bundle(rezipped.getvalue())) == {1}


names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}(/[a-z0-9][a-z0-9_-]{0,8}){0,2}", fullmatch=True)


@given(
    st.dictionaries(
        names.filter(lambda n: ".." not in n), st.binary(max_size=300), min_size=1, max_size=6
    )
)
def test_the_container_round_trips_and_has_one_byte_form(members: dict[str, bytes]) -> None:
    items = list(members.items())
    data = container.pack(items)
    assert container.unpack(data) == items
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert [(i.filename, z.read(i)) for i in z.infolist()] == items
    with pytest.raises(VerificationError):
        container.unpack(data + b"x")


def test_an_ecdsa_manifest_signature_has_one_form() -> None:
    key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    manifest = b'{"format":"metrocloud-evidence-v1"}'
    for _ in range(8):  # some signatures come out with a high s: they are normalized
        signed = json.loads(sign_manifest(key, manifest))
        verify_manifest_signature(key.public_key, signed, manifest)
        r, s = decode_dss_signature(base64.b64decode(signed["sig"]))
        n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        twin = encode_dss_signature(r, n - s)  # valid ECDSA, but not the canonical form
        key.public_key.verify(twin, b"metrocloud-evidence-manifest-v1\x00" + manifest)
        signed["sig"] = base64.b64encode(twin).decode()
        with pytest.raises(VerificationError, match="low-s"):
            verify_manifest_signature(key.public_key, signed, manifest)
