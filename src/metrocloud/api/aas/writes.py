"""Writes on AAS paths: refused with 405 and where to write instead; other paths: 404.

Every change on metrocloud is a statement signed by the party that makes it and appended to
the node's transparency log (ARCHITECTURE.md decision 1). A shell or submodel is a view of
those statements, so it is changed by making the statement on /api/v1, never by PUT.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from metrocloud.api.aas._errors import result_response
from metrocloud.api.aas._params import AAS_PREFIX
from metrocloud.api.deps import CurrentActor, GuardedRoute, guard
from metrocloud.domain.errors import NotFound

__all__ = ["router", "where_to_write"]

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

_INSTRUMENTS = (
    "register instruments with POST /api/v1/instruments (manufacturer) and change them "
    "through life-cycle events with POST /api/v1/instruments/{instrument_id}/events"
)
_TYPES = (
    "issue certificates with POST /api/v1/certificates and change them with POST "
    "/api/v1/certificates/{certificate_id}/revise|suspend|reinstate|withdraw (notified body)"
)
_WHERE = {
    "shells": f"{_INSTRUMENTS}; {_TYPES}",
    "submodels": f"{_INSTRUMENTS}; declare conformity with POST /api/v1/declarations; {_TYPES}",
    "shell-descriptors": "shells are registered by registering instruments (POST "
    "/api/v1/instruments) or issuing certificates (POST /api/v1/certificates)",
    "lookup": "asset ids are the serial number, manufacturer and certificate number given "
    "when registering instruments (POST /api/v1/instruments)",
}


def where_to_write(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return _WHERE.get(first, f"{_INSTRUMENTS}; {_TYPES}")


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@guard(action="use the AAS API")
def refuse_write(request: Request, actor: CurrentActor, path: str) -> Response:
    """Included last: a GET here matched no read route (404); anything else is a write."""
    if request.method == "GET":
        raise NotFound(
            f"no AAS endpoint at {request.url.path}; {AAS_PREFIX}/description names the "
            "service profiles this node serves"
        )
    return result_response(
        405,
        f"the AAS API of metrocloud is read-only: {request.method} is not allowed on "
        f"/{path}. Every change is a statement signed by the party that makes it, recorded "
        f"in the node's transparency log: {where_to_write(path)}",
        code="read-only",
        headers={"Allow": "GET"},
    )
