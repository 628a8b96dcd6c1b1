"""Shells: an instrument (assetKind Instance) and an instrument type (assetKind Type).

Both are rendered from one registry row alone (an ``instruments`` or a ``certificates`` row),
so a list page of shells costs the one keyset query that fetched the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from aas_core3 import types as aas

from metrocloud.twin import _idta
from metrocloud.twin._common import category_title
from metrocloud.twin._elements import external, id_short, lang, mc, model_ref, semantic
from metrocloud.twin.ids import (
    INSTRUMENT_SUBMODELS,
    TYPE_SUBMODELS,
    asset_id,
    party_uri,
    shell_id,
    submodel_id,
)
from metrocloud.twin.serialize import to_json_bytes

__all__ = [
    "instrument_fields",
    "instrument_shell",
    "instrument_shell_json",
    "memo_misses",
    "prime",
    "render_instrument",
    "render_type",
    "type_fields",
    "type_shell",
    "type_shell_json",
]


def _submodel_refs(record_id: str, names: tuple[str, ...]) -> list[aas.Reference]:
    return [model_ref(aas.KeyTypes.SUBMODEL, submodel_id(record_id, n)) for n in names]


def instrument_shell(row: Any) -> aas.AssetAdministrationShell:
    """The shell of the instrument in ``row`` (an ``instruments`` row; no further query).

    specificAssetIds carry the serial number, scoped to the manufacturer by its
    externalSubjectId (serial numbers are unique per manufacturer only, MID Art. 8(5)), and the
    manufacturer; ``derivedFrom`` points at the type shell of the instrument's certificate.
    """
    return aas.AssetAdministrationShell(
        id=shell_id(row.id),
        id_short=id_short("Instrument_", row.serial),
        description=lang(
            f"{category_title(row.category)} ({row.category}), serial number {row.serial}"
        ),
        asset_information=aas.AssetInformation(
            asset_kind=aas.AssetKind.INSTANCE,
            global_asset_id=asset_id(row.id),
            specific_asset_ids=[
                aas.SpecificAssetID(
                    name="serialNumber",
                    value=row.serial,
                    semantic_id=semantic(_idta.SERIAL_NUMBER),
                    external_subject_id=external(party_uri(row.manufacturer_id)),
                ),
                aas.SpecificAssetID(
                    name="manufacturerId",
                    value=row.manufacturer_id,
                    semantic_id=mc("ManufacturerId"),
                ),
            ],
            asset_type=asset_id(row.certificate_id),
        ),
        derived_from=model_ref(
            aas.KeyTypes.ASSET_ADMINISTRATION_SHELL, shell_id(row.certificate_id)
        ),
        submodels=_submodel_refs(row.id, INSTRUMENT_SUBMODELS),
    )


def type_shell(row: Any) -> aas.AssetAdministrationShell:
    """The shell of the instrument type certified by ``row`` (a ``certificates`` row alone)."""
    return aas.AssetAdministrationShell(
        id=shell_id(row.id),
        id_short=id_short("Type_", row.number),
        description=lang(
            f"{row.model}: {category_title(row.category)} ({row.category}), "
            f"EU-type examination certificate {row.number}"
        ),
        asset_information=aas.AssetInformation(
            asset_kind=aas.AssetKind.TYPE,
            global_asset_id=asset_id(row.id),
            specific_asset_ids=[
                aas.SpecificAssetID(
                    name="certificateNumber",
                    value=row.number,
                    semantic_id=mc("CertificateNumber"),
                    external_subject_id=external(party_uri(row.notified_body_id)),
                ),
                aas.SpecificAssetID(
                    name="manufacturerId",
                    value=row.holder_id,
                    semantic_id=mc("ManufacturerId"),
                ),
            ],
        ),
        submodels=_submodel_refs(row.id, TYPE_SUBMODELS),
    )


# -- rendered JSON, memoized -----------------------------------------------------------------
# A shell is a pure function of a few row fields (for an instrument: fields that never change
# after registration; for a type: fields a revision may change, all part of the key). The
# memo is keyed by exactly those inputs, so it can never serve a stale shell: it is a cache of
# a computation, not a second store. Bounded: about 1.5 KiB a shell.

_MEMO_SIZE = 100_000


class _Fields:
    __slots__ = (
        "category",
        "certificate_id",
        "holder_id",
        "id",
        "manufacturer_id",
        "model",
        "notified_body_id",
        "number",
        "serial",
    )

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


def render_instrument(
    id_: str, serial: str, category: str, manufacturer_id: str, certificate_id: str
) -> bytes:
    """The JSON of an instrument's shell from the fields it is made of (no memo)."""
    row = _Fields(
        id=id_,
        serial=serial,
        category=category,
        manufacturer_id=manufacturer_id,
        certificate_id=certificate_id,
    )
    return to_json_bytes(instrument_shell(row))


def render_type(
    id_: str, number: str, model: str, category: str, notified_body_id: str, holder_id: str
) -> bytes:
    """The JSON of a type's shell from the fields it is made of (no memo)."""
    row = _Fields(
        id=id_,
        number=number,
        model=model,
        category=category,
        notified_body_id=notified_body_id,
        holder_id=holder_id,
    )
    return to_json_bytes(type_shell(row))


#: shells rendered ahead of their request (by the read-ahead's render process), keyed like
#: the memo and taken into it at their first request; oldest dropped beyond _PRIMED_SIZE
_primed: dict[tuple[str, ...], bytes] = {}
_PRIMED_SIZE = 20_000


def instrument_fields(row: Any) -> tuple[str, ...]:
    """The fields an instrument's shell is made of (the memo's key)."""
    return (row.id, row.serial, row.category, row.manufacturer_id, row.certificate_id)


def type_fields(row: Any) -> tuple[str, ...]:
    """The fields a type's shell is made of (the memo's key)."""
    return (row.id, row.number, row.model, row.category, row.notified_body_id, row.holder_id)


def prime(
    instruments: Iterable[tuple[tuple[str, ...], bytes]],
    types: Iterable[tuple[tuple[str, ...], bytes]],
) -> None:
    """Hand over shells rendered elsewhere from exactly these fields (``render_*(*fields)``).

    They enter the memo at their first request, as if rendered then."""
    for fields, body in instruments:
        _primed[("i", *fields)] = body
    for fields, body in types:
        _primed[("t", *fields)] = body
    while len(_primed) > _PRIMED_SIZE:
        _primed.pop(next(iter(_primed)), None)


@lru_cache(maxsize=_MEMO_SIZE)
def _instrument_json(
    id_: str, serial: str, category: str, manufacturer_id: str, certificate_id: str
) -> bytes:
    body = _primed.pop(("i", id_, serial, category, manufacturer_id, certificate_id), None)
    if body is not None:
        return body
    return render_instrument(id_, serial, category, manufacturer_id, certificate_id)


@lru_cache(maxsize=_MEMO_SIZE)
def _type_json(
    id_: str, number: str, model: str, category: str, notified_body_id: str, holder_id: str
) -> bytes:
    body = _primed.pop(("t", id_, number, model, category, notified_body_id, holder_id), None)
    if body is not None:
        return body
    return render_type(id_, number, model, category, notified_body_id, holder_id)


def instrument_shell_json(row: Any) -> bytes:
    """``to_json_bytes(instrument_shell(row))``, memoized on the fields it depends on."""
    return _instrument_json(*instrument_fields(row))


def type_shell_json(row: Any) -> bytes:
    """``to_json_bytes(type_shell(row))``, memoized on the fields it depends on."""
    return _type_json(*type_fields(row))


def memo_misses() -> int:
    """How many shells entered the memo so far (both memos; a hint for read-ahead): rendered
    at their request, or rendered ahead elsewhere and handed over by :func:`prime`."""
    return _instrument_json.cache_info().misses + _type_json.cache_info().misses
