"""A synthetic AAS environment shaped like metrocloud's export, for testing the bench itself.

Each instrument shell references six submodels of a few properties each, as the twin renders
them (Nameplate, Conformity, SoftwareIdentification, Verification, LifeCycle, TimeSeries).
Used by ``bench/aas.py --synthetic`` to run the BaSyx side alone; the real benchmark serves
the node's own ``metrocloud aas export --all --format json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import aas_core3.jsonization as aas_json
import aas_core3.types as aas

__all__ = ["SUBMODELS", "write_environment"]

NS = "https://metrocloud.eu/ids/"
SUBMODELS = (
    "Nameplate",
    "Conformity",
    "SoftwareIdentification",
    "Verification",
    "LifeCycle",
    "TimeSeries",
)


def _ref(kind: aas.KeyTypes, value: str) -> aas.Reference:
    return aas.Reference(
        type=aas.ReferenceTypes.MODEL_REFERENCE, keys=[aas.Key(type=kind, value=value)]
    )


def _sem(value: str) -> aas.Reference:
    return aas.Reference(
        type=aas.ReferenceTypes.EXTERNAL_REFERENCE,
        keys=[aas.Key(type=aas.KeyTypes.GLOBAL_REFERENCE, value=value)],
    )


def _prop(id_short: str, value: str) -> aas.Property:
    return aas.Property(
        id_short=id_short,
        value_type=aas.DataTypeDefXSD.STRING,
        value=value,
        semantic_id=_sem(f"https://metrocloud.eu/semantics/1/0/{id_short}"),
    )


def _pair(i: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    rid = f"ins-DE-{i:026d}"
    sm_ids = [f"{NS}sm/{rid}/{name}" for name in SUBMODELS]
    shell = aas.AssetAdministrationShell(
        id=f"{NS}aas/{rid}",
        id_short=f"Instrument_{i}",
        asset_information=aas.AssetInformation(
            asset_kind=aas.AssetKind.INSTANCE, global_asset_id=f"{NS}asset/{rid}"
        ),
        submodels=[_ref(aas.KeyTypes.SUBMODEL, s) for s in sm_ids],
    )
    submodels = [
        aas.Submodel(
            id=sm_id,
            id_short=name,
            kind=aas.ModellingKind.INSTANCE,
            semantic_id=_sem(f"https://metrocloud.eu/semantics/1/0/{name}"),
            submodel_elements=[
                _prop("SerialNumber", f"B{i:09d}"),
                _prop("ManufacturerName", "Elektro-Messtechnik Hansa GmbH"),
                _prop("Category", "MI-003"),
                _prop("AccuracyClass", "B"),
                _prop("Region", "DE21"),
            ],
        )
        for name, sm_id in zip(SUBMODELS, sm_ids, strict=True)
    ]
    return aas_json.to_jsonable(shell), [aas_json.to_jsonable(s) for s in submodels]


def write_environment(path: Path, n_shells: int) -> list[str]:
    """Write an environment of ``n_shells`` instrument shells to ``path``; their ids."""
    shells: list[dict[str, object]] = []
    submodels: list[dict[str, object]] = []
    for i in range(n_shells):
        shell, sms = _pair(i)
        shells.append(shell)
        submodels.extend(sms)
    path.write_text(json.dumps({"assetAdministrationShells": shells, "submodels": submodels}))
    return [str(s["id"]) for s in shells]
