"""Calling another node: one transport interface, and the client that signs and records.

:class:`Transport` is the one door for node-to-node bytes (STYLE.md point 6):
:class:`HttpTransport` speaks HTTP through httpx; tests and the grid demo's seeding pass a
transport that hands the request to an in-process app. :class:`GridClient` signs each
request (:mod:`metrocloud.grid.signing`), checks that the answer is signed by the peer for
this very request, records the exchange (:mod:`metrocloud.grid.traffic`) and turns failures
into :class:`PeerUnavailable` (retry) or :class:`PeerRefused` (do not).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from metrocloud.domain.errors import VerificationError
from metrocloud.grid.errors import PeerRefused, PeerUnavailable
from metrocloud.grid.peers import Peer
from metrocloud.grid.signing import NONCE_HEADER, SIGNATURE_HEADER, sign_request, verify_response
from metrocloud.grid.traffic import Exchange, record_contact, record_traffic
from metrocloud.store.database import Database
from metrocloud.trust.keys import PrivateKey
from metrocloud.trust.statements import utc_timestamp

__all__ = ["GridClient", "HttpTransport", "Reply", "Transport"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        timeout: float,
    ) -> Reply:
        """Send one request; raise :class:`PeerUnavailable` when there is no answer."""
        ...


class HttpTransport:
    """HTTP(S) through one pooled httpx client (no proxies from the environment)."""

    def __init__(self) -> None:
        self._client = httpx.Client(trust_env=False, follow_redirects=False)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        timeout: float,
    ) -> Reply:
        try:
            r = self._client.request(
                method, url, headers=dict(headers), content=content, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        return Reply(status=r.status_code, headers=dict(r.headers), body=r.content)

    def close(self) -> None:
        self._client.close()


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", errors="replace")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return body[:300].decode("utf-8", errors="replace")


class GridClient:
    """This node's signed calls to its peers."""

    def __init__(
        self,
        *,
        node_id: str,
        key: PrivateKey,
        db: Database,
        transport: Transport,
        clock: Callable[[], datetime],
        timeout: float = 10.0,
        keep_bodies: bool = True,
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.db = db
        self.transport = transport
        self.clock = clock
        self.timeout = timeout
        self.keep_bodies = keep_bodies

    def call(self, peer: Peer, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` to ``peer``'s ``path``; the peer's JSON answer (2xx only)."""
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        now = self.clock()
        headers = sign_request(
            self.key,
            sender=self.node_id,
            receiver=peer.node_id,
            method="POST",
            target=path,
            body=content,
            time=int(now.timestamp()),
        )
        headers["Content-Type"] = "application/json"
        url = peer.base_url + path
        try:
            reply = self.transport.request(
                "POST", url, headers=headers, content=content, timeout=self.timeout
            )
        except PeerUnavailable:
            self._record(peer, path, 0, content, b"")
            raise
        self._record(peer, path, reply.status, content, reply.body)
        if reply.status >= 500 or reply.status in (408, 425, 429):
            raise PeerUnavailable(
                f"node {peer.node_id} answered {reply.status} to POST {path}: {_detail(reply.body)}"
            )
        try:
            verify_response(
                reply.headers.get(SIGNATURE_HEADER) or reply.headers.get(SIGNATURE_HEADER.lower()),
                peer.key,
                sender=peer.node_id,
                receiver=self.node_id,
                nonce=headers[NONCE_HEADER],
                status=reply.status,
                body=reply.body,
            )
        except VerificationError as exc:
            raise PeerUnavailable(
                f"answer to POST {path} is not {peer.node_id}'s ({reply.status}): {exc}"
            ) from None
        if reply.status >= 400:
            raise PeerRefused(
                f"node {peer.node_id} refused POST {path} ({reply.status}): {_detail(reply.body)}",
                status=reply.status,
            )
        try:
            return json.loads(reply.body)
        except ValueError:
            raise PeerUnavailable(
                f"node {peer.node_id} answered POST {path} with a body that is not JSON"
            ) from None

    def _record(self, peer: Peer, path: str, status: int, req: bytes, resp: bytes) -> None:
        exchange = Exchange(
            direction="out",
            peer_id=peer.node_id,
            method="POST",
            path=path,
            status=status,
            request_body=req,
            response_body=resp,
        )
        at = utc_timestamp(self.clock())
        ok = 0 < status < 500
        error = None if ok else (f"answered {status}" if status else "no answer")
        with self.db.write() as conn:
            record_traffic(conn, exchange, at=at, keep_bodies=self.keep_bodies)
            record_contact(conn, peer.node_id, at=at, error=error)
