"""GET /api/v1/compliance/...: one report, three formats by Accept, 406 for any other."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from tests.conftest import World
from tests.services._compliance_registry import EXPECTED, Registry, build

BASE = "/api/v1/compliance"


@pytest.fixture
def reg(world: World) -> Registry:
    return build(world)


def _urls(reg: Registry) -> dict[str, str]:
    return {
        "instrument": f"{BASE}/instruments/{reg.ids['NONC-1']}",
        "manufacturer": f"{BASE}/manufacturers/{reg.world.man1.id}",
        "type": f"{BASE}/types/{reg.cert_a['id']}",
    }


def test_json_is_the_default_and_follows_the_schema(reg: Registry, client: TestClient) -> None:
    h = reg.world.auth1.headers
    urls = _urls(reg)
    r = client.get(urls["instrument"], headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["kind"] == "instrument" and doc["verdict"] == "fail"
    assert [c["outcome"] for c in doc["criteria"]] == ["pass"] * 4 + ["fail"]
    assert doc["instrument"]["serial"] == "NONC-1"

    r = client.get(urls["manufacturer"], headers={**h, "Accept": "application/json"})
    doc = r.json()
    assert (doc["instruments"], doc["failing"]["total"]) == (len(EXPECTED), 6)
    assert {f["serial"] for f in doc["failing"]["items"]} == {s for s, e in EXPECTED.items() if e}
    everything = [f["id"] for f in doc["failing"]["items"]]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = client.get(urls["manufacturer"], params=params, headers=h).json()["failing"]
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(everything)

    doc = client.get(urls["type"], headers={**h, "Accept": "*/*"}).json()
    assert doc["kind"] == "type" and doc["subject"]["number"] == "DE-A-0001"


def test_html_and_pdf_by_accept(reg: Registry, client: TestClient) -> None:
    h = reg.world.auth1.headers
    for kind, url in _urls(reg).items():
        r = client.get(url, headers={**h, "Accept": "text/html"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        root = ET.fromstring(r.text.split("\n", 1)[1])
        svgs = list(root.iter("{http://www.w3.org/2000/svg}svg"))
        assert len(svgs) == (2 if kind == "instrument" else 3)

        r = client.get(url, headers={**h, "Accept": "application/pdf"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"].startswith('inline; filename="compliance-')
        assert len(PdfReader(io.BytesIO(r.content)).pages) >= 2

    # preferences by q-value; the first of equals wins
    url = _urls(reg)["instrument"]
    accept = "application/json;q=0.5, application/pdf;q=0.9, text/html;q=0.1"
    assert client.get(url, headers={**h, "Accept": accept}).content.startswith(b"%PDF-")
    r = client.get(url, headers={**h, "Accept": "text/html, application/json"})
    assert r.headers["content-type"].startswith("text/html")
    r = client.get(url, headers={**h, "Accept": "image/png, text/html;q=0"})
    assert r.status_code == 406


@pytest.mark.parametrize("accept", ["image/png", "text/csv", "application/xml", "text/html;q=0"])
def test_other_formats_are_406_problems(reg: Registry, client: TestClient, accept: str) -> None:
    for url in _urls(reg).values():
        r = client.get(url, headers={**reg.world.auth1.headers, "Accept": accept})
        assert r.status_code == 406, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["type"].endswith("/not-acceptable") and "text/html" in body["detail"]


def test_refusals_are_problems_and_come_before_406(reg: Registry, client: TestClient) -> None:
    w = reg.world
    urls = _urls(reg)
    r = client.get(urls["instrument"], headers={**w.op1.headers, "Accept": "image/png"})
    assert r.status_code == 403  # the operator may not read reports, whatever it accepts
    r = client.get(urls["manufacturer"], headers={**w.man2.headers, "Accept": "text/html"})
    assert r.status_code == 403 and "compliance report" in r.json()["detail"]
    r = client.get(f"{BASE}/instruments/ins-DE-00000000000000000000000000", headers=w.auth1.headers)
    assert r.status_code == 404
    r = client.get(urls["manufacturer"], params={"limit": 0}, headers=w.auth1.headers)
    assert r.status_code == 422
    r = client.get(urls["manufacturer"], params={"cursor": "!!"}, headers=w.auth1.headers)
    assert r.status_code == 422 and "cursor" in r.json()["detail"]
