"""AAS JSON on the wire: the paging envelope, references and the Part 2 modifiers.

Objects arrive as aas-core3.0 instances and leave as their official JSON serialization
(``aas_core3.jsonization``); the modifiers of IDTA-01002-3-0 work on that JSON:

- ``level``: ``deep`` (default) keeps every descendant; ``core`` keeps the direct children
  of the requested object and drops theirs;
- ``extent``: ``withoutBlobValue`` (default) leaves out the bytes of every Blob;
- ``$metadata``: the object without its value attributes;
- ``$value``: the ValueOnly serialization (``{idShort: value}``, values typed by valueType);
- ``$reference``: a ModelReference to the object;
- ``$path``: the idShortPaths of the object's elements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from aas_core3 import jsonization
from aas_core3 import types as aas
from fastapi.responses import Response

from metrocloud.domain.errors import InvalidInput, NotFound

__all__ = [
    "MODIFIERS",
    "Extent",
    "Level",
    "NotApplicable",
    "answer",
    "element_reference",
    "find_element",
    "find_submodel_element",
    "json_body",
    "json_response",
    "jsonable",
    "metadata",
    "model_reference",
    "paged_body",
    "paged_response",
    "paths",
    "shape",
    "value_only",
]

E = TypeVar("E")  # a submodel element: its JSON object or its aas-core3.0 object
_CONTAINERS = {"SubmodelElementCollection": "value", "SubmodelElementList": "value"}
_ENTITY = "Entity"
#: what $metadata leaves out, per modelType (only optional attributes, so it stays valid)
_VALUE_ATTRS: dict[str, tuple[str, ...]] = {
    "Property": ("value", "valueId"),
    "MultiLanguageProperty": ("value", "valueId"),
    "Range": ("min", "max"),
    "File": ("value",),
    "Blob": ("value",),
    "ReferenceElement": ("value",),
    "SubmodelElementCollection": ("value",),
    "SubmodelElementList": ("value",),
    "Entity": ("statements", "globalAssetId", "specificAssetIds"),
    "AnnotatedRelationshipElement": ("annotations",),
}
_NO_METADATA = {"Capability", "Operation"}
_NO_VALUE = {"Capability", "Operation"}
_PATH_ROOTS = {"SubmodelElementCollection", "SubmodelElementList", "Entity"}
_INTEGER = re.compile(
    r"xs:(integer|int|long|short|byte|nonNegativeInteger|positiveInteger|"
    r"nonPositiveInteger|negativeInteger|unsignedInt|unsignedLong|unsignedShort|unsignedByte)"
)
_NUMBER = {"xs:double", "xs:float", "xs:decimal"}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PATH = re.compile(r"[^.\[\]]+(\[\d+\])*(\.[^.\[\]]+(\[\d+\])*)*")


class Level(StrEnum):
    CORE = "core"
    DEEP = "deep"


class Extent(StrEnum):
    WITH_BLOB_VALUE = "withBlobValue"
    WITHOUT_BLOB_VALUE = "withoutBlobValue"


class NotApplicable(InvalidInput):
    """A modifier that IDTA-01002-3-0 does not define for this kind of element (400)."""

    code = "modifier-not-applicable"


def jsonable(obj: Any) -> Any:
    """The official JSON serialization of an aas-core3.0 instance, as plain Python values."""
    return jsonization.to_jsonable(obj)


def json_response(content: Any, status: int = 200) -> Response:
    return Response(json_body(content), status_code=status, media_type="application/json")


def json_body(content: Any) -> bytes:
    """The body of :func:`json_response`: ``content`` as compact UTF-8 JSON (bytes as is)."""
    return content if isinstance(content, bytes) else _dumps(content)


def _dumps(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def paged_response(items: Sequence[bytes] | Sequence[Any], cursor: str | None) -> Response:
    """``{"paging_metadata": {"cursor"?}, "result": [...]}``; items as JSON bytes or values."""
    return json_response(paged_body(items, cursor))


def paged_body(items: Sequence[bytes] | Sequence[Any], cursor: str | None) -> bytes:
    """The body of :func:`paged_response`."""
    meta = _dumps({"cursor": cursor} if cursor else {})
    parts = [i if isinstance(i, bytes) else _dumps(i) for i in items]
    return b'{"paging_metadata":' + meta + b',"result":[' + b",".join(parts) + b"]}"


def model_reference(*keys: tuple[str, str]) -> dict[str, Any]:
    return {"type": "ModelReference", "keys": [{"type": t, "value": v} for t, v in keys]}


# -- navigation -------------------------------------------------------------------------


def _children(element: dict[str, Any]) -> list[dict[str, Any]]:
    kind = element.get("modelType")
    if kind in _CONTAINERS:
        return list(element.get("value") or [])
    if kind == _ENTITY:
        return list(element.get("statements") or [])
    return []


def find_element(submodel: dict[str, Any], path: str) -> tuple[dict[str, Any], list[Any]]:
    """The element at idShortPath ``path`` (``a.b[2].c``) and the chain of elements to it."""
    return _find(
        submodel.get("submodelElements") or [],
        path,
        lambda e: e.get("idShort"),
        lambda e: e.get("modelType") == "SubmodelElementList",
        _children,
    )


def find_submodel_element(submodel: aas.Submodel, path: str) -> aas.SubmodelElement:
    """:func:`find_element` on the submodel object itself: the same look-up and errors, but
    only the element found needs serializing (``jsonable(found)`` is the same JSON as
    ``find_element(jsonable(submodel), path)[0]``)."""
    found, _ = _find(
        list(submodel.submodel_elements or []),
        path,
        lambda e: e.id_short,
        lambda e: isinstance(e, aas.SubmodelElementList),
        _object_children,
    )
    return found


def _object_children(element: aas.SubmodelElement) -> list[aas.SubmodelElement]:
    if isinstance(element, aas.SubmodelElementCollection | aas.SubmodelElementList):
        return list(element.value or [])
    if isinstance(element, aas.Entity):
        return list(element.statements or [])
    return []


def _find(
    elements: Sequence[E],
    path: str,
    id_short: Callable[[E], str | None],
    is_list: Callable[[E], bool],
    children: Callable[[E], Sequence[E]],
) -> tuple[E, list[E]]:
    """The element at ``path`` among ``elements`` (JSON objects or aas-core3.0 objects: the
    three functions read either) and the chain of elements to it."""
    if not _PATH.fullmatch(path):
        raise InvalidInput(
            f"{path[:80]!r} is not an idShortPath (idShorts joined by '.', list items as '[n]')"
        )
    current: E | None = None
    chain: list[E] = []
    for part in _PATH_PART.finditer(path):
        name, index = part.group(1), part.group(2)
        if index is None:
            current = next((e for e in elements if id_short(e) == name), None)
        elif current is not None and is_list(current):
            current = elements[int(index)] if int(index) < len(elements) else None
        else:
            current = None
        if current is None:
            raise NotFound(f"no submodel element at idShortPath {path!r}")
        chain.append(current)
        elements = children(current)
    assert current is not None
    return current, chain


def element_reference(submodel_id: str, chain: list[dict[str, Any]]) -> dict[str, Any]:
    keys: list[tuple[str, str]] = [("Submodel", submodel_id)]
    parent: dict[str, Any] | None = None
    for element in chain:
        if parent is not None and parent.get("modelType") == "SubmodelElementList":
            step = str(_children(parent).index(element))
        else:
            step = str(element.get("idShort"))
        keys.append((str(element["modelType"]), step))
        parent = element
    return model_reference(*keys)


# -- modifiers ---------------------------------------------------------------------------


def _child_key(obj: dict[str, Any]) -> str | None:
    kind = obj.get("modelType")
    if kind == "Submodel":
        return "submodelElements"
    if kind in _CONTAINERS:
        return "value"
    return "statements" if kind == _ENTITY else None


def _without_blobs(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without the value of any Blob in it; ``obj`` itself when it holds no Blob."""
    if obj.get("modelType") == "Blob":
        return {k: v for k, v in obj.items() if k != "value"}
    key = _child_key(obj)
    if key and obj.get(key):
        children = obj[key]
        shaped = [_without_blobs(c) for c in children]
        if any(s is not c for s, c in zip(shaped, children, strict=True)):
            return {**obj, key: shaped}
    return obj


def shape(
    obj: dict[str, Any], level: Level = Level.DEEP, extent: Extent = Extent.WITHOUT_BLOB_VALUE
) -> dict[str, Any]:
    """Apply ``level`` and ``extent`` to a submodel or an element."""
    if extent is Extent.WITHOUT_BLOB_VALUE:
        obj = _without_blobs(obj)
    key = _child_key(obj)
    if level is Level.CORE and key and obj.get(key):
        obj = {**obj, key: [_drop_children(c) for c in obj[key]]}
    return obj


def _drop_children(obj: dict[str, Any]) -> dict[str, Any]:
    key = _child_key(obj)
    return {k: v for k, v in obj.items() if k != key} if key else obj


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    kind = str(obj.get("modelType"))
    if kind == "Submodel":
        return {k: v for k, v in obj.items() if k != "submodelElements"}
    if kind in _NO_METADATA:
        raise NotApplicable(f"$metadata is not defined for a {kind} (IDTA-01002-3-0)")
    drop = _VALUE_ATTRS.get(kind, ())
    return {k: v for k, v in obj.items() if k not in drop}


def _typed(value: str | None, value_type: str | None) -> Any:
    if value is None:
        return None
    try:
        if value_type and _INTEGER.fullmatch(value_type):
            return int(value)
        if value_type in _NUMBER:
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
    except ValueError:
        return value
    if value_type == "xs:boolean":
        return value in ("true", "1")
    return value


def _value(element: dict[str, Any], extent: Extent) -> Any:
    kind = element.get("modelType")
    if kind == "Property":
        return _typed(element.get("value"), element.get("valueType"))
    if kind == "MultiLanguageProperty":
        return [{s["language"]: s["text"]} for s in element.get("value") or []]
    if kind == "Range":
        vt = element.get("valueType")
        return {"min": _typed(element.get("min"), vt), "max": _typed(element.get("max"), vt)}
    if kind in ("File", "Blob"):
        out = {"contentType": element.get("contentType")}
        if kind == "File" or extent is Extent.WITH_BLOB_VALUE:
            out["value"] = element.get("value")
        return out
    if kind == "ReferenceElement":
        return element.get("value")
    if kind == "SubmodelElementCollection":
        return _object(element.get("value") or [], extent)
    if kind == "SubmodelElementList":
        return [_value(e, extent) for e in element.get("value") or []]
    if kind == "Entity":
        out = {"statements": _object(element.get("statements") or [], extent)}
        out["entityType"] = element.get("entityType")
        for key in ("globalAssetId", "specificAssetIds"):
            if element.get(key):
                out[key] = element[key]
        return out
    if kind in ("RelationshipElement", "AnnotatedRelationshipElement"):
        out = {"first": element.get("first"), "second": element.get("second")}
        if kind == "AnnotatedRelationshipElement":
            out["annotations"] = _object(element.get("annotations") or [], extent)
        return out
    if kind == "BasicEventElement":
        return {"observed": element.get("observed")}
    raise NotApplicable(f"$value is not defined for a {kind} (IDTA-01002-3-0)")


def _object(elements: list[dict[str, Any]], extent: Extent) -> dict[str, Any]:
    return {
        str(e["idShort"]): _value(e, extent)
        for e in elements
        if e.get("idShort") and e.get("modelType") not in _NO_VALUE
    }


#: the modifiers :func:`answer` applies ("" for none)
MODIFIERS = ("", "$value", "$metadata")


def answer(
    obj: dict[str, Any],
    modifier: str = "",
    level: Level = Level.DEEP,
    extent: Extent = Extent.WITHOUT_BLOB_VALUE,
) -> bytes:
    """The body of GET on one submodel or element, as is (``modifier`` ""), ``$value`` or
    ``$metadata``: the routes and the fast lane (:mod:`metrocloud.api.aas._fast`) answer
    through it."""
    if modifier == "$metadata":
        return json_body(metadata(obj))
    if modifier == "$value":
        return json_body(value_only(shape(obj, level, extent), extent))
    if modifier:
        raise ValueError(f"unknown modifier {modifier!r}; known: {MODIFIERS}")
    return json_body(shape(obj, level, extent))


def value_only(obj: dict[str, Any], extent: Extent = Extent.WITHOUT_BLOB_VALUE) -> Any:
    """The ValueOnly serialization: a submodel as ``{idShort: value}`` of its elements, an
    element as ``{idShort: value}`` (its bare value when it has no idShort, in a list)."""
    if obj.get("modelType") == "Submodel":
        return _object(obj.get("submodelElements") or [], extent)
    if obj.get("modelType") in _NO_VALUE:
        raise NotApplicable(f"$value is not defined for a {obj.get('modelType')} (IDTA-01002-3-0)")
    value = _value(obj, extent)
    return {obj["idShort"]: value} if obj.get("idShort") else value


def _walk(elements: list[dict[str, Any]], prefix: str, deep: bool, in_list: bool) -> Iterator[str]:
    for i, e in enumerate(elements):
        if in_list:
            path = f"{prefix}[{i}]"
        else:
            path = f"{prefix}.{e.get('idShort')}" if prefix else str(e.get("idShort"))
        yield path
        kids = _children(e)
        if deep and kids:
            yield from _walk(kids, path, deep, e.get("modelType") == "SubmodelElementList")


def paths(obj: dict[str, Any], level: Level = Level.DEEP, root: str = "") -> list[str]:
    """The idShortPaths of a submodel's elements, or of an element and its descendants."""
    deep = level is Level.DEEP
    if obj.get("modelType") == "Submodel":
        return list(_walk(obj.get("submodelElements") or [], "", deep, False))
    kind = str(obj.get("modelType"))
    if kind not in _PATH_ROOTS:
        raise NotApplicable(
            f"$path is defined for SubmodelElementCollection, SubmodelElementList and "
            f"Entity only, not for a {kind} (IDTA-01002-3-0)"
        )
    return [root, *_walk(_children(obj), root, deep, kind == "SubmodelElementList")]
