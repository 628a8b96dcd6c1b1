"""``/serialization`` (GenerateSerializationByIds) and ``/description`` (the profiles served)."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from metrocloud.api.aas._errors import result_response
from metrocloud.api.aas._ids import decode_id
from metrocloud.api.aas._params import base_url
from metrocloud.api.aas._render import json_response
from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.services import aas as svc
from metrocloud.twin import environment_json, environment_xml, write_aasx
from metrocloud.twin.ids import parse_shell_id, parse_submodel_id

__all__ = ["AASX_MEDIA_TYPE", "PROFILES", "router"]

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

_SSP = "https://admin-shell.io/aas/API/3/0/"
#: the service profiles of IDTA-01002-3-0 this node serves (all read profiles). The discovery
#: look-up ``/lookup/shells`` is served too, but v3.0 defines only the full Discovery profile
#: (SSP-001, with writes); the read-only one (SSP-002) arrives with v3.1, so none is claimed
PROFILES = (
    _SSP + "AssetAdministrationShellRepositoryServiceSpecification/SSP-002",
    _SSP + "SubmodelRepositoryServiceSpecification/SSP-002",
    _SSP + "AssetAdministrationShellRegistryServiceSpecification/SSP-002",
)
AASX_MEDIA_TYPE = "application/asset-administration-shell-package+xml"
_AASX_TYPES = (AASX_MEDIA_TYPE, "application/asset-administration-shell-package")
_JSON_TYPES = ("application/json", "application/*", "*/*")
_XML_TYPES = ("application/xml", "text/xml")

Ids = Annotated[list[str] | None, Query(description="base64url ids; repeat the parameter.")]


def _media_type(accept: str | None) -> str | None:
    """The serialization the Accept header asks for (JSON without one); None: none we have."""
    if not accept:
        return "application/json"
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, i, media.lower()))
    for _, _, media in sorted(ranked):
        if media in _AASX_TYPES:
            return AASX_MEDIA_TYPE
        if media in _JSON_TYPES:
            return "application/json"
        if media in _XML_TYPES:
            return "application/xml"
    return None


@router.get("/serialization")
@guard(action="export shells")
def generate_serialization_by_ids(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    aas_ids: Annotated[Ids, Query(alias="aasIds")] = None,
    submodel_ids: Annotated[Ids, Query(alias="submodelIds")] = None,
    include_concept_descriptions: Annotated[bool, Query(alias="includeConceptDescriptions")] = True,
) -> Response:
    """An environment of the given shells and submodels as AASX, JSON or XML (by Accept).

    Only what is named is serialized (a shell's submodels are named by ``submodelIds``); with
    no ids the environment holds the concept descriptions only, if asked for.
    """
    media = _media_type(request.headers.get("accept"))
    if media is None:
        return result_response(
            406,
            f"cannot serialize as {request.headers.get('accept')!r}; this node writes "
            f"{AASX_MEDIA_TYPE}, application/json and application/xml",
            code="not-acceptable",
        )
    shells = [parse_shell_id(decode_id(i, "aasIds value")) for i in aas_ids or ()]
    submodels = [parse_submodel_id(decode_id(i, "submodelIds value")) for i in submodel_ids or ()]
    env = svc.export(
        node,
        actor,
        shells=shells,
        submodels=submodels,
        with_concepts=include_concept_descriptions,
        base_url=base_url(request, node),
    )
    if media == AASX_MEDIA_TYPE:
        buffer = io.BytesIO()
        write_aasx(env, buffer)
        return Response(
            buffer.getvalue(),
            media_type=AASX_MEDIA_TYPE,
            headers={"Content-Disposition": 'attachment; filename="metrocloud.aasx"'},
        )
    if media == "application/xml":
        return Response(environment_xml(env), media_type="application/xml")
    return json_response(environment_json(env))


@router.get("/description")
@guard(action="read the service description")
def get_description(node: NodeDep, actor: CurrentActor) -> Response:
    return json_response({"profiles": list(PROFILES)})
