"""Credentials: proof-of-possession tokens, replay, revocation, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from metrocloud.domain.errors import Unauthenticated, VerificationError
from metrocloud.services import parties as pty
from metrocloud.services.node import Node
from metrocloud.trust.credentials import sign_token_request
from tests.conftest import World


def test_token_by_proof_of_possession_and_no_replay(node: Node, world: World) -> None:
    request = sign_token_request(world.man1.id, world.man1.key, now=node.now())
    cred = pty.token_by_proof(node, request)
    actor = pty.authenticate(node, cred.token)
    assert actor.party_id == world.man1.id and actor.key_id == world.man1.key.key_id
    with pytest.raises(Unauthenticated, match="used already"):
        pty.token_by_proof(node, request)


def test_token_request_signed_by_another_key_is_refused(node: Node, world: World) -> None:
    request = sign_token_request(world.man1.id, world.man2.key, now=node.now())
    with pytest.raises(VerificationError):
        pty.token_by_proof(node, request)


def test_stale_token_request_is_refused(node: Node, world: World) -> None:
    old = datetime.now(UTC) - timedelta(minutes=30)
    request = sign_token_request(world.man1.id, world.man1.key, now=old)
    with pytest.raises(VerificationError, match="away from node time"):
        pty.token_by_proof(node, request)


def test_revoked_and_expired_tokens_are_refused(node: Node, world: World) -> None:
    cred = pty.issue_credential(node, None, world.op1.id)
    pty.revoke_token(node, world.op1.actor, cred.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        pty.authenticate(node, cred.token)
    cred2 = pty.issue_credential(node, None, world.op1.id)
    node.clock = lambda: datetime.now(UTC) + timedelta(days=node.settings.token_ttl_days + 1)
    with pytest.raises(Unauthenticated, match="expired"):
        pty.authenticate(node, cred2.token)


def test_token_endpoint_over_http(client: TestClient, world: World) -> None:
    request = sign_token_request(world.auth1.id, world.auth1.key)
    r = client.post("/api/v1/auth/token", json=request)
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["party_id"] == world.auth1.id and me.json()["role"] == "authority"
    again = client.post("/api/v1/auth/token", json=request)
    assert again.status_code == 401
    assert again.headers["content-type"].startswith("application/problem+json")
