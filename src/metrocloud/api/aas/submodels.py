"""SubmodelRepository, read (SSP-002): submodels, their elements by idShortPath, modifiers.

The routes of one submodel (``one``) are served twice: under ``/submodels/{submodelIdentifier}``
and, for the AAS repository profile, under ``/shells/{aasIdentifier}/submodels/...``. Submodel
lists are keyset pages in the database; the elements of one rendered submodel are paged by
their position in it (the cursor carries the last position returned).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from metrocloud.api.aas._ids import decode_id
from metrocloud.api.aas._params import Cursor, ExtentQ, LevelQ, Limit, base_url, submodel_target
from metrocloud.api.aas._render import (
    Extent,
    Level,
    NotApplicable,
    answer,
    element_reference,
    find_element,
    find_submodel_element,
    json_response,
    jsonable,
    metadata,
    model_reference,
    paged_response,
    paths,
    shape,
    value_only,
)
from metrocloud.api.deps import CurrentActor, GuardedRoute, NodeDep, guard
from metrocloud.domain.errors import NotFound
from metrocloud.services import aas as svc
from metrocloud.services.common import Actor, check_limit, decode_cursor, encode_cursor
from metrocloud.services.node import Node

__all__ = ["one", "router"]

router = APIRouter(route_class=GuardedRoute, include_in_schema=False)
one = APIRouter(route_class=GuardedRoute, include_in_schema=False)

SmId = Annotated[str, Path(alias="submodelIdentifier", description="Submodel id, base64url.")]
IdShortPath = Annotated[str, Path(alias="idShortPath", description="e.g. `Markings.Marking[0]`")]
IdShort = Annotated[str | None, Query(alias="idShort", max_length=128)]
SemanticId = Annotated[
    str | None, Query(alias="semanticId", max_length=400, description="base64url")
]
_NO_METADATA = {"Capability", "Operation"}


# -- lists of submodels ------------------------------------------------------------------------


def _submodels(
    request: Request,
    node: Node,
    actor: Actor,
    id_short: str | None,
    semantic_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    page = svc.list_submodels(
        node,
        actor,
        id_short=id_short,
        semantic_id=decode_id(semantic_id, "semanticId") if semantic_id else None,
        limit=limit,
        cursor=cursor,
        base_url=base_url(request, node),
    )
    return [jsonable(s) for s in page.items], page.next_cursor


@router.get("/submodels")
@guard(action="read submodels")
def get_all_submodels(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    semantic_id: SemanticId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    items, nxt = _submodels(request, node, actor, id_short, semantic_id, limit, cursor)
    return paged_response([shape(s, level, extent) for s in items], nxt)


@router.get("/submodels/$metadata")
@guard(action="read submodels")
def get_all_submodels_metadata(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    semantic_id: SemanticId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    items, nxt = _submodels(request, node, actor, id_short, semantic_id, limit, cursor)
    return paged_response([metadata(s) for s in items], nxt)


@router.get("/submodels/$value")
@guard(action="read submodels")
def get_all_submodels_value(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    semantic_id: SemanticId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    items, nxt = _submodels(request, node, actor, id_short, semantic_id, limit, cursor)
    return paged_response([value_only(shape(s, level, extent), extent) for s in items], nxt)


@router.get("/submodels/$reference")
@guard(action="read submodels")
def get_all_submodels_reference(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    semantic_id: SemanticId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    items, nxt = _submodels(request, node, actor, id_short, semantic_id, limit, cursor)
    return paged_response([model_reference(("Submodel", s["id"])) for s in items], nxt)


@router.get("/submodels/$path")
@guard(action="read submodels")
def get_all_submodels_path(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    id_short: IdShort = None,
    semantic_id: SemanticId = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
) -> Response:
    """One path per submodel: its idShort, the root of its elements' idShortPaths (those are
    at ``/submodels/{id}/$path``). ``level`` is accepted for the profile's signature."""
    items, nxt = _submodels(request, node, actor, id_short, semantic_id, limit, cursor)
    return paged_response([s.get("idShort") or s["id"] for s in items], nxt)


# -- one submodel ------------------------------------------------------------------------------


def _submodel(request: Request, node: Node, actor: Actor, sm_id: str) -> tuple[dict[str, Any], str]:
    record, name, identifier = submodel_target(request, sm_id)
    sm = svc.get_submodel(node, actor, record, name, base_url=base_url(request, node))
    return jsonable(sm), identifier


def _element(request: Request, node: Node, actor: Actor, sm_id: str, path: str) -> dict[str, Any]:
    """The element at ``path`` as JSON (only it is serialized, not the whole submodel)."""
    record, name, _ = submodel_target(request, sm_id)
    sm = svc.get_submodel(node, actor, record, name, base_url=base_url(request, node))
    element: dict[str, Any] = jsonable(find_submodel_element(sm, path))
    return element


def _page(items: Sequence[Any], limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    """A page of a rendered submodel's elements; the cursor is the last position returned."""
    check_limit(limit)
    key = decode_cursor(cursor, int)
    start = key[0] + 1 if key else 0
    nxt = encode_cursor([start + limit - 1]) if start + limit < len(items) else None
    return list(items[start : start + limit]), nxt


@one.get("")
@guard(action="read a submodel")
def get_submodel(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    return json_response(answer(sm, "", level, extent))


@one.get("/$metadata")
@guard(action="read a submodel")
def get_submodel_metadata(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    return json_response(answer(sm, "$metadata"))


@one.get("/$value")
@guard(action="read a submodel")
def get_submodel_value(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    return json_response(answer(sm, "$value", level, extent))


@one.get("/$reference")
@guard(action="read a submodel")
def get_submodel_reference(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId
) -> Response:
    _, identifier = _submodel(request, node, actor, sm_id)
    return json_response(model_reference(("Submodel", identifier)))


@one.get("/$path")
@guard(action="read a submodel")
def get_submodel_path(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId, level: LevelQ = Level.DEEP
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    return json_response(paths(sm, level))


@one.get("/submodel-elements")
@guard(action="read a submodel")
def get_all_submodel_elements(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    page, nxt = _page(sm.get("submodelElements") or [], limit, cursor)
    return paged_response([shape(e, level, extent) for e in page], nxt)


@one.get("/submodel-elements/$metadata")
@guard(action="read a submodel")
def get_all_submodel_elements_metadata(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    page, nxt = _page(sm.get("submodelElements") or [], limit, cursor)
    return paged_response([e if e["modelType"] in _NO_METADATA else metadata(e) for e in page], nxt)


@one.get("/submodel-elements/$value")
@guard(action="read a submodel")
def get_all_submodel_elements_value(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    valued = [e for e in sm.get("submodelElements") or [] if e["modelType"] not in _NO_METADATA]
    page, nxt = _page(valued, limit, cursor)
    return paged_response([value_only(shape(e, level, extent), extent) for e in page], nxt)


@one.get("/submodel-elements/$reference")
@guard(action="read a submodel")
def get_all_submodel_elements_reference(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    sm, identifier = _submodel(request, node, actor, sm_id)
    page, nxt = _page(sm.get("submodelElements") or [], limit, cursor)
    return paged_response([element_reference(identifier, [e]) for e in page], nxt)


@one.get("/submodel-elements/$path")
@guard(action="read a submodel")
def get_all_submodel_elements_path(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    limit: Limit = 100,
    cursor: Cursor = None,
    level: LevelQ = Level.DEEP,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    page, nxt = _page(paths(sm, level), limit, cursor)
    return paged_response(page, nxt)


@one.get("/submodel-elements/{idShortPath}")
@guard(action="read a submodel")
def get_submodel_element(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    path: IdShortPath,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    element = _element(request, node, actor, sm_id, path)
    return json_response(answer(element, "", level, extent))


@one.get("/submodel-elements/{idShortPath}/$metadata")
@guard(action="read a submodel")
def get_submodel_element_metadata(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId, path: IdShortPath
) -> Response:
    element = _element(request, node, actor, sm_id, path)
    return json_response(answer(element, "$metadata"))


@one.get("/submodel-elements/{idShortPath}/$value")
@guard(action="read a submodel")
def get_submodel_element_value(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    path: IdShortPath,
    level: LevelQ = Level.DEEP,
    extent: ExtentQ = Extent.WITHOUT_BLOB_VALUE,
) -> Response:
    element = _element(request, node, actor, sm_id, path)
    return json_response(answer(element, "$value", level, extent))


@one.get("/submodel-elements/{idShortPath}/$reference")
@guard(action="read a submodel")
def get_submodel_element_reference(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId, path: IdShortPath
) -> Response:
    sm, identifier = _submodel(request, node, actor, sm_id)
    _element, chain = find_element(sm, path)
    return json_response(element_reference(identifier, chain))


@one.get("/submodel-elements/{idShortPath}/$path")
@guard(action="read a submodel")
def get_submodel_element_path(
    request: Request,
    node: NodeDep,
    actor: CurrentActor,
    sm_id: SmId,
    path: IdShortPath,
    level: LevelQ = Level.DEEP,
) -> Response:
    sm, _ = _submodel(request, node, actor, sm_id)
    element, _chain = find_element(sm, path)
    return json_response(paths(element, level, root=path))


@one.get("/submodel-elements/{idShortPath}/attachment")
@guard(action="read a submodel")
def get_file_by_path(
    request: Request, node: NodeDep, actor: CurrentActor, sm_id: SmId, path: IdShortPath
) -> Response:
    """A Blob's bytes; a File's value names where the file is (the node stores no files)."""
    sm, _ = _submodel(request, node, actor, sm_id)
    element, _chain = find_element(sm, path)
    kind = element.get("modelType")
    if kind == "Blob" and element.get("value"):
        return Response(base64.b64decode(element["value"]), media_type=element["contentType"])
    if kind == "File":
        where = f"; its value is {element['value']!r}" if element.get("value") else ""
        raise NotFound(f"this node stores no attachment for File {path!r}{where}")
    if kind == "Blob":
        raise NotFound(f"Blob {path!r} holds no value")
    raise NotApplicable(f"attachment is defined for File and Blob only, not for a {kind}")
