"""Submodel reads made cheaper, answers unchanged.

Two shortcuts of a submodel read are checked against the way they replace:

- an element is looked up on the rendered submodel object and only it is serialized
  (:func:`~metrocloud.api.aas._render.find_submodel_element`), not the whole submodel
  serialized and searched (:func:`~metrocloud.api.aas._render.find_element`): the same
  element, the same JSON, the same errors, for every idShortPath of every submodel;
- the view loader reads the few certificates and parties of one submodel by primary key
  (:func:`metrocloud.store.point.get_row`), not by one ``IN`` query: the same views, the
  same rendered submodels.
"""

from __future__ import annotations

from typing import Any

import pytest
from aas_core3 import types as aas

from metrocloud.api.aas._render import find_element, find_submodel_element, jsonable, paths
from metrocloud.domain.errors import MetrocloudError
from metrocloud.services import aas as svc
from metrocloud.twin import INSTRUMENT_SUBMODELS, TYPE_SUBMODELS, views
from tests.aas_api.conftest import Pop


def _every_submodel(pop: Pop) -> list[aas.Submodel]:
    """Every submodel of the population, read as an authority (who reads them all)."""
    actor = pop.world.auth1.actor
    out = []
    for record in (pop.cert_a["id"], pop.cert_b["id"], *pop.a, *pop.b):
        names = TYPE_SUBMODELS if record.startswith("cer-") else INSTRUMENT_SUBMODELS
        for name in names:
            out.append(svc.get_submodel(pop.node, actor, record, name, base_url="http://node"))
    return out


def _outcome(find: Any, *args: Any) -> Any:
    try:
        return jsonable(find(*args)) if find is find_submodel_element else find(*args)[0]
    except MetrocloudError as exc:
        return type(exc), str(exc)


def test_the_element_look_up_on_the_object_equals_the_one_on_its_json(pop: Pop) -> None:
    looked_up = 0
    for submodel in _every_submodel(pop):
        data = jsonable(submodel)
        every = paths(data)
        misses = [
            "NoSuchElement",
            f"{every[0]}.NoSuchElement",
            f"{every[0]}[0]",  # an index on what is not a list
            f"{every[-1]}[999]",
            "Not..APath",  # not an idShortPath: 400
            "[0]",
        ]
        lists = [p for p in every if p.endswith("]")]
        misses += [p[: p.rindex("[")] + "[99]" for p in lists]
        misses = [m for m in misses if m not in every]
        for path in every + misses:
            ours = _outcome(find_submodel_element, submodel, path)
            theirs = _outcome(find_element, data, path)
            assert ours == theirs, (submodel.id, path)
            looked_up += 1
        assert all(isinstance(_outcome(find_element, data, p), dict) for p in every)
        assert not any(isinstance(_outcome(find_element, data, p), dict) for p in misses)
    assert looked_up > 300  # nested collections and lists among them (see conftest)


@pytest.mark.parametrize("point_reads", [0, 1, 100])
def test_point_reads_and_one_batch_query_load_the_same_views(
    pop: Pop, monkeypatch: pytest.MonkeyPatch, point_reads: int
) -> None:
    default = [jsonable(s) for s in _every_submodel(pop)]
    monkeypatch.setattr(views, "_POINT_READS", point_reads)  # 0: every load an IN query
    assert [jsonable(s) for s in _every_submodel(pop)] == default


def test_a_public_instrument_submodel_costs_no_statement_through_the_sql_layer(pop: Pop) -> None:
    """The instrument, its certificate and its parties by primary key on the driver: the
    statements SQLAlchemy Core builds, caches and runs are the cost these reads avoid."""
    a0 = pop.a[0]

    def selects() -> list[str]:
        return [s for s in pop.statements if s.lstrip().upper().startswith("SELECT")]

    pop.statements.clear()
    svc.get_submodel(pop.node, pop.world.auth1.actor, a0, "Nameplate")
    assert selects() == []
    svc.get_submodel(pop.node, pop.world.auth1.actor, a0, "Conformity")
    assert len(selects()) == 1 and "FROM declaration_instruments" in selects()[0]
