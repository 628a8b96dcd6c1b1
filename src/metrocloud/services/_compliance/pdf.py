"""A report as PDF (matplotlib's PdfPages): A4 text pages for the findings and tables, an
A4 page of charts. The text is set in the PDF's standard fonts (Helvetica, Courier): nothing
is embedded, text stays searchable and extractable, and a thousand table rows take about a
second rather than the twenty that embedded TrueType glyphs cost. No creation date is
written, so the same report gives the same bytes."""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib as mpl
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from metrocloud.services._compliance.charts import charts, rendering
from metrocloud.services._compliance.model import (
    CRITERIA,
    FleetReport,
    InstrumentReport,
    Report,
)

__all__ = ["LINES_PER_PAGE", "render"]

_A4 = (8.27, 11.69)
_WIDTH = 96  # characters per line, DejaVu Sans Mono 8 pt on A4 with margins
LINES_PER_PAGE = 72
_TITLES = {c.criterion: c.title for c in CRITERIA}
#: the PDF's 14 standard fonts: nothing embedded, metrics from AFM files
_CORE_FONTS: Any = {
    "pdf.use14corefonts": True,
    "font.family": "sans-serif",
    "font.sans-serif": ["Helvetica"],
    "font.monospace": ["Courier"],
}


class _CoreFontWeights(logging.Filter):
    """The core fonts' regular faces are "Medium" in their AFM files: matplotlib warns on
    every look-up of a normal-weight font that it uses them. Nothing to tell anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont: Failed to find font weight")


@contextmanager
def _core_fonts() -> Iterator[None]:
    log = logging.getLogger("matplotlib.font_manager")
    quiet = _CoreFontWeights()
    log.addFilter(quiet)
    try:
        with mpl.rc_context(_CORE_FONTS):
            yield
    finally:
        log.removeFilter(quiet)


_RULES = {c.criterion: c.rule for c in CRITERIA}


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [
        indent
    ]


def _instrument_lines(r: InstrumentReport) -> list[str]:
    i = r.instrument
    sw = i.software or {}
    lines = [
        f"Instrument      {i.id}",
        f"Serial number   {i.serial}",
        f"Manufacturer    {i.manufacturer_name} ({i.manufacturer_id})",
        f"Type            {i.model}, certificate {i.certificate_number} ({i.certificate_id})",
        f"Category        {i.category}",
        f"State           {i.state}",
        f"Operator        {i.operator_id or 'none'}",
        f"Region          {i.region or 'unknown'}",
        f"Verified until  {i.verified_until.isoformat() if i.verified_until else 'none'}",
        f"Software        {sw.get('name')} {sw.get('version')}" if sw else "Software        none",
        "",
        "CRITERIA",
    ]
    for c in r.criteria:
        lines.append("")
        lines += _wrap(f"[{c.outcome.value.upper()}] {_TITLES[c.criterion]}: {c.summary}")
        lines += _wrap(f"rule: {_RULES[c.criterion]}", "    ")
        for ev in c.evidence:
            leaf = f", ledger leaf {ev.leaf_index}" if ev.leaf_index is not None else ""
            at = f", {ev.at}" if ev.at else ""
            lines += _wrap(f"- {ev.kind} {ev.id}{at}{leaf}: {ev.detail}", "    ")
    lines += ["", f"LIFE-CYCLE EVENTS (newest {len(r.events)} of {r.events_total})", ""]
    lines += [
        f"{e.seq:>5}  {e.occurred_at:<26} {e.kind:<22} leaf {e.leaf_index}  {e.id}"
        for e in r.events
    ]
    return lines


def _fleet_lines(r: FleetReport) -> list[str]:
    s = r.subject
    if r.kind == "manufacturer":
        lines = [f"Manufacturer    {s.name} ({s.id}), {s.country}"]
    else:
        until = s.valid_until.isoformat() if s.valid_until else ""
        lines = [
            f"Type            {s.name}",
            f"Certificate     {s.number} ({s.id}), ledger leaf {s.leaf_index}",
            f"Status          {s.status}, valid until {until}",
            f"Holder          {s.holder_id}",
            f"Notified body   {s.notified_body_id}",
        ]
    lines += [
        f"Instruments     {r.instruments}",
        f"Passing         {r.passing}",
        f"Failing         {r.failing.total}",
        "",
        "CRITERIA                          pass      fail    not applicable",
    ]
    for c in r.counts:
        lines.append(
            f"{_TITLES[c.criterion]:<28}{c.passed:>10}{c.failed:>10}{c.not_applicable:>18}"
        )
    lines.append("")
    for info in CRITERIA:
        lines += _wrap(f"{info.title}: {info.question} ({info.rule})")
    lines += ["", "CERTIFICATES", ""]
    for cert in r.certificates:
        lines += _wrap(
            f"{cert.number} ({cert.id}) {cert.model}, {cert.category}: {cert.status}, valid "
            f"until {cert.valid_until.isoformat()}, {cert.instruments} instruments, "
            f"{cert.failing} failing, ledger leaf {cert.leaf_index}"
        )
    shown = len(r.failing.items)
    lines += ["", f"FAILING INSTRUMENTS (first {shown} of {r.failing.total}, by id)", ""]
    for f in r.failing.items:
        failed = ", ".join(_TITLES[c] for c in f.failed)
        lines += _wrap(f"{f.id}  {f.serial}  {f.state}: {failed}")
    return lines


def _pages(lines: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(lines), LINES_PER_PAGE):
        yield lines[start : start + LINES_PER_PAGE]


def _title(report: Report) -> str:
    if isinstance(report, InstrumentReport):
        return f"E-compliance report: instrument {report.instrument.serial}"
    if report.kind == "manufacturer":
        return f"E-compliance report: manufacturer {report.subject.name}"
    return f"E-compliance report: type {report.subject.name} ({report.subject.number})"


def _text_page(pdf: Any, title: str, header: str, lines: list[str], page: int, pages: int) -> None:
    """One A4 page of text in the PDF core fonts (Helvetica, Courier): nothing to embed and
    no glyph outlines to lay out (characters outside Windows-1252 print as ``?``; the JSON
    and HTML carry them). ``pdf`` is the open :class:`PdfPages`."""
    fig = Figure(figsize=_A4)
    fig.text(0.07, 0.965, title, fontsize=12, fontweight="bold", va="top", family="sans-serif")
    fig.text(0.07, 0.945, header, fontsize=8, va="top", color="#444444", family="sans-serif")
    fig.text(
        0.07, 0.92, "\n".join(lines), fontsize=8, family="monospace", va="top", linespacing=1.25
    )
    fig.text(
        0.93,
        0.03,
        f"page {page} of {pages}",
        fontsize=7,
        ha="right",
        color="#777777",
        family="sans-serif",
    )
    pdf.savefig(fig)


def render(report: Report) -> bytes:
    title = _title(report)
    header = (
        f"Verdict: {report.verdict.value.replace('_', ' ').upper()}.  As of "
        f"{report.as_of.isoformat()}; generated {report.generated_at} by node {report.node_id}."
    )
    lines = (
        _instrument_lines(report) if isinstance(report, InstrumentReport) else _fleet_lines(report)
    )
    text_pages = list(_pages(lines))
    total = len(text_pages) + 1
    buf = io.BytesIO()
    metadata = {
        "Title": title,
        "Creator": "metrocloud",
        "Producer": "metrocloud",
        "CreationDate": None,
    }
    with rendering(), _core_fonts(), PdfPages(buf, metadata=metadata) as pdf:
        _text_page(pdf, title, header, text_pages[0], 1, total)
        fig = Figure(figsize=_A4, layout=ConstrainedLayoutEngine(w_pad=0.35, h_pad=0.3))
        fig.suptitle(f"{title}: charts", x=0.07, ha="left", fontsize=12, fontweight="bold")
        parts = charts(report)
        subs: Any = fig.subfigures(
            len(parts), 1, height_ratios=[1.3 if c.key == "over-time" else 1 for c in parts]
        )
        for sub, chart in zip(list(subs), parts, strict=True):
            chart.draw(sub)
        pdf.savefig(fig)
        for n, page in enumerate(text_pages[1:], start=3):
            _text_page(pdf, title, header, page, n, total)
    return buf.getvalue()
