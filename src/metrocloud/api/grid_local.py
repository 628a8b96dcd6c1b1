"""Node-to-node calls into apps in this process: the grid transport of tests and seeding.

:class:`LocalTransport` implements :class:`metrocloud.grid.Transport` by handing each
request to the ASGI app of the node at that base URL, through the same signed-request path
as HTTP (STYLE.md point 6: one door, a real and a fast stand-in). The grid demo seeds its
three nodes this way before it starts them as processes; tests use it to run several nodes
in one process and to take one "down" (:meth:`LocalTransport.down`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.testclient import TestClient

from metrocloud.api.app import create_app
from metrocloud.grid.client import Reply
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.services import exchange_grid
from metrocloud.services.node import Node

__all__ = ["LocalTransport"]


class LocalTransport:
    """Requests to ``base_url`` go to the app of the node registered for it."""

    def __init__(self) -> None:
        self._clients: dict[str, TestClient] = {}
        self._down: set[str] = set()

    def add(self, base_url: str, node: Node) -> None:
        """Serve ``node`` at ``base_url``: its app, and its grid link for confidential
        exchange (what the app's start does for a served node)."""
        self._clients[base_url.rstrip("/")] = TestClient(
            create_app(node, fast_lane=False), raise_server_exceptions=False
        )
        exchange_grid.connect(node)

    def down(self, base_url: str, is_down: bool = True) -> None:
        """Make the node at ``base_url`` unreachable (or reachable again)."""
        if is_down:
            self._down.add(base_url.rstrip("/"))
        else:
            self._down.discard(base_url.rstrip("/"))

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        timeout: float,
    ) -> Reply:
        base = next((b for b in self._clients if url.startswith(b + "/")), None)
        if base is None or base in self._down:
            raise PeerUnavailable(f"{method} {url}: no node answers there")
        path = url[len(base) :]
        r = self._clients[base].request(method, path, headers=dict(headers), content=content)
        return Reply(status=r.status_code, headers=dict(r.headers), body=r.content)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()
