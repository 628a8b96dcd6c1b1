"""Identifiers of shells, assets and submodels, and metrocloud's semantic-id namespace.

- shell      ``https://metrocloud.eu/ids/aas/<record id>``
- asset      ``https://metrocloud.eu/ids/asset/<record id>``
- submodel   ``https://metrocloud.eu/ids/sm/<record id>/<Submodel name>``
- party      ``https://metrocloud.eu/ids/party/<party id>`` (a global reference: parties are
  not AAS objects; specificAssetIds and event records point at them with it)

``<record id>`` is an instrument id (``ins-...``, a shell of assetKind Instance) or a
certificate id (``cer-...``, the shell of the instrument type, assetKind Type). Semantic ids
of metrocloud's own concepts live under :data:`SEMANTICS` and each has a ConceptDescription.
"""

from __future__ import annotations

from metrocloud.domain.errors import NotFound
from metrocloud.store.ids import ID_PATTERN

__all__ = [
    "ASSET_PREFIX",
    "INSTRUMENT_SUBMODELS",
    "NAMESPACE",
    "PARTY_PREFIX",
    "PUBLIC_SUBMODELS",
    "SEMANTICS",
    "SHELL_PREFIX",
    "SUBMODEL_PREFIX",
    "TYPE_SUBMODELS",
    "asset_id",
    "parse_shell_id",
    "parse_submodel_id",
    "party_uri",
    "shell_id",
    "submodel_id",
]

NAMESPACE = "https://metrocloud.eu/ids/"
SHELL_PREFIX = NAMESPACE + "aas/"
ASSET_PREFIX = NAMESPACE + "asset/"
SUBMODEL_PREFIX = NAMESPACE + "sm/"
PARTY_PREFIX = NAMESPACE + "party/"
#: metrocloud's semantic ids (each has a ConceptDescription, see twin.concepts)
SEMANTICS = "https://metrocloud.eu/semantics/1/0/"

#: submodels of an instrument shell, in the order the shell references them
INSTRUMENT_SUBMODELS = (
    "Nameplate",
    "Conformity",
    "SoftwareIdentification",
    "Verification",
    "LifeCycle",
    "TimeSeries",
)
#: submodels of an instrument-type shell
TYPE_SUBMODELS = ("Nameplate", "Certificate", "SoftwareIdentification")
#: readable by every authenticated party (nameplate and certificate data are public
#: information); every other submodel follows the instrument's read rules and access log
PUBLIC_SUBMODELS = frozenset({"Nameplate", "Conformity", "Certificate"})


def _check_record(record_id: str) -> str:
    m = ID_PATTERN.match(record_id)
    if not m or m.group(1) not in ("ins", "cer"):
        raise NotFound(f"{record_id!r} names no instrument or instrument type of metrocloud")
    return record_id


def shell_id(record_id: str) -> str:
    return SHELL_PREFIX + record_id


def asset_id(record_id: str) -> str:
    return ASSET_PREFIX + record_id


def submodel_id(record_id: str, name: str) -> str:
    return f"{SUBMODEL_PREFIX}{record_id}/{name}"


def party_uri(party_id: str) -> str:
    return PARTY_PREFIX + party_id


def parse_shell_id(identifier: str) -> str:
    """The record id (``ins-...`` or ``cer-...``) a shell id names; :class:`NotFound` if none."""
    if not identifier.startswith(SHELL_PREFIX):
        raise NotFound(f"no shell with id {identifier!r} on this node")
    return _check_record(identifier[len(SHELL_PREFIX) :])


def parse_submodel_id(identifier: str) -> tuple[str, str]:
    """``(record id, submodel name)`` of a submodel id; :class:`NotFound` if not ours."""
    if not identifier.startswith(SUBMODEL_PREFIX):
        raise NotFound(f"no submodel with id {identifier!r} on this node")
    record, _, name = identifier[len(SUBMODEL_PREFIX) :].partition("/")
    _check_record(record)
    names = INSTRUMENT_SUBMODELS if record.startswith("ins-") else TYPE_SUBMODELS
    if name not in names:
        raise NotFound(f"no submodel with id {identifier!r} on this node")
    return record, name
