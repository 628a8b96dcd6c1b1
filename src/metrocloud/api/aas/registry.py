"""The registry's shell descriptors (AssetAdministrationShellRegistry, read) and the discovery
look-up of shells by asset ids: both answered from the same keyset pages as the repository.

A descriptor's endpoints point at this node's own AAS repository (``public_base_url``, else
the URL of the request) under the AAS prefix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aas_core3 import types as aas
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from metrocloud.api.aas._ids import decode_asset_links, decode_id, encode_id
from metrocloud.api.aas._params import Cursor, Limit, aas_base_url, shell_record, submodel_target
from metrocloud.api.aas._render import json_response, jsonable, paged_response
from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.domain.errors import NotFound
from metrocloud.services import aas as svc
from metrocloud.services.common import check_limit, decode_cursor, encode_cursor
from metrocloud.services.node import Node
from metrocloud.twin.ids import parse_submodel_id

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

AasId = Annotated[str, Path(alias="aasIdentifier", description="The shell's id, base64url.")]
SmId = Annotated[str, Path(alias="submodelIdentifier", description="Submodel id, base64url.")]
AssetIds = Annotated[
    list[str] | None,
    Query(alias="assetIds", description="base64url of a SpecificAssetId {name, value}."),
]
_ENDPOINT_VERSION = ["1.1"]


def _endpoint(interface: str, href: str) -> dict[str, Any]:
    return {
        "interface": interface,
        "protocolInformation": {
            "href": href,
            "endpointProtocol": "HTTP",
            "endpointProtocolVersion": _ENDPOINT_VERSION,
        },
    }


def _submodel_descriptor(node: Node, submodel_id: str, base: str) -> dict[str, Any]:
    _record, name = parse_submodel_id(submodel_id)
    out: dict[str, Any] = {"idShort": name, "id": submodel_id}
    semantic = svc.submodel_semantic_id(node, submodel_id)
    if semantic is not None:
        out["semanticId"] = {
            "type": "ExternalReference",
            "keys": [{"type": "GlobalReference", "value": semantic}],
        }
    out["endpoints"] = [_endpoint("SUBMODEL-3.0", f"{base}/submodels/{encode_id(submodel_id)}")]
    return out


def _submodel_ids(shell: aas.AssetAdministrationShell) -> list[str]:
    return [ref.keys[0].value for ref in shell.submodels or ()]


def _descriptor(node: Node, shell: aas.AssetAdministrationShell, base: str) -> dict[str, Any]:
    j = jsonable(shell)
    out = {k: j[k] for k in ("description", "displayName", "administration") if k in j}
    asset = j["assetInformation"]
    out["assetKind"] = asset["assetKind"]
    out.update({k: asset[k] for k in ("assetType", "globalAssetId") if k in asset})
    out["idShort"] = j.get("idShort")
    out["id"] = j["id"]
    if asset.get("specificAssetIds"):
        out["specificAssetIds"] = asset["specificAssetIds"]
    out["endpoints"] = [_endpoint("AAS-3.0", f"{base}/shells/{encode_id(shell.id)}")]
    subs = [_submodel_descriptor(node, i, base) for i in _submodel_ids(shell)]
    if subs:
        out["submodelDescriptors"] = subs
    return {k: v for k, v in out.items() if v is not None}


@router.get("/shell-descriptors")
@guard(action="read shell descriptors")
def get_all_shell_descriptors(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    limit: Limit = 100,
    cursor: Cursor = None,
    asset_kind: Annotated[
        Literal["Instance", "Type", "NotApplicable"] | None, Query(alias="assetKind")
    ] = None,
    asset_type: Annotated[str | None, Query(alias="assetType", max_length=400)] = None,
) -> Response:
    page = svc.list_shells(
        node,
        actor,
        asset_kind=asset_kind,
        asset_type=decode_id(asset_type, "assetType") if asset_type else None,
        limit=limit,
        cursor=cursor,
        action="aas.descriptors.list",
    )
    base = aas_base_url(request, node)
    return paged_response([_descriptor(node, s, base) for s in page.items], page.next_cursor)


@router.get("/shell-descriptors/{aasIdentifier}")
@guard(action="read shell descriptors")
def get_shell_descriptor(
    request: Request, node: NodeDep, actor: CurrentActor, aas_id: AasId
) -> Response:
    shell = svc.get_shell(node, actor, shell_record(aas_id), action="aas.descriptor.read")
    return json_response(_descriptor(node, shell, aas_base_url(request, node)))


@router.get("/shell-descriptors/{aasIdentifier}/submodel-descriptors")
@guard(action="read shell descriptors")
def get_all_submodel_descriptors(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    aas_id: AasId,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    check_limit(limit)
    shell = svc.get_shell(node, actor, shell_record(aas_id), action="aas.descriptor.read")
    ids = _submodel_ids(shell)
    key = decode_cursor(cursor, int)
    start = key[0] + 1 if key else 0
    nxt = encode_cursor([start + limit - 1]) if start + limit < len(ids) else None
    base = aas_base_url(request, node)
    page = ids[start : start + limit]
    return paged_response([_submodel_descriptor(node, i, base) for i in page], nxt)


@router.get("/shell-descriptors/{aasIdentifier}/submodel-descriptors/{submodelIdentifier}")
@guard(action="read shell descriptors")
def get_submodel_descriptor(
    request: Request, node: NodeDep, actor: CurrentActor, aas_id: AasId, sm_id: SmId
) -> Response:
    shell = svc.get_shell(node, actor, shell_record(aas_id), action="aas.descriptor.read")
    _record, _name, identifier = submodel_target(request, sm_id)
    if identifier not in _submodel_ids(shell):
        raise NotFound(f"shell {shell.id!r} references no submodel {identifier!r}")
    return json_response(_submodel_descriptor(node, identifier, aas_base_url(request, node)))


@router.get("/lookup/shells")
@guard(action="look up shells")
def get_all_shell_ids_by_asset_link(
    node: NodeDep,
    actor: CurrentActor,
    asset_ids: AssetIds = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Discovery: ids of the shells that carry every given asset id (all shells without)."""
    links = decode_asset_links(asset_ids or ())
    page = svc.lookup_shell_ids(node, actor, links, limit=limit, cursor=cursor)
    return paged_response(list(page.items), page.next_cursor)


@router.get("/lookup/shells/{aasIdentifier}")
@guard(action="look up shells")
def get_all_asset_links_by_id(node: NodeDep, actor: CurrentActor, aas_id: AasId) -> Response:
    """Discovery: the asset ids of one shell (``globalAssetId`` first)."""
    shell = svc.get_shell(node, actor, shell_record(aas_id), action="aas.lookup")
    info = shell.asset_information
    links: list[dict[str, Any]] = []
    if info.global_asset_id:
        links.append({"name": "globalAssetId", "value": info.global_asset_id})
    links += [jsonable(s) for s in info.specific_asset_ids or ()]
    return json_response(links)
