"""``to_json_bytes`` writes what the standard library would write for AAS JSON trees."""

from __future__ import annotations

import json
from typing import Any

from aas_core3 import jsonization
from aas_core3 import types as aas
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.twin import serialize
from metrocloud.twin.serialize import to_json_bytes


def _stdlib(tree: Any) -> bytes:
    return json.dumps(tree, ensure_ascii=False, separators=(",", ":")).encode()


# the values aas-core3.0's to_jsonable produces: strings (any Unicode but lone surrogates),
# booleans, integers, lists and objects with string keys
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)))
_TREES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=30,
)


@given(_TREES)
def test_the_fast_writer_equals_the_standard_library(tree: Any) -> None:
    import orjson

    assert orjson.dumps(tree) == _stdlib(tree)


@given(_TEXT, _TEXT)
def test_rendered_elements_serialize_as_the_standard_library_would(
    id_short: str, value: str
) -> None:
    prop = aas.Property(
        value_type=aas.DataTypeDefXSD.STRING, id_short="Name" + str(len(id_short)), value=value
    )
    prop.description = [aas.LangStringTextType("en", id_short or "-")]
    assert to_json_bytes(prop) == _stdlib(jsonization.to_jsonable(prop))


def test_an_integer_beyond_64_bits_falls_back_to_the_standard_library(monkeypatch: Any) -> None:
    huge = {"n": 2**70, "text": "Zähler"}
    monkeypatch.setattr(serialize.jsonization, "to_jsonable", lambda _obj: huge)
    assert to_json_bytes(aas.Key(aas.KeyTypes.SUBMODEL, "x")) == _stdlib(huge)
