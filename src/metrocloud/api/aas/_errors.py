"""Errors on the AAS API: the AAS Part 2 ``Result`` body, translated from the node's problems.

/api/v1 answers RFC 9457 problem+json; AAS clients (and the IDTA test engine) expect the
Part 2 ``Result``: ``{"messages": [{"code", "messageType", "text", "timestamp"}]}`` and
nothing else in it. The status and the wording stay decided in one place
(:mod:`metrocloud.api.problems`); under the AAS prefix this module only re-renders the problem
as a ``Result``. AAS Part 2 has no 422, so invalid input answers 400 there.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from metrocloud.api.problems import PROBLEM_BASE

__all__ = ["install_error_format", "result_response"]

Handler = Callable[[Request, Exception], Awaitable[Response] | Response]
_KEEP_HEADERS = ("www-authenticate", "allow")


def result_response(
    status: int, text: str, *, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An AAS Part 2 ``Result`` with one error message."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    message = {"code": code[:32], "messageType": "Error", "text": text, "timestamp": stamp}
    return JSONResponse({"messages": [message]}, status_code=status, headers=headers)


def _as_result(response: Response) -> Response:
    try:
        problem: dict[str, Any] = json.loads(bytes(response.body))
    except (AttributeError, TypeError, ValueError):  # not a problem document: leave it alone
        return response
    code = str(problem.get("type", "")).removeprefix(PROBLEM_BASE) or str(response.status_code)
    text = str(problem.get("detail") or problem.get("title") or "request refused")
    if problem.get("rule"):
        text += f" (rule: {problem['rule']})"
    status = 400 if response.status_code == 422 else response.status_code
    headers = {k: response.headers[k] for k in _KEEP_HEADERS if k in response.headers}
    return result_response(status, text, code=code, headers=headers or None)


def install_error_format(app: FastAPI, prefix: str) -> None:
    """Re-render every installed error handler's problem as a ``Result`` under ``prefix``."""

    def wrap(handler: Handler) -> Handler:
        async def handle(request: Request, exc: Exception) -> Any:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            path = request.url.path
            if isinstance(response, Response) and (path + "/").startswith(prefix + "/"):
                return _as_result(response)
            return response

        return handle

    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = wrap(handler)
