"""metrocloud.twin exports exactly its public API; the AAS HTTP API is written against it."""

from __future__ import annotations

import inspect

from metrocloud import twin

PUBLIC = {
    # views of the registry
    "InstrumentView",
    "TypeView",
    "ViewLoader",
    "load_instrument",
    "load_type",
    # the mapping
    "SUBMODEL_PARTS",
    "instrument_shell",
    "instrument_shell_json",
    "type_shell",
    "type_shell_json",
    "memo_misses",  # how many shells were rendered afresh (the listing read-ahead's hint)
    "instrument_submodel",
    "instrument_submodels",
    "type_submodel",
    "type_submodels",
    "environment",
    "MEASUREMENTS_PATH",
    # concepts
    "CONCEPTS",
    "Concept",
    "concept_descriptions",
    "semantic_id",
    # identifiers
    "INSTRUMENT_SUBMODELS",
    "TYPE_SUBMODELS",
    "PUBLIC_SUBMODELS",
    "asset_id",
    "shell_id",
    "submodel_id",
    "parse_shell_id",
    "parse_submodel_id",
    # serialization and verification
    "AasError",
    "AasFormat",
    "AasxStream",
    "EnvironmentStream",
    "environment_json",
    "environment_xml",
    "to_json_bytes",
    "verify",
    "write_aasx",
}


def test_twin_exports_exactly_its_public_api() -> None:
    assert set(twin.__all__) == PUBLIC
    for name in twin.__all__:
        assert getattr(twin, name) is not None


def test_the_signatures_the_http_api_relies_on() -> None:
    def params(fn: object) -> list[str]:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]

    assert params(twin.load_instrument) == ["conn", "instrument_id"]
    assert params(twin.load_type) == ["conn", "certificate_id"]
    assert params(twin.memo_misses) == []
    assert params(twin.instrument_shell) == ["row"]
    assert params(twin.type_shell) == ["row"]
    assert params(twin.instrument_submodel) == ["view", "name", "base_url"]
    assert params(twin.type_submodel) == ["view", "name"]
    assert params(twin.concept_descriptions) == []
    assert params(twin.environment) == ["shells", "submodels", "with_concepts"]
    assert params(twin.to_json_bytes) == ["obj"]
    assert params(twin.verify) == ["obj"]
