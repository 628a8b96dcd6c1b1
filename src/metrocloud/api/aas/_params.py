"""Query parameters and path decoding shared by the AAS routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from metrocloud.api.aas._ids import decode_id
from metrocloud.api.aas._render import Extent, Level
from metrocloud.domain.errors import NotFound
from metrocloud.services.node import Node
from metrocloud.twin.ids import parse_shell_id, parse_submodel_id

__all__ = [
    "AAS_PREFIX",
    "Cursor",
    "ExtentQ",
    "LevelQ",
    "Limit",
    "aas_base_url",
    "base_url",
    "shell_record",
    "submodel_ids",
    "submodel_target",
]

#: where the AAS Part 2 API is mounted on the node
AAS_PREFIX = "/aas/api/v3.0"

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1 to 1000).")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`paging_metadata.cursor` of the last page.")
]
LevelQ = Annotated[Level, Query(description="`deep` (default) or `core`.")]
ExtentQ = Annotated[Extent, Query(description="`withoutBlobValue` (default) or `withBlobValue`.")]


def shell_record(aas_identifier: str) -> str:
    """The record id (``cer-...`` / ``ins-...``) behind a base64url shell id in a path."""
    return parse_shell_id(decode_id(aas_identifier, "aasIdentifier"))


def submodel_target(request: Request, submodel_identifier: str) -> tuple[str, str, str]:
    """(record id, submodel name, submodel id) of a base64url submodel id in a path.

    Under ``/shells/{aasIdentifier}/submodels/...`` the submodel must belong to that shell.
    """
    return submodel_ids(submodel_identifier, request.path_params.get("aasIdentifier"))


def submodel_ids(submodel_identifier: str, aas_identifier: str | None) -> tuple[str, str, str]:
    """:func:`submodel_target` from the two path segments (``aas_identifier`` None outside
    ``/shells/{aasIdentifier}/submodels/...``): the full path and the fast lane share it."""
    identifier = decode_id(submodel_identifier, "submodelIdentifier")
    record, name = parse_submodel_id(identifier)
    if aas_identifier is not None and shell_record(aas_identifier) != record:
        raise NotFound(f"shell {decode_id(aas_identifier)!r} references no submodel {identifier!r}")
    return record, name, identifier


def base_url(request: Request, node: Node) -> str:
    """The node's public URL (setting ``public_base_url``), else the URL this request used."""
    return (node.settings.public_base_url or str(request.base_url)).rstrip("/")


def aas_base_url(request: Request, node: Node) -> str:
    """Where this node serves the AAS API, as a client outside should call it."""
    return base_url(request, node) + AAS_PREFIX
