"""Errors as RFC 9457 problem details, mapped in exactly one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from metrocloud.api.deps import MalformedJson
from metrocloud.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    MetrocloudError,
    NotFound,
    Unauthenticated,
    VerificationError,
)
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.store.database import StorageUnavailable

__all__ = ["PROBLEM_BASE", "install_problem_handlers", "problem_for", "problem_response"]

log = logging.getLogger("metrocloud.api")
PROBLEM_BASE = "https://metrocloud.eu/problems/"
MEDIA_TYPE = "application/problem+json"

_STATUS: list[tuple[type[MetrocloudError], int, str]] = [
    (MalformedJson, 400, "Malformed JSON"),
    (Unauthenticated, 401, "Unauthenticated"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not found"),
    (Conflict, 409, "Conflict"),
    (DomainError, 409, "Not allowed by the rules"),
    (VerificationError, 400, "Verification failed"),
    (InvalidInput, 422, "Invalid input"),
    (StorageUnavailable, 503, "Storage unavailable"),
    (PeerUnavailable, 502, "Peer node unavailable"),  # the grid: another node did not answer
]


def problem_response(
    status: int, title: str, detail: str, *, code: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": 'Bearer realm="metrocloud"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_for(exc: MetrocloudError, instance: str | None = None) -> JSONResponse:
    """The problem+json answer to ``exc``, for routes that must finish the response
    themselves (the grid's node-to-node endpoints sign their answers)."""
    status, title = _for(exc)
    return problem_response(
        status, title, exc.message, code=exc.code, instance=instance, rule=exc.rule
    )


def _for(exc: MetrocloudError) -> tuple[int, str]:
    for cls, status, title in _STATUS:
        if isinstance(exc, cls):
            return status, title
    return 400, "Bad request"


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(MetrocloudError)
    async def _metrocloud(request: Request, exc: MetrocloudError) -> JSONResponse:
        status, title = _for(exc)
        return problem_response(
            status, title, exc.message, code=exc.code, instance=request.url.path, rule=exc.rule
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                why = e.get("ctx", {}).get("error") or e.get("msg", "")
                return problem_response(
                    400,
                    "Malformed JSON",
                    f"request body is not valid JSON: {why}".rstrip(": "),
                    code="malformed-json",
                    instance=request.url.path,
                )
            errors.append(
                {
                    "loc": _loc(tuple(e.get("loc", ()))),
                    "msg": e.get("msg", ""),
                    "type": e.get("type", ""),
                }
            )
        first = errors[0] if errors else {"loc": "body", "msg": "invalid"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return problem_response(
            422,
            "Invalid input",
            f"{first['loc']}: {first['msg']}{more}",
            code="invalid-input",
            instance=request.url.path,
            errors=errors[:100],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            404: "Not found",
            405: "Method not allowed",
            413: "Content too large",
            415: "Unsupported media type",
            429: "Too many requests",
        }
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem_response(
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            detail,
            code=f"http-{exc.status_code}",
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "Internal error",
            "the node failed to process the request; the error is logged on the node",
            code="internal-error",
            instance=request.url.path,
        )
