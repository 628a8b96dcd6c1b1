"""Keyset paging across the two tables: every shell and submodel exactly once, no OFFSET."""

from __future__ import annotations

import pytest

from .conftest import SHELL, SUBMODEL, Pop, register


@pytest.fixture
def many(pop: Pop) -> Pop:
    w = pop.world
    cert_c = w.certificate(w.nb1, w.man2)
    pop.b += register(w, w.man2, cert_c, [f"C{i:05d}" for i in range(40)])
    pop.cert_c = cert_c  # type: ignore[attr-defined]
    return pop


def test_every_shell_exactly_once(many: Pop) -> None:
    types = sorted([many.cert_a["id"], many.cert_b["id"], many.cert_c["id"]])  # type: ignore[attr-defined]
    want = [SHELL + r for r in [*types, *sorted(many.a + many.b)]]
    for limit in (1, 3, 7, 100):  # pages that end inside the types, on the seam, after
        assert [s["id"] for s in many.walk("/shells", limit=limit)] == want, limit
        refs = [r["keys"][0]["value"] for r in many.walk("/shells/$reference", limit=limit)]
        assert refs == want, limit


def test_a_party_pages_through_what_it_may_read_only(many: Pop) -> None:
    got = [s["id"].removeprefix(SHELL) for s in many.walk("/shells", "man1", limit=2)]
    assert got[3:] == sorted(many.a)
    assert len(got) == len(set(got)) == 3 + 3


def test_every_submodel_exactly_once(many: Pop) -> None:
    full = [s["id"].removeprefix(SUBMODEL) for s in many.walk("/submodels", limit=50)]
    assert len(full) == len(set(full)) == 3 * 3 + (3 + 2 + 40) * 6
    for limit in (4, 13):
        refs = many.walk("/submodels/$reference", limit=limit)
        assert [r["keys"][0]["value"].removeprefix(SUBMODEL) for r in refs] == full, limit


def test_submodel_pages_as_a_party_with_partial_rights(many: Pop) -> None:
    refs = many.walk("/submodels/$reference", "man1", limit=4)
    got = [r["keys"][0]["value"].removeprefix(SUBMODEL) for r in refs]
    assert len(got) == len(set(got)) == 3 * 3 + 3 * 6 + 42 * 2
    assert got == sorted(got, key=lambda s: (s.split("/")[0], 0))  # record order


def test_pages_are_keyset_queries_never_offset(many: Pop) -> None:
    many.statements.clear()
    many.parameters.clear()
    many.walk("/shells", limit=5)
    many.walk("/submodels", limit=9)
    assert many.statements
    for sql, params in zip(many.statements, many.parameters, strict=True):
        if "OFFSET" in sql.upper():  # SQLite's dialect writes LIMIT ? OFFSET ? with 0
            assert many.node.db.is_sqlite and sql.rstrip().endswith("OFFSET ?"), sql
            assert list(params)[-1] == 0, (sql, params)


def test_a_shell_page_costs_a_fixed_number_of_queries(many: Pop) -> None:
    """Whatever the page: the token, one keyset query per table touched, the access log."""
    first = many.ok("/shells", params={"limit": 10})
    costs = []
    cursor = first["paging_metadata"]["cursor"]
    for _ in range(3):
        many.statements.clear()
        many.threads.clear()
        page = many.ok("/shells", params={"limit": 10, "cursor": cursor})
        asked = [
            s
            for s, t in zip(many.statements, many.threads, strict=False)
            if not t.startswith("aas-read-ahead")  # the next pages' rows, read ahead
        ]
        costs.append(len([s for s in asked if s.lstrip().upper().startswith("SELECT")]))
        cursor = page["paging_metadata"].get("cursor")
    assert max(costs) <= 3, costs  # token, instruments page, (certificates only on the seam)


@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)
def test_an_instrument_page_is_a_primary_key_range_scan(many: Pop) -> None:
    """The query plan of a late page seeks the primary key: it costs what the first costs."""
    cursor = many.ok("/shells", params={"limit": 20})["paging_metadata"]["cursor"]
    many.statements.clear()
    many.ok("/shells", params={"limit": 20, "cursor": cursor})
    query = next(s for s in many.statements if "FROM instruments" in s and "LIMIT" in s)
    with many.node.db.read() as conn:
        params = {str(i): "ins-DE-0" for i in range(query.count("?"))}
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + query, tuple(params.values())).all()
    detail = " ".join(str(r[-1]) for r in plan)
    assert "SEARCH instruments USING PRIMARY KEY (id>?)" in detail, detail
    assert "TEMP B-TREE" not in detail, detail
