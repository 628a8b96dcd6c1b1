"""Acceptance: tampering behind the API is found.

(a) ``metrocloud audit`` reports registry rows changed by SQL (table, row and column);
(b) ``metrocloud ledger verify`` reports a rewritten entry and a truncated log;
(c) a client that kept an earlier signed tree head detects a history rewritten so thoroughly,
    with the real node key, that the node's own checks pass.

The node's content is built with the service layer (``tests/conftest.py`` World); every check
runs the real CLI in a subprocess, on SQLite and on PostgreSQL (a fresh schema).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, delete, insert, select, text, update

from metrocloud.domain.certificates import CertificateAction
from metrocloud.domain.instruments import EventKind
from metrocloud.ledger import leaf_hash, root_from_leaves, sign_tree_head
from metrocloud.ledger.schema import (
    ledger_entries,
    ledger_heads,
    ledger_nodes,
    ledger_state,
    node_id,
    node_key,
)
from metrocloud.ledger.subtrees import extend
from metrocloud.services import certificates as certs
from metrocloud.services import events as ev
from metrocloud.services.settings import Settings
from metrocloud.trust.keys import KeyStore
from metrocloud.trust.statements import SignedStatement, Statement, sign_statement
from tests.conftest import DbTarget, World

from ._cli import run_cli
from .test_module_b_story import (
    LogClient,
    rfc_leaf_hash,
    rfc_verify_consistency,
    rfc_verify_inclusion,
)

pytestmark = pytest.mark.e2e


def _cli(settings: Settings, db_target: DbTarget, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, data_dir=settings.data_dir, db=db_target.url, schema=db_target.schema)


def _out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@contextmanager
def behind_the_api(settings: Settings, db_target: DbTarget) -> Iterator[Connection]:
    """A transaction on the node's database through an engine of our own, not the node's."""
    kwargs: dict[str, Any] = {}
    if db_target.schema:
        kwargs["connect_args"] = {"options": f"-csearch_path={db_target.schema}"}
    engine = create_engine(settings.database_url(), **kwargs)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _populate(world: World) -> dict[str, Any]:
    """Two certificates (one withdrawn), five instruments, one instrument's life cycle."""
    node = world.node
    cert = world.certificate(world.nb1, world.man1, number="DE-0101-26-0001")
    other = world.certificate(world.nb1, world.man1, number="DE-0101-26-0002")
    refs = world.instruments(world.man1, cert, n=5)
    target = refs[0]["id"]
    until = (date.today() + timedelta(days=2 * 365)).isoformat()
    ev.record_events(
        node,
        world.man1.actor,
        [ev.EventDraft(instrument_id=target, kind=EventKind.PLACED_ON_MARKET)],
    )
    ev.record_events(
        node,
        world.op1.actor,
        [
            ev.EventDraft(
                instrument_id=target, kind=EventKind.PUT_INTO_SERVICE, details={"region": "DE21"}
            )
        ],
    )
    verified = ev.record_events(
        node,
        world.auth1.actor,
        [
            ev.EventDraft(
                instrument_id=target, kind=EventKind.VERIFIED, details={"verified_until": until}
            )
        ],
    )[0]
    withdrawn, _ = certs.change_certificate(
        node,
        world.nb1.actor,
        other["id"],
        CertificateAction.WITHDRAW,
        reason="type does not conform",
    )
    assert withdrawn["status"] == "withdrawn"
    return {"certificate": cert, "withdrawn": withdrawn, "instrument": target, "verified": verified}


def _mismatch_line(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if "MISMATCH" in line and needle in line]
    assert len(lines) == 1, f"expected one MISMATCH line naming {needle}, got:\n{output}"
    return lines[0]


# -- (a) registry rows changed behind the API ---------------------------------------------------


def test_audit_reports_certificate_and_event_rows_changed_by_sql(
    world: World, settings: Settings, db_target: DbTarget
) -> None:
    facts = _populate(world)
    clean = _cli(settings, db_target, "audit")
    assert clean.returncode == 0, _out(clean)
    assert "audit ok" in clean.stdout

    cert_id = facts["withdrawn"]["id"]
    event_id = facts["verified"]["id"]
    with behind_the_api(settings, db_target) as conn:
        # a withdrawn certificate made valid again, a verification backdated
        changed = conn.execute(
            text("UPDATE certificates SET status = 'valid' WHERE id = :id"), {"id": cert_id}
        )
        assert changed.rowcount == 1
        changed = conn.execute(
            text("UPDATE events SET occurred_at = :at WHERE id = :id"),
            {"at": "2020-01-01T00:00:00.000Z", "id": event_id},
        )
        assert changed.rowcount == 1

    tampered = _cli(settings, db_target, "audit")
    out = _out(tampered)
    assert tampered.returncode == 1, out
    cert_line = _mismatch_line(out, cert_id)
    assert re.search(r"\bcertificates\b", cert_line), cert_line  # the table
    assert re.search(r"\bstatus\b", cert_line), cert_line  # the column
    assert "'valid'" in cert_line and "'withdrawn'" in cert_line, cert_line  # stored vs log
    event_line = _mismatch_line(out, event_id)
    assert re.search(r"\bevents\b", event_line), event_line
    assert re.search(r"\boccurred_at\b", event_line), event_line
    assert "2020-01-01T00:00:00.000Z" in event_line, event_line
    assert sum("MISMATCH" in line for line in out.splitlines()) == 2, out
    assert "audit failed" in out


# -- (b) the log's own storage rewritten or truncated -------------------------------------------


def test_ledger_verify_reports_rewritten_and_truncated_log(
    world: World, settings: Settings, db_target: DbTarget
) -> None:
    facts = _populate(world)
    clean = _cli(settings, db_target, "ledger", "verify")
    assert clean.returncode == 0, _out(clean)
    with behind_the_api(settings, db_target) as conn:
        size = conn.execute(select(ledger_state.c.tree_size)).scalar_one()
    assert f"ledger ok: {size} entries" in clean.stdout

    # rewrite: one entry's bytes changed (accuracy class B -> A of the first certificate)
    index = facts["certificate"]["leaf_index"]
    with behind_the_api(settings, db_target) as conn:
        original = bytes(
            conn.execute(
                select(ledger_entries.c.entry).where(ledger_entries.c.idx == index)
            ).scalar_one()
        )
        forged = original.replace(b'"accuracy_class":"B"', b'"accuracy_class":"A"')
        assert forged != original
        conn.execute(
            text("UPDATE ledger_entries SET entry = :entry WHERE idx = :idx"),
            {"entry": forged, "idx": index},
        )
    rewritten = _cli(settings, db_target, "ledger", "verify")
    out = _out(rewritten)
    assert rewritten.returncode == 1, out
    assert any(
        f"entry {index}:" in line and "leaf hash" in line and "does not match" in line
        for line in out.splitlines()
    ), out
    assert "ledger verification failed" in out

    # put the entry back: the log verifies again, so the failure was that entry alone
    with behind_the_api(settings, db_target) as conn:
        conn.execute(
            text("UPDATE ledger_entries SET entry = :entry WHERE idx = :idx"),
            {"entry": original, "idx": index},
        )
    again = _cli(settings, db_target, "ledger", "verify")
    assert again.returncode == 0, _out(again)

    # truncate: the last three entries, their subtree hashes and the size, all consistent;
    # only the signed heads beyond the new size remain as evidence
    kept = size - 3
    with behind_the_api(settings, db_target) as conn:
        conn.execute(text("DELETE FROM ledger_entries WHERE idx >= :kept"), {"kept": kept})
        stale = [
            i
            for i in conn.execute(select(ledger_nodes.c.id)).scalars()
            if (node_key(i)[1] + 1) << node_key(i)[0] > kept
        ]
        assert stale
        conn.execute(delete(ledger_nodes).where(ledger_nodes.c.id.in_(stale)))
        conn.execute(text("UPDATE ledger_state SET tree_size = :kept WHERE id = 1"), {"kept": kept})
    truncated = _cli(settings, db_target, "ledger", "verify")
    out = _out(truncated)
    assert truncated.returncode == 1, out
    assert f"exceeds the log's {kept} entries: log truncated" in out, out
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fails and all("signed head at size" in line for line in fails), out
    assert "ledger verification failed" in out


# -- (c) a consistent rewrite, re-signed with the real key, against a kept tree head ----------


def _rewrite_history(
    settings: Settings, db_target: DbTarget, log_id: str, index: int, cert_id: str
) -> None:
    """What an operator holding the node key could do: change entry ``index`` and make every
    stored hash, every signed head and the registry row agree with the new history."""
    keys_dir = settings.data_dir / "keys"
    key = KeyStore(keys_dir, KeyStore.passphrase_from(keys_dir)).load("node")
    with behind_the_api(settings, db_target) as conn:
        entry = bytes(
            conn.execute(
                select(ledger_entries.c.entry).where(ledger_entries.c.idx == index)
            ).scalar_one()
        )
        stmt = SignedStatement.from_bytes(entry).statement
        body = {**stmt.body, "certificate": {**stmt.body["certificate"], "accuracy_class": "A"}}
        forged = sign_statement(
            Statement(
                kind=stmt.kind,
                signer=stmt.signer,
                issued_at=stmt.issued_at,
                body=body,
                extra=stmt.extra,
            ),
            key,
        ).to_bytes()
        assert forged != entry
        conn.execute(
            update(ledger_entries).where(ledger_entries.c.idx == index).values(entry=forged)
        )
        entries = [
            bytes(e)
            for e in conn.execute(
                select(ledger_entries.c.entry).order_by(ledger_entries.c.idx)
            ).scalars()
        ]
        leaves = [leaf_hash(e) for e in entries]
        conn.execute(delete(ledger_nodes))
        conn.execute(
            insert(ledger_nodes),
            [
                {"id": node_id(level, first + i), "hash": h}
                for level, first, hashes in extend(0, {}, leaves)
                for i, h in enumerate(hashes)
            ],
        )
        heads = conn.execute(select(ledger_heads.c.tree_size, ledger_heads.c.timestamp)).all()
        conn.execute(delete(ledger_heads))
        for size, timestamp in heads:
            head = sign_tree_head(
                key,
                log_id=log_id,
                tree_size=int(size),
                root_hash=root_from_leaves(leaves[:size]),
                timestamp=int(timestamp),
            )
            conn.execute(
                insert(ledger_heads).values(
                    tree_size=head.tree_size,
                    root_hash=head.root_hash,
                    timestamp=head.timestamp,
                    key_id=head.key_id,
                    signature=head.signature,
                )
            )
        conn.execute(
            update(ledger_state).where(ledger_state.c.id == 1).values(tree_size=len(entries))
        )
        conn.execute(
            text("UPDATE certificates SET accuracy_class = 'A' WHERE id = :id"), {"id": cert_id}
        )


def test_client_with_earlier_head_detects_rewritten_history(
    world: World, client: TestClient, settings: Settings, db_target: DbTarget
) -> None:
    facts = _populate(world)
    info = client.get("/api/v1/node").json()
    node_key = load_pem_public_key(info["public_key"].encode())
    assert isinstance(node_key, ed25519.Ed25519PublicKey)
    log = LogClient(client, node_key, info["key_id"], info["log_id"])

    # the client keeps a signed head and the certificate's entry, proven included in it
    index = facts["certificate"]["leaf_index"]
    old = log.head()
    kept_leaf = rfc_leaf_hash(log.entry(index))
    log.leaves[index] = kept_leaf
    log.inclusion(index, old)

    # the log grows
    more = world.certificate(world.nb2, world.man2, number="DE-0102-26-0009")
    world.instruments(world.man2, more, n=3, prefix="LATER")

    _rewrite_history(settings, db_target, info["log_id"], index, facts["certificate"]["id"])

    # the rewrite is self-consistent: the node's own checks cannot see it
    verify = _cli(settings, db_target, "ledger", "verify")
    assert verify.returncode == 0, _out(verify)
    audit = _cli(settings, db_target, "audit")
    assert audit.returncode == 0, _out(audit)

    # every head the node now serves carries a valid signature of the real key ...
    new = log.head()
    assert new["tree_size"] > old["tree_size"]
    r = client.get(f"/api/v1/ledger/heads/{old['tree_size']}")
    assert r.status_code == 200, r.text
    forked = r.json()
    assert forked["root_hash"] != old["root_hash"], "two signed roots for one size: a fork"

    # ... but the consistency proof from the kept head to the new one does not verify
    r = client.get(
        "/api/v1/ledger/proof/consistency",
        params={"first": old["tree_size"], "second": new["tree_size"]},
    )
    assert r.status_code == 200, r.text
    proof = [bytes.fromhex(h) for h in r.json()["proof"]]
    assert not rfc_verify_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(old["root_hash"]),
        bytes.fromhex(new["root_hash"]),
        proof,
    )
    # (the proof itself is well formed: it links the node's rewritten history)
    assert rfc_verify_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(forked["root_hash"]),
        bytes.fromhex(new["root_hash"]),
        proof,
    )

    # and the entry the client kept is no longer in the log the node now serves
    r = client.get(
        "/api/v1/ledger/proof/inclusion",
        params={"leaf_index": index, "tree_size": new["tree_size"]},
    )
    assert r.status_code == 200, r.text
    path = [bytes.fromhex(h) for h in r.json()["audit_path"]]
    assert not rfc_verify_inclusion(
        index, new["tree_size"], kept_leaf, path, bytes.fromhex(new["root_hash"])
    )
    assert rfc_verify_inclusion(
        index,
        new["tree_size"],
        rfc_leaf_hash(log.entry(index)),
        path,
        bytes.fromhex(new["root_hash"]),
    )
