"""Signed node-to-node requests (docs/grid.md#transport): every signed part matters, a
replayed nonce and a request outside the clock-skew window are refused, answers are bound
to their request."""

from __future__ import annotations

import string
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain.errors import NotFound, VerificationError
from metrocloud.grid.errors import NodeUnauthenticated
from metrocloud.grid.nonces import remember_nonce
from metrocloud.grid.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    RequestClaims,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from metrocloud.services.node import Node
from metrocloud.store.schema import grid_nonces
from metrocloud.trust.keys import PrivateKey, PublicKey

SENDER_KEY = PrivateKey.generate()
OTHER_KEY = PrivateKey.generate()
SENDER = f"node-DE-{SENDER_KEY.key_id[:16]}"
RECEIVER = "node-FR-0123456789abcdef"
NOW = 1_800_000_000
SKEW = 120


def _key_of(node_id: str) -> PublicKey:
    if node_id != SENDER:
        raise NotFound(f"node {node_id} is not in the peer list")
    return SENDER_KEY.public_key


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, int, str]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = "/api/v1/" + draw(st.text(string.ascii_letters + string.digits + "/-_.", max_size=40))
    body = draw(st.binary(max_size=200))
    time = draw(st.integers(NOW - SKEW, NOW + SKEW))
    nonce = draw(st.text(string.ascii_letters + string.digits + "-_", min_size=16, max_size=64))
    return method, path, body, time, nonce


def _check(method: str, path: str, body: bytes, headers: dict[str, str], receiver: str) -> None:
    verify_request(
        headers,
        method=method,
        target=path,
        body=body,
        receiver=receiver,
        key_of=_key_of,
        now=NOW,
        max_skew=SKEW,
    )


@given(requests())
def test_a_signed_request_verifies(req: tuple[str, str, bytes, int, str]) -> None:
    method, path, body, time, nonce = req
    headers = sign_request(
        SENDER_KEY,
        sender=SENDER,
        receiver=RECEIVER,
        method=method,
        target=path,
        body=body,
        time=time,
        nonce=nonce,
    )
    _check(method, path, body, headers, RECEIVER)


@given(
    requests(), st.sampled_from(["method", "path", "body", "time", "nonce", "receiver"]), st.data()
)
def test_any_change_of_a_signed_part_fails(
    req: tuple[str, str, bytes, int, str], part: str, data: st.DataObject
) -> None:
    method, path, body, time, nonce = req
    headers = sign_request(
        SENDER_KEY,
        sender=SENDER,
        receiver=RECEIVER,
        method=method,
        target=path,
        body=body,
        time=time,
        nonce=nonce,
    )
    receiver = RECEIVER
    if part == "method":
        method = data.draw(st.sampled_from([m for m in ("GET", "POST", "PATCH") if m != method]))
    elif part == "path":
        path = path + data.draw(st.sampled_from(["x", "/", "?a=1"]))
    elif part == "body":
        body = data.draw(st.binary(max_size=200).filter(lambda b: b != body))
    elif part == "time":  # still inside the window: only the signature can refuse it
        other = data.draw(st.integers(NOW - SKEW, NOW + SKEW).filter(lambda t: t != time))
        headers[TIME_HEADER] = str(other)
    elif part == "nonce":
        headers[NONCE_HEADER] = data.draw(
            st.text(string.ascii_letters + "-_", min_size=16, max_size=64).filter(
                lambda n: n != nonce
            )
        )
    else:  # a request signed for FR, replayed at NL
        receiver = "node-NL-fedcba9876543210"
    with pytest.raises(NodeUnauthenticated, match="does not verify"):
        _check(method, path, body, headers, receiver)


def _headers(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {
        "sender": SENDER,
        "receiver": RECEIVER,
        "method": "POST",
        "target": "/api/v1/grid/messages",
        "body": b"{}",
        "time": NOW,
    }
    args.update(kw)
    return sign_request(SENDER_KEY, **args)  # type: ignore[arg-type]


def test_a_time_outside_the_skew_window_is_refused() -> None:
    for time in (NOW - SKEW - 1, NOW + SKEW + 1):
        with pytest.raises(NodeUnauthenticated, match="grid_max_skew_s"):
            _check("POST", "/api/v1/grid/messages", b"{}", _headers(time=time), RECEIVER)


def test_an_unknown_sender_and_a_foreign_key_are_refused() -> None:
    stranger = PrivateKey.generate()
    headers = sign_request(
        stranger,
        sender=f"node-NL-{stranger.key_id[:16]}",
        receiver=RECEIVER,
        method="POST",
        target="/x",
        body=b"",
        time=NOW,
    )
    with pytest.raises(NodeUnauthenticated, match="not admitted"):
        _check("POST", "/x", b"", headers, RECEIVER)
    # the sender's node id, signed with another key
    forged = sign_request(
        OTHER_KEY, sender=SENDER, receiver=RECEIVER, method="POST", target="/x", body=b"", time=NOW
    )
    with pytest.raises(NodeUnauthenticated, match="admitted key"):
        _check("POST", "/x", b"", forged, RECEIVER)


@pytest.mark.parametrize("header", ["Metrocloud-Node", TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_refused(header: str) -> None:
    headers = _headers()
    del headers[header]
    with pytest.raises(NodeUnauthenticated, match=header):
        _check("POST", "/api/v1/grid/messages", b"{}", headers, RECEIVER)


def test_a_replayed_nonce_is_refused_and_forgotten_after_the_window(node: Node) -> None:
    with node.db.write() as conn:
        remember_nonce(conn, SENDER, "n" * 22, time=NOW, now=NOW, window=SKEW)
    with node.db.write() as conn, pytest.raises(NodeUnauthenticated, match="used before"):
        remember_nonce(conn, SENDER, "n" * 22, time=NOW, now=NOW + 5, window=SKEW)
    # the same nonce of another node is another nonce
    with node.db.write() as conn:
        remember_nonce(conn, RECEIVER, "n" * 22, time=NOW, now=NOW, window=SKEW)
    # once the window has passed the row goes (the time check refuses such a request anyway)
    with node.db.write() as conn:
        remember_nonce(conn, SENDER, "m" * 22, time=NOW + 500, now=NOW + 500, window=SKEW)
        left = {r.nonce for r in conn.execute(grid_nonces.select())}
    assert left == {"m" * 22}


def test_an_answer_is_bound_to_its_request() -> None:
    body = b'{"results": []}'
    sig = sign_response(
        OTHER_KEY, sender=RECEIVER, receiver=SENDER, nonce="a" * 22, status=200, body=body
    )
    verify_response(
        sig,
        OTHER_KEY.public_key,
        sender=RECEIVER,
        receiver=SENDER,
        nonce="a" * 22,
        status=200,
        body=body,
    )
    for change in (
        {"nonce": "b" * 22},
        {"status": 201},
        {"body": b'{"results": [1]}'},
        {"receiver": "node-NL-fedcba9876543210"},
    ):
        args = {
            "sender": RECEIVER,
            "receiver": SENDER,
            "nonce": "a" * 22,
            "status": 200,
            "body": body,
            **change,
        }
        with pytest.raises(VerificationError):
            verify_response(sig, OTHER_KEY.public_key, **args)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="carries no"):
        verify_response(
            None,
            OTHER_KEY.public_key,
            sender=RECEIVER,
            receiver=SENDER,
            nonce="a" * 22,
            status=200,
            body=body,
        )


def test_claims_are_domain_separated() -> None:
    claims = RequestClaims(
        sender=SENDER,
        receiver=RECEIVER,
        method="POST",
        target="/x",
        body_sha256="0" * 64,
        time=NOW,
        nonce="a" * 22,
    )
    assert claims.signed_bytes().startswith(b"metrocloud-grid-request-v1\x00")
    assert replace(claims, nonce="b" * 22).signed_bytes() != claims.signed_bytes()
