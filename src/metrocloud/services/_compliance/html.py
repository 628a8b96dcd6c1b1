"""A report as one self-contained HTML page.

Inline CSS, charts as inline SVG, no script, no external request (a Content-Security-Policy
meta element forbids both); every text from the registry is escaped. The page is also
well-formed XML (polyglot markup), so a test can parse it with an XML parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from metrocloud.services._compliance.charts import charts, rendering, svg
from metrocloud.services._compliance.model import (
    CRITERIA,
    CSP,
    CriterionResult,
    Evidence,
    FleetReport,
    InstrumentReport,
    Outcome,
    Report,
)

__all__ = ["render"]

_TITLES = {c.criterion: c.title for c in CRITERIA}
_RULES = {c.criterion: c.rule for c in CRITERIA}
_QUESTIONS = {c.criterion: c.question for c in CRITERIA}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
  max-width: 70rem; padding: 0 1rem; color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #eee;
  vertical-align: top; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85em;
  overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 0.8rem;
  color: white; font-weight: 600; font-size: 0.85em; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
.not_applicable { background: #9e9e9e; }
.verdict { font-size: 1.1rem; margin: 0.5rem 0 1rem 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: 0.85rem; }
figure svg { max-width: 100%; height: auto; }
ul.evidence { margin: 0; padding-left: 1.1rem; font-size: 0.85rem; color: #333; }
footer { margin-top: 3rem; color: #777; font-size: 0.8rem; }
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _badge(outcome: Outcome) -> str:
    return f'<span class="badge {outcome.value}">{_e(outcome.value.replace("_", " "))}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], num: Sequence[int] = ()) -> str:
    """A table; cells are HTML already (callers escape)."""

    def cls(i: int) -> str:
        return ' class="num"' if i in num else ""

    ths = "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<dl class="facts">{items}</dl>'


def _evidence(items: Sequence[Evidence]) -> str:
    if not items:
        return ""
    lis = []
    for ev in items:
        parts = [f'{_e(ev.kind)} <span class="id">{_e(ev.id)}</span>']
        if ev.at:
            parts.append(_e(ev.at))
        if ev.leaf_index is not None:
            parts.append(f"ledger leaf {ev.leaf_index}")
        if ev.detail:
            parts.append(_e(ev.detail))
        lis.append("<li>" + ", ".join(parts) + "</li>")
    return f'<ul class="evidence">{"".join(lis)}</ul>'


def _criteria_rows(criteria: Sequence[CriterionResult]) -> str:
    return _table(
        ["Criterion", "Outcome", "Finding and evidence", "Rule"],
        (
            [
                f"<strong>{_e(_TITLES[c.criterion])}</strong><br/>"
                f"<code>{_e(c.criterion.value)}</code>",
                _badge(c.outcome),
                f"{_e(c.summary)}{_evidence(c.evidence)}",
                _e(_RULES[c.criterion]),
            ]
            for c in criteria
        ),
    )


def _charts(report: Report) -> str:
    figures = []
    with rendering():
        for chart in charts(report):
            figures.append(
                f'<figure id="fig-{_e(chart.key)}">{svg(chart)}'
                f"<figcaption>{_e(chart.caption)}</figcaption></figure>"
            )
    return "".join(figures)


def _instrument_body(r: InstrumentReport) -> str:
    i = r.instrument
    sw = i.software or {}
    facts = _facts(
        [
            ("Instrument", f'<span class="id">{_e(i.id)}</span>'),
            ("Serial number", f'<span class="id">{_e(i.serial)}</span>'),
            (
                "Manufacturer",
                f'{_e(i.manufacturer_name)} (<span class="id">{_e(i.manufacturer_id)}</span>)',
            ),
            (
                "Type",
                f"{_e(i.model)}, certificate {_e(i.certificate_number)} "
                f'(<span class="id">{_e(i.certificate_id)}</span>)',
            ),
            ("Category", _e(i.category)),
            ("State", _e(i.state)),
            ("Operator", _e(i.operator_id or "none")),
            ("Region", _e(i.region or "unknown")),
            ("Verified until", _e(i.verified_until.isoformat() if i.verified_until else "none")),
            ("Software", _e(f"{sw.get('name')} {sw.get('version')}") if sw else "none"),
            ("Registered", f"ledger leaf {i.registered_leaf}; last change leaf {i.leaf_index}"),
        ]
    )
    events = _table(
        ["#", "Event", "Kind", "Occurred", "Ledger leaf"],
        (
            [
                str(e.seq),
                f'<span class="id">{_e(e.id)}</span>',
                _e(e.kind),
                _e(e.occurred_at),
                str(e.leaf_index),
            ]
            for e in r.events
        ),
        num=(0, 4),
    )
    shown = (
        f"<p>The newest {len(r.events)} of {r.events_total} events.</p>"
        if r.events_total > len(r.events)
        else ""
    )
    return (
        f"<section><h2>Instrument</h2>{facts}</section>"
        f"<section><h2>Criteria</h2>{_criteria_rows(r.criteria)}</section>"
        f"<section><h2>Charts</h2>{_charts(r)}</section>"
        f"<section><h2>Life-cycle events</h2>{shown}{events}</section>"
    )


def _subject_facts(r: FleetReport) -> str:
    s = r.subject
    if r.kind == "manufacturer":
        pairs = [
            ("Manufacturer", f'{_e(s.name)} (<span class="id">{_e(s.id)}</span>)'),
            ("Country", _e(s.country)),
        ]
    else:
        pairs = [
            ("Type", _e(s.name)),
            (
                "Certificate",
                f'{_e(s.number)} (<span class="id">{_e(s.id)}</span>), '
                f"ledger leaf {_e(s.leaf_index)}",
            ),
            (
                "Status",
                f"{_e(s.status)}, valid until "
                f"{_e(s.valid_until.isoformat() if s.valid_until else '')}",
            ),
            ("Holder", f'<span class="id">{_e(s.holder_id)}</span>'),
            ("Notified body", f'<span class="id">{_e(s.notified_body_id)}</span>'),
        ]
    pairs += [
        ("Instruments", str(r.instruments)),
        ("Passing every criterion", str(r.passing)),
        ("Failing a criterion", str(r.failing.total)),
    ]
    return _facts(pairs)


def _fleet_body(r: FleetReport) -> str:
    counts = _table(
        ["Criterion", "Pass", "Fail", "Not applicable", "Rule"],
        (
            [
                f"{_e(_TITLES[c.criterion])}<br/><code>{_e(c.criterion.value)}</code>",
                str(c.passed),
                str(c.failed),
                str(c.not_applicable),
                _e(_RULES[c.criterion]),
            ]
            for c in r.counts
        ),
        num=(1, 2, 3),
    )
    questions = "".join(
        f"<li><strong>{_e(c.title)}</strong>: {_e(c.question)}</li>" for c in CRITERIA
    )
    certs = _table(
        [
            "Certificate",
            "Type",
            "Category",
            "Status",
            "Valid until",
            "Instruments",
            "Failing",
            "Ledger leaf",
        ],
        (
            [
                f'{_e(c.number)}<br/><span class="id">{_e(c.id)}</span>',
                _e(c.model),
                _e(c.category),
                _e(c.status),
                _e(c.valid_until.isoformat()),
                str(c.instruments),
                str(c.failing),
                str(c.leaf_index),
            ]
            for c in r.certificates
        ),
        num=(5, 6, 7),
    )
    failing = _table(
        ["Instrument", "Serial number", "Certificate", "State", "Failed criteria"],
        (
            [
                f'<span class="id">{_e(f.id)}</span>',
                f'<span class="id">{_e(f.serial)}</span>',
                f'<span class="id">{_e(f.certificate_id)}</span>',
                _e(f.state),
                ", ".join(_e(_TITLES[c]) for c in f.failed),
            ]
            for f in r.failing.items
        ),
    )
    shown = len(r.failing.items)
    more = (
        f"<p>The first {shown} of {r.failing.total} failing instruments (by id); the API and "
        "the JSON report page through all of them.</p>"
        if r.failing.total > shown
        else f"<p>{r.failing.total} failing instrument(s).</p>"
    )
    due = _table(
        ["Month", "Verifications running out"],
        ([_e(m.month), str(m.count)] for m in r.verification_due),
        num=(1,),
    )
    ncs = _table(
        ["Month", "Found", "Closed", "Open at month end"],
        ([_e(m.month), str(m.found), str(m.closed), str(m.open)] for m in r.non_compliances),
        num=(1, 2, 3),
    )
    return (
        f"<section><h2>Subject</h2>{_subject_facts(r)}</section>"
        f"<section><h2>Criteria</h2><ul>{questions}</ul>{counts}</section>"
        f"<section><h2>Charts</h2>{_charts(r)}"
        f"<details><summary>Verification due dates as a table</summary>{due}</details>"
        f"<details><summary>Non-compliances per month as a table</summary>{ncs}</details>"
        f"</section>"
        f"<section><h2>Certificates</h2>{certs}</section>"
        f"<section><h2>Failing instruments</h2>{more}{failing}</section>"
    )


def _title(report: Report) -> str:
    if isinstance(report, InstrumentReport):
        return f"E-compliance report: instrument {report.instrument.serial}"
    if report.kind == "manufacturer":
        return f"E-compliance report: manufacturer {report.subject.name}"
    return f"E-compliance report: type {report.subject.name} ({report.subject.number})"


def render(report: Report) -> str:
    title = _title(report)
    body = _instrument_body(report) if isinstance(report, InstrumentReport) else _fleet_body(report)
    return (
        "<!DOCTYPE html>\n"
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        f'<p class="verdict">Verdict: {_badge(report.verdict)}</p>'
        f"<p>As of {_e(report.as_of.isoformat())}; generated {_e(report.generated_at)} by node "
        f'<span class="id">{_e(report.node_id)}</span>.</p></header>'
        f"<main>{body}</main>"
        "<footer>metrocloud e-compliance report. Every ledger leaf names the signed statement "
        "behind a record; check it with GET /api/v1/ledger/entries/{index} and an inclusion "
        "proof. The verdict fails when any criterion fails (docs/compliance.md).</footer>"
        "</body></html>\n"
    )
