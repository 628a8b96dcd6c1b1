"""Errors on the AAS API are AAS ``Result`` bodies; writes are refused, naming /api/v1."""

from __future__ import annotations

from aas_test_engines.test_cases.v3_0.interfaces import shared
from aas_test_engines.test_cases.v3_0.parse import parse_and_check_json

from .conftest import AAS, SHELL, SUBMODEL, Pop, b64


def assert_result(body: object, code: str | None = None) -> str:
    """``body`` is an AAS Part 2 ``Result`` the test engine accepts; returns its text."""
    result, _ = parse_and_check_json(shared.r_error_result, body)
    assert result.ok(), "\n".join(result.to_lines())
    assert isinstance(body, dict) and set(body) == {"messages"}
    message = body["messages"][0]
    assert message["messageType"] == "Error" and message["timestamp"].endswith("Z")
    if code is not None:
        assert message["code"] == code
    return str(message["text"])


BAD_IDS = [
    ("invalid-base64url=====", "is not base64url"),  # the test engine's own bad value
    ("ab+c", "is not base64url"),  # standard base64, not base64url
    ("_w", "not UTF-8"),
]


def test_bad_base64_is_a_400_that_says_so(pop: Pop) -> None:
    for value, why in BAD_IDS:
        for path in (f"/shells/{value}", f"/submodels/{value}", f"/shells/{value}/$reference"):
            r = pop.get(path)
            assert r.status_code == 400, (path, r.text)
            text = assert_result(r.json(), "bad-identifier")
            assert why in text and "IDTA-01002" in text


def test_bad_query_values_are_400(pop: Pop) -> None:
    for params in (
        {"limit": -1},
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "not-a-cursor"},
        {"assetIds": "invalid-base64url====="},
        {"assetIds": b64("not json")},
        {"assetIds": b64('{"name": 1}')},
    ):
        r = pop.get("/shells", params=params)
        assert r.status_code == 400, (params, r.text)
        assert_result(r.json())
    sm = b64(f"{SUBMODEL}{pop.a[0]}/Nameplate")
    for params in ({"level": "#####"}, {"extent": "#################"}):
        r = pop.get(f"/submodels/{sm}", params=params)
        assert r.status_code == 400
        assert_result(r.json(), "invalid-input")
    r = pop.get("/serialization", params={"includeConceptDescriptions": "invalid-bool"})
    assert r.status_code == 400
    # a cursor of the shell list is not one of the submodel list
    cursor = pop.ok("/shells", params={"limit": 1})["paging_metadata"]["cursor"]
    assert pop.get("/submodels", params={"cursor": cursor}).status_code == 400


def test_ids_that_name_nothing_are_404(pop: Pop) -> None:
    for path in (
        f"/shells/{b64('urn:example:other')}",
        f"/shells/{b64(SHELL + 'ins-DE-01ARZ3NDEKTSV4RRFFQ69G5FAV')}",
        f"/shells/{b64(SHELL + 'cer-DE-01ARZ3NDEKTSV4RRFFQ69G5FAV')}",
        f"/shells/{b64(SUBMODEL + pop.a[0] + '/Nameplate')}",
        f"/submodels/{b64(SUBMODEL + pop.a[0] + '/Other')}",
        f"/submodels/{b64(SUBMODEL + pop.cert_a['id'] + '/LifeCycle')}",
        "/no/such/route",
    ):
        r = pop.get(path)
        assert r.status_code == 404, (path, r.text)
        assert_result(r.json())


WRITES = [
    ("/shells", "POST /api/v1/instruments"),
    ("/shells/{shell}", "/api/v1/instruments/{instrument_id}/events"),
    ("/submodels/{sm}", "POST /api/v1/declarations"),
    ("/submodels/{sm}/submodel-elements/State", "/api/v1/instruments"),
    ("/shell-descriptors", "POST /api/v1/certificates"),
    ("/upload", "POST /api/v1/instruments"),
]


def test_writes_are_refused_naming_the_api_to_use(pop: Pop) -> None:
    for path, names in WRITES:
        url = AAS + path.format(
            shell=b64(SHELL + pop.a[0]), sm=b64(SUBMODEL + pop.a[0] + "/LifeCycle")
        )
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = pop.client.request(method, url, headers=pop.world.man1.headers, json={"id": "x"})
            assert r.status_code == 405, (method, url, r.text)
            assert r.headers["allow"] == "GET"
            text = assert_result(r.json(), "read-only")
            assert "read-only" in text and names in text, text
            assert pop.client.request(method, url, json={}).status_code == 401


def test_api_v1_keeps_problem_json(pop: Pop) -> None:
    r = pop.client.get(
        "/api/v1/instruments/ins-DE-01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=pop.world.auth1.headers
    )
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/not-found")
    r = pop.client.get("/api/v1/instruments", params={"limit": 0}, headers=pop.world.auth1.headers)
    assert r.status_code == 422 and r.json()["status"] == 422
