"""The grid link of one node: its client, its workers, and what it answers to its peers.

* :func:`on_message` / :func:`on_query` - the receiver registries: a *message* arrives
  through the outbox (durable, applied once, in a transaction the handler shares); a
  *query* is a synchronous question (a look-up, a statistic, a tree head);
* :func:`authenticate_node` - the checks on a signed node request (signature, admission,
  clock skew, replayed nonce);
* :func:`receive_messages` / :func:`answer_query` - what ``POST /api/v1/grid/messages`` and
  ``POST /api/v1/grid/queries/{kind}`` do;
* :func:`call_peer` - a signed query to a peer; :func:`runtime` - the node's client and
  background workers (delivery, witnessing), one set per node object and one process per
  data directory (a file lock, like the lake writer's).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.grid.client import GridClient, HttpTransport, Transport
from metrocloud.grid.delivery import Worker, deliver_due
from metrocloud.grid.errors import NodeUnauthenticated
from metrocloud.grid.nonces import remember_nonce
from metrocloud.grid.outbox import prune_delivered
from metrocloud.grid.peers import Peer, peer, peers, self_node
from metrocloud.grid.signing import verify_request
from metrocloud.grid.traffic import Exchange, prune_traffic, record_traffic
from metrocloud.grid.witness import prune_heads
from metrocloud.services._federation_receiving import MessageHandler, receive
from metrocloud.services.node import Node
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "MessageHandler",
    "QueryHandler",
    "answer_query",
    "authenticate_node",
    "call_peer",
    "on_message",
    "on_query",
    "receive_messages",
    "record_incoming",
    "runtime",
    "set_transport",
    "start_grid",
    "stop_grid",
    "take_grid_lock",
]

log = logging.getLogger("metrocloud.grid")

#: ``handler(node, sender, args) -> answer`` (JSON-serializable)
QueryHandler = Callable[[Node, Peer, Mapping[str, Any]], Mapping[str, Any]]

_MESSAGES: dict[str, MessageHandler] = {}
_QUERIES: dict[str, QueryHandler] = {}
_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")


def on_message(kind: str, handler: MessageHandler) -> None:
    """Register the receiver of outbox messages of ``kind`` (one handler per kind)."""
    if not _KIND.match(kind):
        raise InvalidInput(f"message kind {kind!r} must match {_KIND.pattern}")
    existing = _MESSAGES.get(kind)
    if existing is not None and existing is not handler:
        raise InvalidInput(f"message kind {kind!r} has a handler already")
    _MESSAGES[kind] = handler


def on_query(kind: str, handler: QueryHandler) -> None:
    if not _KIND.match(kind):
        raise InvalidInput(f"query kind {kind!r} must match {_KIND.pattern}")
    _QUERIES[kind] = handler


# -- receiving -----------------------------------------------------------------------------


def authenticate_node(
    node: Node, headers: Mapping[str, str], *, method: str, target: str, body: bytes
) -> Peer:
    """The admitted peer that signed this request; :class:`NodeUnauthenticated` if none."""
    now = node.now()
    with node.db.read() as conn:
        me = self_node(conn)
    if me is None:
        raise NodeUnauthenticated(
            "this node has not joined a grid ('metrocloud grid join'); it talks to no node"
        )
    found: dict[str, Peer] = {}

    def key_of(sender: str) -> Any:
        with node.db.read() as conn:
            found[sender] = peer(conn, sender, at=now)
        return found[sender].key

    window = node.settings.grid_max_skew_s
    claims = verify_request(
        headers,
        method=method,
        target=target,
        body=body,
        receiver=me.node_id,
        key_of=key_of,
        now=int(now.timestamp()),
        max_skew=window,
    )
    with node.db.write() as conn:
        remember_nonce(
            conn,
            claims.sender,
            claims.nonce,
            time=claims.time,
            now=int(now.timestamp()),
            window=window,
        )
    return found[claims.sender]


def receive_messages(node: Node, sender: Peer, body: Any) -> dict[str, Any]:
    """Apply ``sender``'s messages in order, each once (:mod:`._federation_receiving`)."""
    return receive(node, sender, body, _MESSAGES)


def record_incoming(
    node: Node,
    sender: Peer,
    *,
    method: str,
    path: str,
    status: int,
    request: bytes,
    response: bytes,
) -> None:
    """Keep the exchange a peer started in the traffic record (as the client does its own)."""
    exchange = Exchange(
        direction="in",
        peer_id=sender.node_id,
        method=method,
        path=path,
        status=status,
        request_body=request,
        response_body=response,
    )
    with node.db.write() as conn:
        record_traffic(
            conn, exchange, at=node.timestamp(), keep_bodies=node.settings.grid_traffic_bodies
        )


def answer_query(node: Node, sender: Peer, kind: str, args: Any) -> Mapping[str, Any]:
    handler = _QUERIES.get(kind)
    if handler is None:
        raise NotFound(f"this node answers no query {kind!r}; known: {sorted(_QUERIES)}")
    if not isinstance(args, dict):
        raise InvalidInput("a query's body is a JSON object")
    return handler(node, sender, args)


# -- the node's client and workers -----------------------------------------------------------


class _FileLock:
    """An exclusive, non-blocking lock on a file: one grid worker per data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(kw_only=True)
class Runtime:
    node: Node
    client: GridClient
    transport: Transport
    workers: list[Worker] = field(default_factory=list)
    lock: _FileLock | None = None
    rounds: int = 0


_runtimes: dict[int, Runtime] = {}
_guard = threading.Lock()


def _client(node: Node, transport: Transport) -> GridClient:
    s = node.settings
    return GridClient(
        node_id=node.node_id,
        key=node.key,
        db=node.db,
        transport=transport,
        clock=node.now,
        timeout=s.grid_request_timeout_s,
        keep_bodies=s.grid_traffic_bodies,
    )


def runtime(node: Node) -> Runtime:
    """The node's grid runtime (client over HTTP unless :func:`set_transport` chose one)."""
    with _guard:
        rt = _runtimes.get(id(node))
        if rt is None or rt.node is not node:
            transport = HttpTransport()
            rt = _runtimes[id(node)] = Runtime(
                node=node, client=_client(node, transport), transport=transport
            )
        return rt


def set_transport(node: Node, transport: Transport) -> None:
    """Send this node's grid requests through ``transport`` (tests, the demo's seeding)."""
    rt = runtime(node)
    rt.transport = transport
    rt.client = _client(node, transport)


def call_peer(node: Node, to: Peer, kind: str, args: Mapping[str, Any]) -> Any:
    """Ask ``to`` the query ``kind``; its answer (raises PeerUnavailable / PeerRefused)."""
    return runtime(node).client.call(to, f"/api/v1/grid/queries/{kind}", args)


def deliver_now(node: Node) -> Any:
    """One delivery round of the outbox to every peer."""
    s = node.settings
    with node.db.read() as conn:
        targets = peers(conn)
    return deliver_due(
        node.db,
        runtime(node).client,
        targets,
        clock=node.now,
        batch=s.grid_outbox_batch,
        base_s=s.grid_retry_base_s,
        max_s=s.grid_retry_max_s,
    )


def prune(node: Node) -> None:
    """Drop delivered messages, traffic records and unverified heads older than the
    retention period, and every verified head but the newest of each peer."""
    before = utc_timestamp(node.now() - timedelta(days=node.settings.grid_traffic_retention_days))
    with node.db.write() as conn:
        prune_traffic(conn, before)
        prune_delivered(conn, before)
        prune_heads(conn, unverified_before=before)


def take_grid_lock(node: Node) -> bool:
    """Become the one process that runs this node's grid link (False: another one is)."""
    rt = runtime(node)
    if rt.lock is None:
        rt.lock = _FileLock(node.settings.data_dir / "grid.lock")
    return rt.lock.acquire()


def start_grid(node: Node, witness_round: Callable[[Node], object]) -> Runtime:
    """Start delivering and witnessing in the background (the app's lifespan)."""
    rt = runtime(node)
    if rt.workers:
        return rt
    s = node.settings

    def owns() -> bool:  # another worker process of this node may be the grid's worker
        return take_grid_lock(node)

    def deliver() -> None:
        if owns():
            with node.db.read() as conn:
                joined = self_node(conn) is not None
            if joined:
                deliver_now(node)

    def witness() -> None:
        if owns():
            with node.db.read() as conn:
                joined = self_node(conn) is not None
            if joined:
                witness_round(node)
                rt.rounds += 1
                if rt.rounds % 100 == 1:
                    prune(node)

    rt.workers = [
        Worker("grid-outbox", s.grid_outbox_interval_s, deliver),
        Worker("grid-witness", s.grid_witness_interval_s, witness),
    ]
    for w in rt.workers:
        w.start()
    return rt


def stop_grid(node: Node) -> None:
    with _guard:
        rt = _runtimes.pop(id(node), None)
    if rt is None:
        return
    for w in rt.workers:
        w.stop()
    if rt.lock is not None:
        rt.lock.release()
    if isinstance(rt.transport, HttpTransport):
        rt.transport.close()
