"""Dependencies and the guard that authorizes a request before its body is read.

FastAPI validates a request body before route dependencies can refuse the caller, so a
party without the right would see 422 instead of 403 for a bad body. :class:`GuardedRoute`
runs each endpoint's :class:`Guard` first: authenticate the bearer token (401), check the
role and any relationship to the record named in the path (403/404), and verify an optional
``Metrocloud-Signature`` over the body (400). Only then is the body parsed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from metrocloud.domain.errors import InvalidInput, Unauthenticated, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.services.common import Actor, require_role
from metrocloud.services.node import Node
from metrocloud.services.parties import authenticate, cached_actor
from metrocloud.trust.keys import PublicKey
from metrocloud.trust.statements import verify_request

__all__ = [
    "SIGNATURE_HEADER",
    "CurrentActor",
    "Guard",
    "GuardedRoute",
    "NodeDep",
    "StatementExtra",
    "guard",
]

M = TypeVar("M", bound=BaseModel)
SIGNATURE_HEADER = "Metrocloud-Signature"
bearer = HTTPBearer(
    auto_error=False,
    description="A token issued by the node (`mct_<id>_<secret>`); see docs/api.md#authentication.",
)


class MalformedJson(InvalidInput):
    code = "malformed-json"


class BadSignature(VerificationError):
    """A ``Metrocloud-Signature`` that is malformed or does not verify (400)."""

    code = "bad-signature"


Check = Callable[[Node, Actor, Mapping[str, Any]], None]


@dataclass(frozen=True)
class Guard:
    roles: tuple[PartyRole, ...] = ()
    check: Check | None = None
    action: str = "use this endpoint"
    signed_body: bool = field(default=False)


def guard(
    *roles: PartyRole,
    check: Check | None = None,
    action: str = "use this endpoint",
    signed_body: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint as authenticated; ``roles`` empty means any admitted party."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__metrocloud_guard__ = Guard(roles, check, action, signed_body)  # type: ignore[attr-defined]
        return fn

    return deco


def _token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return value.strip()


class GuardedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        g: Guard | None = getattr(self.endpoint, "__metrocloud_guard__", None)
        if g is None:
            return handler

        async def guarded(request: Request) -> Response:
            node: Node = request.app.state.node
            token = _token(request)
            cached = cached_actor(node, token)  # skips the threadpool hop on a hit
            actor: Actor = (
                cached if cached is not None else await run_in_threadpool(authenticate, node, token)
            )
            request.state.actor = actor
            if g.roles:
                require_role(actor, *g.roles, action=g.action)
            if g.check is not None:
                await run_in_threadpool(g.check, node, actor, request.path_params)
            extra: dict[str, Any] = {"credential": actor.token_id}
            sig = request.headers.get(SIGNATURE_HEADER)
            if sig is not None and request.method == "POST":  # the writes that make statements
                extra["request_signature"] = await _verify_signature(request, actor, sig)
            request.state.extra = extra
            return await handler(request)

        return guarded


async def _verify_signature(request: Request, actor: Actor, header: str) -> dict[str, str]:
    """Check a party's signature over the JSON body; every failure answers 400."""
    try:
        parsed = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"request body is not valid JSON: {exc}") from None
    if actor.public_key is None:
        raise BadSignature(
            f"{SIGNATURE_HEADER} sent, but party {actor.party_id} has no "
            "registered key to check it with"
        )
    try:
        s = verify_request(parsed, header, PublicKey.from_spki_b64(actor.public_key))
    except InvalidInput as exc:
        raise BadSignature(f"{SIGNATURE_HEADER} is not a valid request signature: {exc}") from None
    return {"key_id": s.key_id, "alg": s.alg.value, "sig": base64.b64encode(s.sig).decode()}


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _actor(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Actor:
    actor: Actor | None = getattr(request.state, "actor", None)
    if actor is None:  # an endpoint without @guard asked for the actor: a programming error
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'")
    return actor


def _extra(request: Request) -> dict[str, Any]:
    extra: dict[str, Any] = getattr(request.state, "extra", {})
    return extra


NodeDep = Annotated[Node, Depends(_node)]
CurrentActor = Annotated[Actor, Depends(_actor)]
StatementExtra = Annotated[dict[str, Any], Depends(_extra)]


# -- request bodies ----------------------------------------------------------------------
#: models read through :func:`json_body`; their schemas go into the OpenAPI components
BODY_MODELS: set[type[BaseModel]] = set()


def json_body(model: type[M], *, required: bool = True) -> Any:
    """A dependency that reads the body with pydantic's JSON parser (one pass, no dict step).

    Runs after the route's guard, so authorization is decided before the body is read.
    Malformed JSON and schema errors surface as :class:`RequestValidationError`.
    """
    BODY_MODELS.add(model)

    async def parse(request: Request) -> M | None:
        raw = await request.body()
        if not raw.strip() and not required:
            return None
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
            ) from None

    return Depends(parse)


def body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body."""
    BODY_MODELS.add(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}
