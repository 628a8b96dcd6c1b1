"""Small builders over the aas-core3.0 metamodel: references, properties, collections.

They only save keystrokes; every object is a metamodel class of ``aas_core3.types`` and is
checked by ``aas_core3.verification``, never by code of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date
from functools import cache

from aas_core3 import types as aas

from metrocloud.twin.concepts import semantic_id
from metrocloud.twin.ids import submodel_id

__all__ = [
    "XS",
    "boolean",
    "collection",
    "element_list",
    "external",
    "id_short",
    "lang",
    "mc",
    "mlp",
    "model_ref",
    "prop",
    "semantic",
    "submodel",
    "xs_date",
]

XS = aas.DataTypeDefXSD

_NOT_ID_SHORT = re.compile(r"[^A-Za-z0-9_]")


def id_short(prefix: str, text: str) -> str:
    """``prefix`` + ``text`` with every character idShort does not allow replaced by ``_``.

    AAS constraint AASd-002: ``^[a-zA-Z][a-zA-Z0-9_-]*[a-zA-Z0-9_]+$`` (prefix starts with a
    letter; ``-`` becomes ``_`` too, so the last character is always allowed).
    """
    return (prefix + _NOT_ID_SHORT.sub("_", text))[:128]


def external(value: str) -> aas.Reference:
    """An ExternalReference with one GlobalReference key."""
    return aas.Reference(
        aas.ReferenceTypes.EXTERNAL_REFERENCE, [aas.Key(aas.KeyTypes.GLOBAL_REFERENCE, value)]
    )


@cache
def semantic(value: str) -> aas.Reference:
    """The semantic id ``value`` as a reference, shared by every element that carries it.

    Only for the fixed set of semantic ids (the cache never grows past it); nothing in
    metrocloud mutates a rendered reference.
    """
    return external(value)


def mc(name: str) -> aas.Reference:
    """The semantic id of metrocloud concept ``name`` (see :mod:`metrocloud.twin.concepts`)."""
    return semantic(semantic_id(name))


def model_ref(key_type: aas.KeyTypes, value: str) -> aas.Reference:
    return aas.Reference(aas.ReferenceTypes.MODEL_REFERENCE, [aas.Key(key_type, value)])


def lang(text: str) -> list[aas.LangStringTextType]:
    return [aas.LangStringTextType("en", text)]


def xs_date(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def boolean(value: bool) -> str:
    return "true" if value else "false"


def prop(
    short: str,
    value: str | int | None,
    semantic: aas.Reference,
    value_type: aas.DataTypeDefXSD = XS.STRING,
) -> aas.Property:
    """A Property; ``None`` leaves the value unset (unknown), never an empty string."""
    return aas.Property(
        value_type=value_type,
        id_short=short,
        semantic_id=semantic,
        value=None if value is None else str(value),
    )


def mlp(short: str, text: str, semantic: aas.Reference) -> aas.MultiLanguageProperty:
    return aas.MultiLanguageProperty(id_short=short, semantic_id=semantic, value=lang(text))


def collection(
    short: str | None,
    semantic: aas.Reference,
    elements: Iterable[aas.SubmodelElement | None],
) -> aas.SubmodelElementCollection:
    """A collection of the given elements (``None`` entries skipped; none at all: no value)."""
    value = [e for e in elements if e is not None]
    return aas.SubmodelElementCollection(id_short=short, semantic_id=semantic, value=value or None)


def element_list(
    short: str,
    semantic: aas.Reference,
    item_semantic: aas.Reference,
    items: Sequence[aas.SubmodelElementCollection],
) -> aas.SubmodelElementList:
    """An ordered list of collections that all carry ``item_semantic`` (AASd-107, AASd-108).

    Items have no idShort (AASd-120); an empty list has no value at all.
    """
    return aas.SubmodelElementList(
        type_value_list_element=aas.AASSubmodelElements.SUBMODEL_ELEMENT_COLLECTION,
        id_short=short,
        semantic_id=semantic,
        order_relevant=True,
        semantic_id_list_element=item_semantic,
        value=list(items) or None,
    )


def submodel(
    record_id: str,
    name: str,
    semantic: aas.Reference,
    elements: Iterable[aas.SubmodelElement | None],
    description: str | None = None,
) -> aas.Submodel:
    return aas.Submodel(
        id=submodel_id(record_id, name),
        id_short=name,
        description=lang(description) if description else None,
        kind=aas.ModellingKind.INSTANCE,
        semantic_id=semantic,
        submodel_elements=[e for e in elements if e is not None] or None,
    )
