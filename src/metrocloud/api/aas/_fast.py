"""The fast lane for the AAS API's hottest reads: a shell by id and a page of shells.

AAS clients poll shells by id and walk the shell list; on those two GETs the framework's
dispatch (middleware, matching some hundred routes, dependency solving, a hop to the thread
pool and back) cost more than the read itself. This ASGI middleware answers them directly
when everything about the request is ordinary:

- ``GET /aas/api/v3.0/shells/{aasIdentifier}`` without a query, and
  ``GET /aas/api/v3.0/shells`` with at most ``limit`` (digits, 1 to 1000) and ``cursor``;
- a bearer token the node checked in the last seconds (``services.parties.cached_actor``);
- a read the service allows (:func:`metrocloud.services.aas.prepare_shell_json`,
  :func:`~metrocloud.services.aas.prepare_shell_list`).

Anything else (no or an unknown token, a bad identifier, a record that is missing or not
readable, other parameters, other paths) goes on to the full application, which answers it
exactly as before, errors included. The lane calls the same service functions, so the rules
and the access log are the same; its answers are byte-identical to the full path's (a test
compares them). The point reads run on the event loop (an indexed primary-key look-up) and
the access-log rows are committed with those of concurrent reads before the answer leaves
(:class:`metrocloud.store.groupcommit.GroupCommitter`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from metrocloud.api.aas._ids import decode_id
from metrocloud.api.aas._params import AAS_PREFIX
from metrocloud.api.aas._render import paged_body
from metrocloud.domain.errors import MetrocloudError
from metrocloud.services import aas as svc
from metrocloud.services.common import MAX_LIMIT, Actor
from metrocloud.services.node import Node
from metrocloud.services.parties import cached_actor
from metrocloud.twin.ids import parse_shell_id

__all__ = ["AasFastLane"]

_SHELLS = AAS_PREFIX + "/shells"
_SHELL = _SHELLS + "/"
_MAX_CURSOR = 200  # the full path's Query(max_length=200)


class AasFastLane:
    """ASGI middleware: answers the ordinary shell reads, passes everything else on."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            body: bytes | None = None
            if path.startswith(_SHELL):
                body = await self._shell(scope, path[len(_SHELL) :])
            elif path == _SHELLS:
                body = await self._shell_list(scope)
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _actor(self, scope: Scope) -> Actor | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    return None
                return cached_actor(self.node, token)
        return None

    async def _shell(self, scope: Scope, encoded: str) -> bytes | None:
        if not encoded or "/" in encoded or scope["query_string"]:
            return None
        actor = self._actor(scope)
        if actor is None:
            return None
        try:
            prepared = svc.prepare_shell_json(
                self.node, actor, parse_shell_id(decode_id(encoded)), on_loop=True
            )
        except MetrocloudError:  # the full path answers it, with the right error body
            return None
        return await prepared.run_async(self.node)

    async def _shell_list(self, scope: Scope) -> bytes | None:
        params = _list_params(scope["query_string"])
        if params is None:
            return None
        actor = self._actor(scope)
        if actor is None:
            return None
        limit, cursor = params
        try:
            prepared = svc.prepare_shell_list(self.node, actor, limit=limit, cursor=cursor)
        except MetrocloudError:
            return None
        page = await prepared.run_async(self.node)
        return paged_body(list(page.items), page.next_cursor)


def _list_params(query: bytes) -> tuple[int, str | None] | None:
    """``(limit, cursor)`` when the query holds nothing else, each at most once and plainly
    valid; otherwise None (the full path validates it and answers)."""
    if not query:
        return 100, None
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen or key not in ("limit", "cursor"):
            return None
        seen[key] = value
    limit_text = seen.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIMIT:
        return None
    cursor = seen.get("cursor")
    if cursor is not None and (not cursor or len(cursor) > _MAX_CURSOR):
        return None
    return int(limit_text), cursor
