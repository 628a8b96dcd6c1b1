"""Acceptance: the module B story over real HTTP, against a real ``metrocloud serve`` process.

A node admin admits a notified body, a manufacturer, an operator and an authority and issues
their tokens; the notified body issues an EU-type examination certificate (module B); the
manufacturer registers 1,000 instruments with device keys (Ed25519 and P-256) in one request;
the instrument goes on the market, into service and is verified; the notified body withdraws
the certificate, after which a registration under it is refused.

Every step's ``leaf_index`` is checked like an outside client would: the entry bytes, an
inclusion proof against the newest signed tree head, the head's signature with the node key,
and consistency proofs between every two heads seen. The RFC 9162 verifier below is written
from the RFC text (§2.1.1 hashes, §2.1.3.2 inclusion, §2.1.4.2 consistency) and shares no code
with ``metrocloud.ledger``; its own correctness is checked against the RFC's recursive
definitions (§2.1.3.1 PATH, §2.1.4.1 PROOF) in :func:`test_independent_verifier_matches_rfc`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from tests._pg import PG_URL, fresh_schema

from ._cli import cli_command, cli_env, free_port, run_cli, wait_healthy

API = "/api/v1"
TREE_HEAD_DOMAIN = b"metrocloud-tree-head-v1\x00"
STATEMENT_DOMAIN = b"metrocloud-statement-v1\x00"


# -- an independent RFC 9162 verifier --------------------------------------------------------


def rfc_leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def rfc_node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_verify_inclusion(
    leaf_index: int,
    tree_size: int,
    leaf_hash: bytes,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    # 1. Compare leaf_index from the inclusion_proof_v2 structure against tree_size. If
    #    leaf_index is greater than or equal to tree_size, then fail the proof verification.
    if leaf_index < 0 or leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. Set r to hash.
    r = leaf_hash
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        if len(p) != 32:
            return False
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = rfc_node_hash(p, r)
            # ii. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #     either LSB(fn) is set or fn is 0.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        # Otherwise: i. Set r to HASH(0x01 || r || p).
        else:
            r = rfc_node_hash(r, p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0. Compare r against the root_hash. If sn is equal to 0 and r and the
    #    root_hash are equal, then the log has proven the inclusion of hash.
    return sn == 0 and r == root_hash


def rfc_verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2, step by step (``first == second``: PROOF is empty, §2.1.4.1)."""
    if first == second:
        return first > 0 and not consistency_path and first_hash == second_hash
    if not 0 < first < second:
        return False
    if any(len(c) != 32 for c in consistency_path):
        return False
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not consistency_path:
        return False
    path = list(consistency_path)
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr). Set sr to HASH(0x01 || c || sr).
            fr = rfc_node_hash(c, fr)
            sr = rfc_node_hash(c, sr)
            # ii. If LSB(fn) is not set, then right-shift both fn and sn equally until either
            #     LSB(fn) is set or fn is 0.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        # Otherwise: i. Set sr to HASH(0x01 || sr || c).
        else:
            sr = rfc_node_hash(sr, c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify that fr equals first_hash, sr equals second_hash, and sn is 0.
    return fr == first_hash and sr == second_hash and sn == 0


def rfc_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over entries (RFC 9162 §2.1.1), the recursive definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return rfc_leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two smaller than n
    return rfc_node_hash(rfc_mth(leaves[:k]), rfc_mth(leaves[k:]))


def _rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 9162 §2.1.3.1)."""
    n = len(d)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*_rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def _rfc_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) (RFC 9162 §2.1.4.1)."""
    n = len(d)
    if m == n:
        return [] if b else [rfc_mth(d)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*_rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


def test_independent_verifier_matches_rfc() -> None:
    """The verifier accepts every PATH and PROOF of the RFC's definitions, rejects mutants."""
    entries = [f"entry {i}".encode() for i in range(37)]
    for n in range(1, len(entries) + 1):
        d = entries[:n]
        root = rfc_mth(d)
        for m in range(n):
            path = _rfc_path(m, d)
            leaf = rfc_leaf_hash(d[m])
            assert rfc_verify_inclusion(m, n, leaf, path, root), (m, n)
            assert not rfc_verify_inclusion(m, n + 1, leaf, path, rfc_mth([*d, b"next"]))
            assert not rfc_verify_inclusion(m, n, rfc_leaf_hash(b"other"), path, root)
            assert not rfc_verify_inclusion(n, n, leaf, path, root)
            if path:
                assert not rfc_verify_inclusion(m, n, leaf, path[:-1], root)
                assert not rfc_verify_inclusion(m, n, leaf, [*path, root], root)
                for i in range(len(path)):
                    bad = [*path]
                    bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                    assert not rfc_verify_inclusion(m, n, leaf, bad, root)
        for m in range(1, n + 1):
            proof = _rfc_subproof(m, d, True)
            old = rfc_mth(d[:m])
            assert rfc_verify_consistency(m, n, old, root, proof), (m, n)
            if m < n:
                assert not rfc_verify_consistency(m, n, rfc_mth([b"x", *d[1:m]]), root, proof)
                assert not rfc_verify_consistency(m, n, old, rfc_mth([*d[:-1], b"x"]), proof)
                for i in range(len(proof)):
                    bad = [*proof]
                    bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
                    assert not rfc_verify_consistency(m, n, old, root, bad)
                assert not rfc_verify_consistency(m, n, old, root, proof[:-1])


# -- a client of the node's log ---------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hex_hashes(items: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


@dataclass
class LogClient:
    """What an outside party runs: trusts only the node key, verifies everything else."""

    http: httpx.Client
    node_key: ed25519.Ed25519PublicKey
    node_key_id: str
    log_id: str
    heads: list[dict[str, Any]] = field(default_factory=list)
    leaves: dict[int, bytes] = field(default_factory=dict)  # leaf index -> leaf hash

    def head(self) -> dict[str, Any]:
        """The newest signed tree head, its signature checked with the node key."""
        r = self.http.get(f"{API}/ledger/head")
        assert r.status_code == 200, r.text
        head: dict[str, Any] = r.json()
        assert set(head) == {
            "tree_size",
            "root_hash",
            "timestamp",
            "signature",
            "log_id",
            "key_id",
        }, head
        assert head["log_id"] == self.log_id
        assert head["key_id"] == self.node_key_id
        assert len(bytes.fromhex(head["root_hash"])) == 32
        signed = TREE_HEAD_DOMAIN + rfc8785.dumps(
            {
                "log_id": head["log_id"],
                "tree_size": head["tree_size"],
                "root_hash": head["root_hash"],
                "timestamp": head["timestamp"],
            }
        )
        # raises cryptography.exceptions.InvalidSignature if the node key did not sign it
        self.node_key.verify(base64.b64decode(head["signature"], validate=True), signed)
        again = self.http.get(f"{API}/ledger/heads/{head['tree_size']}")
        assert again.status_code == 200 and again.json() == head, again.text
        if self.heads:
            assert head["tree_size"] >= self.heads[-1]["tree_size"]
            assert head["timestamp"] >= self.heads[-1]["timestamp"]
        return head

    def entry(self, index: int) -> bytes:
        r = self.http.get(f"{API}/ledger/entries/{index}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["index"] == index
        entry = base64.b64decode(body["entry"], validate=True)
        assert body["leaf_hash"] == rfc_leaf_hash(entry).hex()
        return entry

    def statement(self, entry: bytes) -> dict[str, Any]:
        """The entry as a signed statement: canonical JSON, signed by the node key."""
        doc = json.loads(entry)
        assert rfc8785.dumps(doc) == entry, "a log entry must be its own RFC 8785 form"
        payload: dict[str, Any] = doc["payload"]
        node_sigs = [s for s in doc["signatures"] if s["key_id"] == self.node_key_id]
        assert len(node_sigs) == 1, doc["signatures"]
        assert node_sigs[0]["alg"] == "ed25519"
        self.node_key.verify(
            base64.b64decode(node_sigs[0]["sig"], validate=True),
            STATEMENT_DOMAIN + rfc8785.dumps(payload),
        )
        return payload

    def inclusion(self, leaf_index: int, head: dict[str, Any]) -> None:
        size = head["tree_size"]
        r = self.http.get(
            f"{API}/ledger/proof/inclusion", params={"leaf_index": leaf_index, "tree_size": size}
        )
        assert r.status_code == 200, r.text
        proof = r.json()
        assert (proof["leaf_index"], proof["tree_size"]) == (leaf_index, size)
        assert rfc_verify_inclusion(
            leaf_index,
            size,
            self.leaves[leaf_index],
            _hex_hashes(proof["audit_path"]),
            bytes.fromhex(head["root_hash"]),
        ), (
            f"inclusion proof of leaf {leaf_index} does not verify against the signed head "
            f"of size {size}"
        )

    def consistency(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        r = self.http.get(
            f"{API}/ledger/proof/consistency",
            params={"first": old["tree_size"], "second": new["tree_size"]},
        )
        assert r.status_code == 200, r.text
        proof = r.json()
        assert (proof["first"], proof["second"]) == (old["tree_size"], new["tree_size"])
        assert rfc_verify_consistency(
            old["tree_size"],
            new["tree_size"],
            bytes.fromhex(old["root_hash"]),
            bytes.fromhex(new["root_hash"]),
            _hex_hashes(proof["proof"]),
        ), (
            f"log is not append-only between the signed heads of size {old['tree_size']} "
            f"and {new['tree_size']}"
        )

    def check_step(self, leaf_index: int, kind: str) -> dict[str, Any]:
        """Verify the statement a step returned: bytes, kind, inclusion, consistency."""
        assert isinstance(leaf_index, int) and leaf_index >= 0, leaf_index
        head = self.head()
        # the head the node signed in the same transaction covers the leaf just returned; we
        # are the only writer, so the statement is the newest entry of the log
        assert head["tree_size"] == leaf_index + 1, (head["tree_size"], leaf_index)
        entry = self.entry(leaf_index)
        self.leaves[leaf_index] = rfc_leaf_hash(entry)
        payload = self.statement(entry)
        assert payload["kind"] == kind, payload["kind"]
        self.inclusion(leaf_index, head)
        for old in self.heads:
            self.consistency(old, head)
        self.heads.append(head)
        return payload

    def recheck_all(self) -> None:
        """Every leaf against the final head; every pair of heads seen."""
        final = self.head()
        for index in sorted(self.leaves):
            self.inclusion(index, final)
        for i, old in enumerate(self.heads):
            for new in [*self.heads[i:], final]:
                self.consistency(old, new)


# -- the node under test: `metrocloud init` + `metrocloud serve` ------------------------------


@dataclass(frozen=True)
class RunningNode:
    base_url: str
    data_dir: Path
    db: str | None
    process: subprocess.Popen[bytes]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@contextmanager
def running_node(data_dir: Path, db: str | None, schema: str | None) -> Iterator[RunningNode]:
    init = run_cli("init", data_dir=data_dir, db=db, schema=schema)
    assert init.returncode == 0, init.stdout + init.stderr
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(3):
            port = free_port()
            log = data_dir.parent / f"serve-{attempt}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    cli_command(
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        data_dir=data_dir,
                        db=db,
                    ),
                    env=cli_env(schema),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            base_url = f"http://127.0.0.1:{port}"
            if wait_healthy(proc, base_url, log):
                break
            proc = None  # exited: most likely another process took the port; retry
        else:
            pytest.fail(
                f"metrocloud serve exited at start three times:\n"
                f"{log.read_text(errors='replace')[-4000:]}"
            )
        yield RunningNode(base_url, data_dir, db, proc)
    finally:
        if proc is not None:
            _stop(proc)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def node_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningNode]:
    data_dir = tmp_path / "node"
    if request.param == "sqlite":
        with running_node(data_dir, None, None) as node:
            yield node
    else:
        with fresh_schema() as schema, running_node(data_dir, PG_URL, schema) as node:
            yield node


# -- the story ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceKey:
    alg: str
    spki_b64: str
    key_id: str


def _device_keys(n: int) -> list[DeviceKey]:
    """Ed25519 and ECDSA P-256 keys alternately, as base64 DER SubjectPublicKeyInfo."""
    keys = []
    for i in range(n):
        public: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        if i % 2:
            public = ec.generate_private_key(ec.SECP256R1()).public_key()
            alg = "ecdsa-p256-sha256"
        else:
            public = ed25519.Ed25519PrivateKey.generate().public_key()
            alg = "ed25519"
        der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        keys.append(DeviceKey(alg, _b64(der), hashlib.sha256(der).hexdigest()))
    return keys


def _spki(logged: Any) -> str:
    """A device key as the statement records it: base64 SPKI, bare or in an object."""
    return logged if isinstance(logged, str) else str(logged["public_key"])


def _software(version: str) -> dict[str, str]:
    return {
        "name": "EMH-LRS",
        "version": version,
        "algorithm": "sha256",
        "checksum": hashlib.sha256(f"EMH-LRS {version}".encode()).hexdigest(),
    }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.e2e
def test_module_b_story(node_server: RunningNode) -> None:
    with httpx.Client(base_url=node_server.base_url, timeout=120, trust_env=False) as http:
        # the node's identity: the only thing a client trusts
        node = http.get(f"{API}/node").json()
        assert node["algorithm"] == "ed25519"
        node_key = load_pem_public_key(node["public_key"].encode())
        assert isinstance(node_key, ed25519.Ed25519PublicKey)
        der = node_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert node["key_id"] == hashlib.sha256(der).hexdigest()
        log = LogClient(http, node_key, node["key_id"], node["log_id"])
        # the node keeps its registry where it was told to: SQLite file or PostgreSQL schema
        sqlite_file = node_server.data_dir / "registry.sqlite3"
        assert sqlite_file.exists() is (node_server.db is None)

        creds = json.loads((node_server.data_dir / "credentials.json").read_text())
        assert set(creds) == {"node_admin"}
        admin = _bearer(creds["node_admin"]["token"])
        me = http.get(f"{API}/me", headers=admin)
        assert me.status_code == 200, me.text
        assert me.json()["role"] == "node_admin"
        assert me.json()["party_id"] == creds["node_admin"]["party_id"]
        admin_party = http.get(f"{API}/parties/{creds['node_admin']['party_id']}", headers=admin)
        assert admin_party.status_code == 200, admin_party.text
        payload = log.check_step(admin_party.json()["leaf_index"], "party.admitted")
        assert payload["body"]["party"]["role"] == "node_admin"

        # 1. the node admin admits the four parties and issues their tokens
        ids: dict[str, str] = {}
        hdr: dict[str, dict[str, str]] = {}
        for role, name, extra in (
            ("notified_body", "Physikalisch-Technische Bundesanstalt", {"nb_number": "0102"}),
            ("manufacturer", "Elektro-Messtechnik Hansa GmbH", {}),
            ("operator", "Stadtwerke München", {}),
            ("authority", "Landesamt für Mess- und Eichwesen", {}),
        ):
            r = http.post(
                f"{API}/parties", json={"name": name, "role": role, **extra}, headers=admin
            )
            assert r.status_code == 201, r.text
            party = r.json()
            assert (party["role"], party["name"], party["country"]) == (role, name, "DE")
            payload = log.check_step(party["leaf_index"], "party.admitted")
            assert payload["body"]["party"]["id"] == party["id"]
            assert payload["body"]["party"]["role"] == role
            assert payload["signer"] == creds["node_admin"]["party_id"]
            r = http.post(
                f"{API}/parties/{party['id']}/tokens", json={"label": "e2e"}, headers=admin
            )
            assert r.status_code == 201, r.text
            assert r.json()["party_id"] == party["id"]
            ids[role], hdr[role] = party["id"], _bearer(r.json()["token"])
            me = http.get(f"{API}/me", headers=hdr[role])
            assert me.status_code == 200, me.text
            assert (me.json()["party_id"], me.json()["role"]) == (party["id"], role)

        # 2. the notified body issues an EU-type examination certificate (module B)
        r = http.post(
            f"{API}/certificates",
            headers=hdr["notified_body"],
            json={
                "number": "DE-0102-26-0001",
                "holder_id": ids["manufacturer"],
                "module": "B",
                "category": "MI-003",
                "model": "EM-340 three-phase meter",
                "accuracy_class": "B",
                "software": [_software("1.0.0"), _software("1.1.0")],
                "rated_conditions": {"temperature": "-25 °C .. +55 °C"},
            },
        )
        assert r.status_code == 201, r.text
        issued = r.json()
        cert = issued["certificate"]
        assert (cert["module"], cert["status"], cert["category"]) == ("B", "valid", "MI-003")
        assert cert["notified_body_id"] == ids["notified_body"]
        assert cert["holder_id"] == ids["manufacturer"]
        assert cert["leaf_index"] == issued["leaf_index"]
        payload = log.check_step(issued["leaf_index"], "certificate.issued")
        assert payload["signer"] == ids["notified_body"]
        assert payload["body"]["certificate"]["id"] == cert["id"]
        assert payload["body"]["certificate"]["module"] == "B"
        assert payload["body"]["certificate"]["number"] == "DE-0102-26-0001"

        # 3. the manufacturer registers 1,000 instruments with device keys in one request
        keys = _device_keys(1000)
        serials = [f"EMH{i:07d}" for i in range(len(keys))]
        r = http.post(
            f"{API}/instruments",
            headers=hdr["manufacturer"],
            json={
                "instruments": [
                    {
                        "serial": s,
                        "certificate_id": cert["id"],
                        "region": "DE21",
                        "device_keys": [k.spki_b64],
                    }
                    for s, k in zip(serials, keys, strict=True)
                ]
            },
        )
        assert r.status_code == 201, r.text
        registered = r.json()
        refs = registered["instruments"]
        assert [ref["serial"] for ref in refs] == serials
        assert {ref["leaf_index"] for ref in refs} == {registered["leaf_index"]}
        assert len({ref["id"] for ref in refs}) == len(keys)
        payload = log.check_step(registered["leaf_index"], "instruments.registered")
        assert payload["signer"] == ids["manufacturer"]
        assert payload["body"]["manufacturer_id"] == ids["manufacturer"]
        items = payload["body"]["instruments"]
        assert [it["id"] for it in items] == [ref["id"] for ref in refs]
        assert [it["serial"] for it in items] == serials
        body = payload["body"]
        assert all(
            it.get("certificate_id", body.get("certificate_id")) == cert["id"] for it in items
        )
        # each instrument's device key is in the signed statement (as the SPKI we sent)
        assert [[_spki(k) for k in it["device_keys"]] for it in items] == [
            [k.spki_b64] for k in keys
        ]
        assert Counter(k.alg for k in keys) == {"ed25519": 500, "ecdsa-p256-sha256": 500}
        for ref, key in ((refs[0], keys[0]), (refs[1], keys[1]), (refs[-1], keys[-1])):
            r = http.get(f"{API}/instruments/{ref['id']}", headers=hdr["manufacturer"])
            assert r.status_code == 200, r.text
            got = r.json()
            assert (got["state"], got["registered_leaf"]) == (
                "registered",
                registered["leaf_index"],
            )
            assert got["device_keys"] == [
                {
                    "key_id": key.key_id,
                    "algorithm": key.alg,
                    "public_key": key.spki_b64,
                    "revoked": False,
                }
            ]

        # 4. on the market (manufacturer), into service (operator), verified (authority)
        target = refs[1]["id"]
        verified_until = (date.today() + timedelta(days=8 * 365)).isoformat()
        event_leaves = []
        for role, event, state in (
            ("manufacturer", {"kind": "placed_on_market"}, "placed_on_market"),
            ("operator", {"kind": "put_into_service", "details": {"region": "DE21"}}, "in_service"),
            (
                "authority",
                {"kind": "verified", "details": {"verified_until": verified_until}},
                "in_service",
            ),
        ):
            r = http.post(f"{API}/instruments/{target}/events", json=event, headers=hdr[role])
            assert r.status_code == 201, r.text
            recorded = r.json()
            assert (recorded["instrument_id"], recorded["kind"], recorded["state_after"]) == (
                target,
                event["kind"],
                state,
            )
            payload = log.check_step(recorded["leaf_index"], "instrument.event")
            assert payload["signer"] == ids[role]
            logged = payload["body"]["event"]
            assert (logged["id"], logged["instrument_id"], logged["kind"]) == (
                recorded["id"],
                target,
                event["kind"],
            )
            assert logged["details"] == event.get("details", {})
            event_leaves.append(recorded["leaf_index"])
        r = http.get(f"{API}/instruments/{target}", headers=hdr["authority"])
        assert r.status_code == 200, r.text
        inst = r.json()
        assert (inst["state"], inst["operator_id"], inst["verified_until"]) == (
            "in_service",
            ids["operator"],
            verified_until,
        )
        assert (inst["event_count"], inst["leaf_index"]) == (3, event_leaves[-1])
        r = http.get(f"{API}/instruments/{target}/events", headers=hdr["operator"])
        assert r.status_code == 200, r.text
        assert [e["leaf_index"] for e in r.json()["items"]] == event_leaves

        # 5. the notified body withdraws the certificate
        r = http.post(
            f"{API}/certificates/{cert['id']}/withdraw",
            headers=hdr["notified_body"],
            json={"reason": "non-conformity of the type found in surveillance"},
        )
        assert r.status_code == 200, r.text
        withdrawn = r.json()
        assert withdrawn["certificate"]["status"] == "withdrawn"
        payload = log.check_step(withdrawn["leaf_index"], "certificate.withdrawn")
        assert payload["signer"] == ids["notified_body"]
        assert payload["body"]["certificate_id"] == cert["id"]

        # 6. a new registration under the withdrawn certificate is refused, and logs nothing
        before = log.head()
        extra_key = _device_keys(1)[0]
        r = http.post(
            f"{API}/instruments",
            headers=hdr["manufacturer"],
            json={
                "instruments": [
                    {
                        "serial": "EMH9999999",
                        "certificate_id": cert["id"],
                        "device_keys": [extra_key.spki_b64],
                    }
                ]
            },
        )
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 409
        assert "withdrawn" in problem["detail"], problem
        assert "DE-0102-26-0001" in problem["detail"], problem
        after = log.head()
        assert (after["tree_size"], after["root_hash"]) == (
            before["tree_size"],
            before["root_hash"],
        )
        r = http.get(
            f"{API}/instruments", params={"serial": "EMH9999999"}, headers=hdr["manufacturer"]
        )
        assert r.status_code == 200 and r.json()["items"] == [], r.text

        # every leaf against the final head; every two heads seen are consistent
        log.recheck_all()
        assert len(log.leaves) == 11
