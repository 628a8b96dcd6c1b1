"""Registry -> AAS v3.0: the submodels of instrument and type shells, and environments.

Submodels are rendered from a view (:mod:`metrocloud.twin.views`) each time they are asked
for; nothing rendered is stored, so the next rendering after a registry change shows it.
"""

from __future__ import annotations

from collections.abc import Iterable

from aas_core3 import types as aas

from metrocloud.domain.errors import NotFound
from metrocloud.twin import _instrument, _type
from metrocloud.twin.concepts import concept_descriptions
from metrocloud.twin.ids import INSTRUMENT_SUBMODELS, TYPE_SUBMODELS
from metrocloud.twin.views import SUBMODEL_PARTS, InstrumentView, TypeView

__all__ = [
    "MEASUREMENTS_PATH",
    "environment",
    "instrument_submodel",
    "instrument_submodels",
    "type_submodel",
    "type_submodels",
]

MEASUREMENTS_PATH = _instrument.MEASUREMENTS_PATH


def instrument_submodel(view: InstrumentView, name: str, *, base_url: str = "") -> aas.Submodel:
    """Submodel ``name`` (one of ``INSTRUMENT_SUBMODELS``) of the instrument in ``view``.

    ``base_url`` is the node's public URL (``Settings.base_url()``); the TimeSeries endpoint
    is relative to the node without it.
    """
    render = _instrument.RENDERERS.get(name)
    if render is None:
        names = ", ".join(INSTRUMENT_SUBMODELS)
        raise NotFound(f"an instrument shell has no submodel {name!r}; it has {names}")
    missing = SUBMODEL_PARTS[name] - view.parts
    if missing:  # a programming error: the view was loaded without what this submodel shows
        raise ValueError(f"submodel {name} needs view parts {sorted(missing)} not loaded")
    return render(view, base_url)


def instrument_submodels(view: InstrumentView, *, base_url: str = "") -> list[aas.Submodel]:
    """Every submodel of the instrument, in the order its shell references them."""
    return [instrument_submodel(view, n, base_url=base_url) for n in INSTRUMENT_SUBMODELS]


def type_submodel(view: TypeView, name: str) -> aas.Submodel:
    """Submodel ``name`` (one of ``TYPE_SUBMODELS``) of the instrument type in ``view``."""
    render = _type.RENDERERS.get(name)
    if render is None:
        names = ", ".join(TYPE_SUBMODELS)
        raise NotFound(f"an instrument-type shell has no submodel {name!r}; it has {names}")
    return render(view)


def type_submodels(view: TypeView) -> list[aas.Submodel]:
    """Every submodel of the instrument type, in the order its shell references them."""
    return [_type.RENDERERS[n](view) for n in TYPE_SUBMODELS]


def environment(
    shells: Iterable[aas.AssetAdministrationShell],
    submodels: Iterable[aas.Submodel],
    with_concepts: bool = True,
) -> aas.Environment:
    """An AAS environment of ``shells`` and ``submodels`` (and metrocloud's concepts).

    Empty parts are left out, as the AAS schemas ask (no empty arrays).
    """
    shell_list, submodel_list = list(shells), list(submodels)
    return aas.Environment(
        asset_administration_shells=shell_list or None,
        submodels=submodel_list or None,
        concept_descriptions=concept_descriptions() if with_concepts else None,
    )
