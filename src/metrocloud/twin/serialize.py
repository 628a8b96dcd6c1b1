"""Serialization and verification of rendered AAS objects, all by the metamodel libraries.

JSON and XML come from ``aas_core3.jsonization`` / ``aas_core3.xmlization``, verification
from ``aas_core3.verification``, the AASX package (Open Packaging Conventions) from
basyx-python-sdk's ``AASXWriter`` (:mod:`metrocloud.twin._basyx`, the only place basyx is
used). :mod:`metrocloud.twin.stream` writes environments too large to hold in memory.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import orjson
from aas_core3 import jsonization, xmlization
from aas_core3 import types as aas

from metrocloud.domain.errors import MetrocloudError

__all__ = [
    "XML_DECLARATION",
    "AasError",
    "AasFormat",
    "environment_json",
    "environment_xml",
    "to_json_bytes",
    "verify",
    "write_aasx",
]

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


class AasFormat(StrEnum):
    """The serializations of AAS Part 5 (AASX package) and Part 2 (JSON, XML)."""

    AASX = "aasx"
    JSON = "json"
    XML = "xml"


class AasError(MetrocloudError):
    """An AAS library refused an object metrocloud rendered: a bug of metrocloud's mapping.

    The message carries the library's own finding as evidence.
    """

    code = "aas-error"


def to_json_bytes(obj: aas.Class) -> bytes:
    """``obj`` (a shell, submodel, element, environment ...) as compact UTF-8 JSON.

    aas-core3.0 builds the JSON-able tree; orjson writes it (six times faster than the
    standard library on a shell, the same bytes for the strings, lists and objects the tree
    holds). Anything orjson refuses (an integer beyond 64 bits) is written by :mod:`json`."""
    tree = jsonization.to_jsonable(obj)
    try:
        return orjson.dumps(tree)
    except orjson.JSONEncodeError:
        return json.dumps(tree, ensure_ascii=False, separators=(",", ":")).encode()


def environment_json(env: aas.Environment) -> bytes:
    return to_json_bytes(env)


def environment_xml(env: aas.Environment) -> bytes:
    """The environment as an XML document (AAS Part 2 v3.0 schema, UTF-8)."""
    return (XML_DECLARATION + xmlization.to_str(env)).encode()


def verify(obj: aas.Class) -> list[str]:
    """Every constraint of the AAS v3.0 metamodel ``obj`` breaks, as ``"path: cause"``.

    An empty list means aas-core3.0 found nothing wrong (the checks are the generated
    invariants of the metamodel, e.g. AASd-002 on idShort, AASd-107/108/120 on lists).
    """
    from aas_core3 import verification  # 45 ms of regex compilation: only when asked

    return [f"{err.path}: {err.cause}" for err in verification.verify(obj)]


def write_aasx(env: aas.Environment, file: Path | BinaryIO) -> None:
    """Write ``env`` as an AASX package with one part (``/aasx/data.json``)."""
    from metrocloud.twin.stream import AasxStream

    with AasxStream(file) as package:
        package.write_part(env)
