"""AssetAdministrationShellRepository, read (SSP-002): shells, references, asset information."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from metrocloud.api.aas._ids import decode_asset_links
from metrocloud.api.aas._params import Cursor, Limit, shell_record
from metrocloud.api.aas._render import (
    json_response,
    jsonable,
    model_reference,
    paged_response,
)
from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.domain.errors import NotFound
from metrocloud.services import aas as svc
from metrocloud.services.common import check_limit, decode_cursor, encode_cursor
from metrocloud.twin import to_json_bytes

__all__ = ["router"]

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)

AasId = Annotated[str, Path(alias="aasIdentifier", description="The shell's id, base64url.")]
IdShort = Annotated[str | None, Query(alias="idShort", max_length=128)]
AssetIds = Annotated[
    list[str] | None,
    Query(alias="assetIds", description="base64url of a SpecificAssetId {name, value}."),
]


def _links(asset_ids: list[str] | None) -> list[svc.AssetLink]:
    return decode_asset_links(asset_ids or ())


@router.get("/shells")
@guard(action="read shells")
def get_all_shells(
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    asset_ids: AssetIds = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    page = svc.list_shells_json(
        node, actor, id_short=id_short, asset_links=_links(asset_ids), limit=limit, cursor=cursor
    )
    return paged_response(list(page.items), page.next_cursor)


@router.get("/shells/$reference")
@guard(action="read shells")
def get_all_shell_references(
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    asset_ids: AssetIds = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    page = svc.lookup_shell_ids(
        node,
        actor,
        _links(asset_ids),
        id_short=id_short,
        limit=limit,
        cursor=cursor,
        action="aas.shells.list",
    )
    refs = [model_reference(("AssetAdministrationShell", i)) for i in page.items]
    return paged_response(refs, page.next_cursor)


@router.get("/shells/{aasIdentifier}")
@guard(action="read a shell")
def get_shell(node: NodeDep, actor: CurrentActor, aas_id: AasId) -> Response:
    return json_response(svc.get_shell_json(node, actor, shell_record(aas_id)))


@router.get("/shells/{aasIdentifier}/$reference")
@guard(action="read a shell")
def get_shell_reference(node: NodeDep, actor: CurrentActor, aas_id: AasId) -> Response:
    shell = svc.get_shell(node, actor, shell_record(aas_id))
    return json_response(model_reference(("AssetAdministrationShell", shell.id)))


@router.get("/shells/{aasIdentifier}/asset-information")
@guard(action="read a shell")
def get_asset_information(node: NodeDep, actor: CurrentActor, aas_id: AasId) -> Response:
    shell = svc.get_shell(node, actor, shell_record(aas_id))
    return json_response(to_json_bytes(shell.asset_information))


@router.get("/shells/{aasIdentifier}/asset-information/thumbnail")
@guard(action="read a shell")
def get_thumbnail(node: NodeDep, actor: CurrentActor, aas_id: AasId) -> Response:
    shell = svc.get_shell(node, actor, shell_record(aas_id))
    raise NotFound(f"shell {shell.id} has no thumbnail")


@router.get("/shells/{aasIdentifier}/submodel-refs")
@guard(action="read a shell")
def get_all_submodel_references(
    node: NodeDep, actor: CurrentActor, aas_id: AasId, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    """The shell's submodel references (at most six: paged by position in the shell)."""
    check_limit(limit)
    shell = svc.get_shell(node, actor, shell_record(aas_id))
    refs = list(shell.submodels or ())
    key = decode_cursor(cursor, int)
    start = key[0] + 1 if key else 0
    page = refs[start : start + limit]
    nxt = encode_cursor([start + limit - 1]) if start + limit < len(refs) else None
    return paged_response([jsonable(r) for r in page], nxt)
