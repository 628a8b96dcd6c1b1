"""The fast lane for the AAS API's hottest reads: shells, submodels and their elements.

AAS clients poll shells, submodels and single elements by id and walk the shell list; on
those GETs the framework's dispatch (middleware, matching some two hundred routes,
dependency solving, a hop to the thread pool and back) cost as much as the read itself or
more. This ASGI middleware answers them directly when everything about the request is
ordinary:

- ``GET /aas/api/v3.0/shells/{aasIdentifier}`` without a query, and
  ``GET /aas/api/v3.0/shells`` with at most ``limit`` (digits, 1 to 1000) and ``cursor``;
- without a query (``level=deep``, ``extent=withoutBlobValue``):
  ``GET /aas/api/v3.0/submodels/{submodelIdentifier}`` and
  ``.../submodels/{submodelIdentifier}/submodel-elements/{idShortPath}``, each also with
  ``/$value`` or ``/$metadata``, and all of them under
  ``/aas/api/v3.0/shells/{aasIdentifier}/submodels/{submodelIdentifier}`` (the submodel must
  belong to that shell: :func:`~metrocloud.api.aas._params.submodel_ids`, as on the full
  path); an idShortPath of plain idShorts (a letter, then letters, digits, ``_`` and ``-``)
  and list indexes;
- a bearer token the node checked in the last seconds (``services.parties.cached_actor``);
- a read the service allows (:func:`metrocloud.services.aas.prepare_shell_json`,
  :func:`~metrocloud.services.aas.prepare_shell_list`,
  :func:`~metrocloud.services.aas.prepare_submodel`) of something that exists, and a
  modifier that applies to it.

Anything else (no or an unknown token, a bad identifier, a record or element that is missing
or not readable, other parameters, other paths and modifiers, and any failure of the read
itself, such as a database that does not answer) goes on to the full application, which
answers it exactly as before, errors included. The lane calls the same service and
rendering functions (:func:`metrocloud.api.aas._render.answer`), so the rules and the
access log are the same; its answers are byte-identical to the full path's (a test
compares them). The reads run on the event loop (indexed primary-key look-ups, and for a
submodel the few indexed queries its view needs) and the access-log rows are committed with
those of concurrent reads before the answer leaves
(:class:`metrocloud.store.groupcommit.GroupCommitter`); a read the lane decides to hand on
has logged nothing (the full path logs it).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from metrocloud.api.aas._ids import decode_id
from metrocloud.api.aas._params import AAS_PREFIX, base_url, submodel_ids
from metrocloud.api.aas._render import (
    MODIFIERS,
    answer,
    find_submodel_element,
    jsonable,
    paged_body,
)
from metrocloud.services import aas as svc
from metrocloud.services.common import MAX_LIMIT, Actor
from metrocloud.services.node import Node
from metrocloud.services.parties import cached_actor
from metrocloud.twin.ids import parse_shell_id

__all__ = ["AasFastLane"]

_SHELLS = AAS_PREFIX + "/shells"
_SHELL = _SHELLS + "/"
_SUBMODEL = AAS_PREFIX + "/submodels/"
_ELEMENTS = "submodel-elements"
_MODIFIERS = tuple(m for m in MODIFIERS if m)  # "$value", "$metadata"
_MAX_CURSOR = 200  # the full path's Query(max_length=200)
#: the idShortPaths the lane looks up (no "$...": the full path routes those elsewhere)
_ID_SHORT_PATH = re.compile(
    r"[A-Za-z][A-Za-z0-9_-]*(\[\d+\])*(\.[A-Za-z][A-Za-z0-9_-]*(\[\d+\])*)*"
)


class AasFastLane:
    """ASGI middleware: answers the ordinary shell, submodel and element reads, passes
    everything else on."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            body: bytes | None = None
            if path.startswith(_SUBMODEL):
                body = await self._submodel(scope, None, path[len(_SUBMODEL) :])
            elif path.startswith(_SHELL):
                shell, _, rest = path[len(_SHELL) :].partition("/submodels/")
                if rest:
                    body = await self._submodel(scope, shell, rest)
                else:
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
        except Exception:  # nothing logged yet: the full path answers it, errors included
            return None
        return await prepared.run_async(self.node)

    async def _submodel(self, scope: Scope, shell: str | None, rest: str) -> bytes | None:
        """``rest``: ``{submodelIdentifier}[/submodel-elements/{idShortPath}][/$modifier]``;
        ``shell``: the ``{aasIdentifier}`` the path names the submodel under, if any."""
        target = _submodel_target(rest)
        if target is None or scope["query_string"] or (shell is not None and not _segment(shell)):
            return None
        actor = self._actor(scope)
        if actor is None:
            return None
        encoded, element, modifier = target
        try:
            record, name, _ = submodel_ids(encoded, shell)
            prepared = svc.prepare_submodel(
                self.node,
                actor,
                record,
                name,
                base_url=base_url(Request(scope), self.node),
                on_loop=True,
            )
            found = (
                prepared.value
                if element is None
                else find_submodel_element(prepared.value, element)
            )
            body = answer(jsonable(found), modifier)
        except Exception:  # nothing logged yet: the full path reads, logs and answers
            return None
        await prepared.run_async(self.node)
        return body

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
        except Exception:  # as above
            return None
        page = await prepared.run_async(self.node)
        return paged_body(list(page.items), page.next_cursor)


def _segment(text: str) -> bool:
    return bool(text) and "/" not in text


def _submodel_target(rest: str) -> tuple[str, str | None, str] | None:
    """(submodelIdentifier, idShortPath or None, modifier) of the part of a path after
    ``.../submodels/``, if it names a submodel or an element the lane answers for."""
    parts = rest.split("/")
    modifier = ""
    if len(parts) in (2, 4) and parts[-1] in _MODIFIERS:
        modifier = parts.pop()
    if not parts[0]:
        return None
    if len(parts) == 1:
        return parts[0], None, modifier
    if len(parts) == 3 and parts[1] == _ELEMENTS and _ID_SHORT_PATH.fullmatch(parts[2]):
        return parts[0], parts[2], modifier
    return None


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
