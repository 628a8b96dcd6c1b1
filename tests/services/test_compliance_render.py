"""Rendering a fixed report (no database): the same bytes in every process, and the page's
structure against a golden outline (tests/fixtures/compliance/*.json).

Regenerate the outlines after an intended change of the page with
``METROCLOUD_REGEN_GOLDEN=1 pytest tests/services/test_compliance_render.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from metrocloud.services import compliance as svc
from metrocloud.services._compliance.model import (
    CertificateLine,
    CertificatePoint,
    CriterionCount,
    CriterionResult,
    Evidence,
    FailingInstrument,
    FailingPage,
    FleetReport,
    FleetSubject,
    InstrumentInfo,
    InstrumentReport,
    MonthCount,
    NonComplianceMonth,
    TimelineEvent,
)
from metrocloud.services.compliance import Criterion, Outcome

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "compliance"
C = Criterion
EVIL = "<script>alert(1)</script> & $x$"


def sample_fleet() -> FleetReport:
    failing = tuple(
        FailingInstrument(
            id=f"ins-DE-01M8PG0000000000000000{n:04d}",
            serial=EVIL if n == 0 else f"SN-{n:04d}",
            certificate_id="cer-DE-01M8PG00000000000000000001",
            state="in_service",
            failed=(C.VERIFICATION_CURRENT,)
            if n % 2
            else (C.SOFTWARE_APPROVED, C.CERTIFICATE_VALID),
        )
        for n in range(12)
    )
    return FleetReport(
        kind="manufacturer",
        as_of=date(2026, 11, 24),
        generated_at="2026-11-24T10:00:00.000Z",
        node_id="node-DE-0123456789abcdef",
        subject=FleetSubject(id="pty-DE-01M8PG00000000000000000009", name=EVIL, country="DE"),
        instruments=1200,
        passing=1188,
        verdict=Outcome.FAIL,
        counts=tuple(
            CriterionCount(criterion=c, passed=1190 - k, failed=k + 1, not_applicable=9)
            for k, c in enumerate(Criterion)
        ),
        failing=FailingPage(total=40, items=failing, next_cursor="WyJpbnMiXQ"),
        certificates=(
            CertificateLine(
                id="cer-DE-01M8PG00000000000000000001",
                number="DE-0102-21-0001",
                model=EVIL,
                category="MI-003",
                notified_body_id="pty-DE-01M8PG00000000000000000003",
                status="valid",
                valid_until=date(2031, 5, 1),
                leaf_index=7,
                instruments=1200,
                failing=40,
            ),
        ),
        verification_due=tuple(
            MonthCount(
                month=f"20{26 + k // 12}-{k % 12 + 1:02d}", count=10 + k, overdue=k if k < 11 else 0
            )
            for k in range(30)
        ),
        never_verified=3,
        non_compliances=tuple(
            NonComplianceMonth(month=f"2026-{m:02d}", found=m % 3, closed=m % 2, open=m % 4)
            for m in range(1, 12)
        ),
        certificate_history=(
            CertificatePoint(
                at="2021-05-01",
                certificate_id="cer-DE-01M8PG00000000000000000001",
                number="DE-0102-21-0001",
                action="issue",
                status="valid",
                leaf_index=7,
            ),
            CertificatePoint(
                at="2025-02-03",
                certificate_id="cer-DE-01M8PG00000000000000000001",
                number="DE-0102-21-0001",
                action="suspend",
                status="suspended",
                leaf_index=90,
            ),
            CertificatePoint(
                at="2025-06-03",
                certificate_id="cer-DE-01M8PG00000000000000000001",
                number="DE-0102-21-0001",
                action="reinstate",
                status="valid",
                leaf_index=120,
            ),
        ),
    )


def sample_instrument() -> InstrumentReport:
    results = tuple(
        CriterionResult(
            criterion=c,
            outcome=Outcome.FAIL if c is C.NO_OPEN_NON_COMPLIANCE else Outcome.PASS,
            summary=f"finding on {c.value}: {EVIL}",
            evidence=(
                Evidence(
                    kind="event",
                    id="evt-DE-1",
                    at="2026-01-01T00:00:00.000Z",
                    leaf_index=3,
                    detail=EVIL,
                ),
            ),
        )
        for c in Criterion
    )
    return InstrumentReport(
        as_of=date(2026, 11, 24),
        generated_at="2026-11-24T10:00:00.000Z",
        node_id="node-DE-0123456789abcdef",
        instrument=InstrumentInfo(
            id="ins-DE-01M8PG00000000000000000001",
            serial=EVIL,
            manufacturer_id="pty-DE-01M8PG00000000000000000009",
            manufacturer_name="Hansa <b>GmbH</b>",
            certificate_id="cer-DE-01M8PG00000000000000000001",
            certificate_number="DE-0102-21-0001",
            model="EM-340",
            category="MI-003",
            state="in_service",
            operator_id=None,
            region="DE21",
            verified_until=date(2027, 1, 1),
            software={"name": "FW", "version": "1.0.0"},
            registered_leaf=10,
            leaf_index=30,
        ),
        criteria=results,
        verdict=Outcome.FAIL,
        events=tuple(
            TimelineEvent(
                seq=k,
                id=f"evt-DE-{k}",
                kind=kind,
                occurred_at=f"202{k}-03-01T00:00:00.000Z",
                leaf_index=10 + k,
                verified_until="2027-01-01" if kind == "verified" else None,
            )
            for k, kind in enumerate(
                ["placed_on_market", "put_into_service", "verified", "non_compliance_found"]
            )
        ),
        events_total=4,
    )


SAMPLES = {"fleet": sample_fleet, "instrument": sample_instrument}


def digests(name: str) -> dict[str, str]:
    report = SAMPLES[name]()
    return {fmt: hashlib.sha256(svc.render(report, fmt)).hexdigest() for fmt in svc.FORMATS}


def _outline(html: str) -> dict[str, Any]:
    """What a reader sees of the page's structure, without the charts' drawing."""
    root = ET.fromstring(html.split("\n", 1)[1])
    x = "{http://www.w3.org/1999/xhtml}"
    text = "".join

    return {
        "title": text(root.find(f"{x}head/{x}title").itertext()),  # type: ignore[union-attr]
        "h2": [text(h.itertext()) for h in root.iter(f"{x}h2")],
        "tables": [
            {
                "head": [text(th.itertext()) for th in t.iter(f"{x}th")],
                "rows": len(list(t.iter(f"{x}tr"))) - 1,
            }
            for t in root.iter(f"{x}table")
        ],
        "figures": [
            {
                "id": f.get("id"),
                "svg_title": text(f.find(".//{http://www.w3.org/2000/svg}title").itertext()),  # type: ignore[union-attr]
                "caption": text(f.find(f"{x}figcaption").itertext()),  # type: ignore[union-attr]
            }
            for f in root.iter(f"{x}figure")
        ],
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_html_outline_matches_the_golden_file(name: str) -> None:
    outline = _outline(svc.render_html(SAMPLES[name]()))
    path = GOLDEN / f"{name}_outline.json"
    if os.environ.get("METROCLOUD_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outline, indent=2, ensure_ascii=False) + "\n")
    assert outline == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_another_process_renders_the_same_bytes(name: str) -> None:
    """The SVG ids and the PDF carry no per-process salt, date or random id."""
    code = (
        "import json; from tests.services.test_compliance_render import digests; "
        f"print(json.dumps(digests({name!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == digests(name)
