"""The administrative shell: registry <-> Asset Administration Shell (AAS v3.0).

Every instrument is a shell (assetKind Instance) and every instrument type (its EU-type
examination certificate) is a shell (assetKind Type). The twin is a *view* of the registry
and the ledger, computed on request from the registry rows; it is never a second store.

The model, its verification and its JSON / XML serialization come from ``aas-core3.0``
(``import aas_core3``); AASX packaging from ``basyx-python-sdk``. Nothing of the metamodel
or its serializations is hand-written here.
"""

from metrocloud.twin.concepts import CONCEPTS, Concept, concept_descriptions, semantic_id
from metrocloud.twin.ids import (
    INSTRUMENT_SUBMODELS,
    PUBLIC_SUBMODELS,
    TYPE_SUBMODELS,
    asset_id,
    parse_shell_id,
    parse_submodel_id,
    shell_id,
    submodel_id,
)
from metrocloud.twin.mapping import (
    MEASUREMENTS_PATH,
    environment,
    instrument_submodel,
    instrument_submodels,
    type_submodel,
    type_submodels,
)
from metrocloud.twin.serialize import (
    AasError,
    AasFormat,
    environment_json,
    environment_xml,
    to_json_bytes,
    verify,
    write_aasx,
)
from metrocloud.twin.shells import (
    instrument_shell,
    instrument_shell_json,
    memo_misses,
    type_shell,
    type_shell_json,
)
from metrocloud.twin.stream import AasxStream, EnvironmentStream
from metrocloud.twin.views import (
    SUBMODEL_PARTS,
    InstrumentView,
    TypeView,
    ViewLoader,
    load_instrument,
    load_type,
)

__all__ = [
    "CONCEPTS",
    "INSTRUMENT_SUBMODELS",
    "MEASUREMENTS_PATH",
    "PUBLIC_SUBMODELS",
    "SUBMODEL_PARTS",
    "TYPE_SUBMODELS",
    "AasError",
    "AasFormat",
    "AasxStream",
    "Concept",
    "EnvironmentStream",
    "InstrumentView",
    "TypeView",
    "ViewLoader",
    "asset_id",
    "concept_descriptions",
    "environment",
    "environment_json",
    "environment_xml",
    "instrument_shell",
    "instrument_shell_json",
    "instrument_submodel",
    "instrument_submodels",
    "load_instrument",
    "load_type",
    "memo_misses",
    "parse_shell_id",
    "parse_submodel_id",
    "semantic_id",
    "shell_id",
    "submodel_id",
    "to_json_bytes",
    "type_shell",
    "type_shell_json",
    "type_submodel",
    "type_submodels",
    "verify",
    "write_aasx",
]
