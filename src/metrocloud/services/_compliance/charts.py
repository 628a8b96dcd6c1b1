"""The reports' charts, drawn with matplotlib's object API (no pyplot, no GUI backend).

Each chart is a function that draws into a figure or subfigure, so the HTML page gets one
SVG per chart and the PDF puts them onto A4 pages. Rendering is deterministic: the SVG hash
salt is fixed, no dates are written into the files, and text is never parsed as mathtext
(a ``$`` in a hostile serial stays a ``$``). matplotlib's settings are process-global, so
:func:`rendering` holds a lock while it applies them.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from typing import Any

import matplotlib as mpl
from matplotlib import dates as _mdates
from matplotlib.figure import Figure, SubFigure

from metrocloud.services._compliance.model import (
    CRITERIA,
    FleetReport,
    InstrumentReport,
    Outcome,
    Report,
)

__all__ = ["COLORS", "Chart", "charts", "rendering", "svg"]

COLORS = {
    Outcome.PASS: "#2e7d32",
    Outcome.FAIL: "#c62828",
    Outcome.NOT_APPLICABLE: "#9e9e9e",
}
#: matplotlib.dates is untyped; dates on axes are not in matplotlib's stubs either
mdates: Any = _mdates
_BLUE = "#1565c0"
_AMBER = "#ef6c00"
_RC: Any = {  # matplotlib types the keys as a Literal of every rcParam
    "svg.hashsalt": "metrocloud-compliance-report",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "pdf.compression": 6,
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
}
_LOCK = threading.Lock()
_TITLES = {c.criterion: c.title for c in CRITERIA}

Canvas = Figure | SubFigure


@dataclass(frozen=True, kw_only=True, slots=True)
class Chart:
    key: str
    title: str
    caption: str
    draw: Callable[[Canvas], None]


@contextmanager
def rendering() -> Iterator[None]:
    """matplotlib's settings for the reports, for one rendering at a time."""
    with _LOCK, mpl.rc_context(_RC):
        yield


def _label(outcome: Outcome) -> str:
    return outcome.value.replace("_", " ")


def _empty(fig: Canvas, title: str, message: str) -> None:
    ax: Any = fig.add_subplot()
    ax.set_title(title, loc="left")
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#555555", transform=ax.transAxes)


def _criteria_shares(report: FleetReport) -> Callable[[Canvas], None]:
    def draw(fig: Canvas) -> None:
        title = "Share of instruments per criterion"
        if not report.instruments:
            _empty(fig, title, "no instruments")
            return
        ax: Any = fig.add_subplot()
        labels = [_TITLES[c.criterion] for c in report.counts]
        y = list(range(len(labels)))[::-1]
        left = [0.0] * len(labels)
        for outcome, attr in (
            (Outcome.PASS, "passed"),
            (Outcome.FAIL, "failed"),
            (Outcome.NOT_APPLICABLE, "not_applicable"),
        ):
            share = [100.0 * getattr(c, attr) / report.instruments for c in report.counts]
            ax.barh(y, share, left=left, color=COLORS[outcome], label=_label(outcome), height=0.6)
            for yi, lo, s, c in zip(y, left, share, report.counts, strict=True):
                if s >= 8:
                    ax.text(
                        lo + s / 2,
                        yi,
                        str(getattr(c, attr)),
                        ha="center",
                        va="center",
                        color="white",
                        fontsize=7,
                    )
            left = [a + b for a, b in zip(left, share, strict=True)]
        ax.set_yticks(y, labels)
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"% of {report.instruments} instruments")
        ax.set_title(title, loc="left")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=3, frameon=False)

    return draw


def _month_start(month: str) -> date:
    return date(int(month[:4]), int(month[5:7]), 1)


def _verification_due(report: FleetReport) -> Callable[[Canvas], None]:
    def draw(fig: Canvas) -> None:
        title = "Verification due dates (instruments in service, by month)"
        if not report.verification_due:
            _empty(
                fig,
                title,
                f"no verified instrument in service; never verified: {report.never_verified}",
            )
            return
        ax: Any = fig.add_subplot()
        xs = [_month_start(m.month) for m in report.verification_due]
        late = [m.overdue for m in report.verification_due]
        ahead = [m.count - m.overdue for m in report.verification_due]
        ax.bar(xs, late, width=25, align="edge", color=COLORS[Outcome.FAIL], label="overdue")
        ax.bar(xs, ahead, width=25, align="edge", bottom=late, color=_BLUE, label="valid")
        ax.legend(loc="upper left", frameon=False, fontsize=7)
        ax.axvline(report.as_of, color="#333333", linewidth=0.8, linestyle="--")
        ax.text(
            report.as_of, 1.0, " today", transform=ax.get_xaxis_transform(), va="top", fontsize=7
        )
        ax.set_ylabel("instruments")
        ax.set_title(title, loc="left")
        _date_axis(ax)
        ax.text(
            1.0,
            1.02,
            f"never verified: {report.never_verified}",
            ha="right",
            transform=ax.transAxes,
            fontsize=7,
            color="#555555",
        )

    return draw


def _date_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _certificate_steps(report: FleetReport) -> tuple[list[date], dict[str, list[int]]]:
    status: dict[str, str] = {}
    xs: list[date] = []
    series: dict[str, list[int]] = {"valid": [], "suspended": [], "withdrawn or expired": []}
    for p in report.certificate_history:
        status[p.certificate_id] = p.status
        xs.append(date.fromisoformat(p.at[:10]))
        values = list(status.values())
        series["valid"].append(values.count("valid"))
        series["suspended"].append(values.count("suspended"))
        series["withdrawn or expired"].append(
            len(values) - values.count("valid") - values.count("suspended")
        )
    if xs:
        xs.append(report.as_of)
        for v in series.values():
            v.append(v[-1])
    return xs, series


def _over_time(report: FleetReport) -> Callable[[Canvas], None]:
    def draw(fig: Canvas) -> None:
        axes: Any = fig.subplots(2, 1, sharex=True)
        top, bottom = axes
        xs, series = _certificate_steps(report)
        top.set_title("Certificates by status, and open non-compliances, over time", loc="left")
        if xs:
            for (name, ys), color in zip(
                series.items(), (COLORS[Outcome.PASS], _AMBER, COLORS[Outcome.FAIL]), strict=True
            ):
                top.step(xs, ys, where="post", color=color, label=name)
            top.legend(loc="upper left", frameon=False, fontsize=7)
        top.set_ylabel("certificates")
        top.yaxis.get_major_locator().set_params(integer=True)
        ncs = report.non_compliances
        if ncs:
            months = [_month_start(m.month) for m in ncs]
            ends = [_month_end(m) for m in months]
            bottom.bar(
                months,
                [m.found for m in ncs],
                width=25,
                align="edge",
                color="#ef9a9a",
                label="found in the month",
            )
            # open at each month's end; with step "pre" the value spans its month
            bottom.step(
                [months[0], *ends],
                [0, *(m.open for m in ncs)],
                where="pre",
                color=COLORS[Outcome.FAIL],
                marker="o",
                markevery=list(range(1, len(ncs) + 1)),
                markersize=3,
                label="open at the month's end",
            )
            bottom.legend(loc="upper left", frameon=False, fontsize=7)
        else:
            bottom.text(
                0.5,
                0.5,
                "no non-compliance found",
                ha="center",
                va="center",
                transform=bottom.transAxes,
                color="#555555",
            )
        bottom.set_ylabel("non-compliances")
        bottom.yaxis.get_major_locator().set_params(integer=True)
        if xs or ncs:
            _date_axis(bottom)

    return draw


def _month_end(start: date) -> date:
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _criteria_strip(report: InstrumentReport) -> Callable[[Canvas], None]:
    def draw(fig: Canvas) -> None:
        ax: Any = fig.add_subplot()
        y = list(range(len(report.criteria)))[::-1]
        for yi, c in zip(y, report.criteria, strict=True):
            ax.barh(yi, 1, color=COLORS[c.outcome], height=0.7)
            ax.text(
                0.02,
                yi,
                c.outcome.value.replace("_", " "),
                va="center",
                color="white",
                fontweight="bold",
            )
        ax.set_yticks(y, [_TITLES[c.criterion] for c in report.criteria])
        ax.set_xlim(0, 1)
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(False)
        ax.set_title(f"Criteria: verdict {report.verdict.value.replace('_', ' ')}", loc="left")

    return draw


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def _life_cycle(report: InstrumentReport) -> Callable[[Canvas], None]:
    def draw(fig: Canvas) -> None:
        title = "Life cycle: events and verification periods"
        if not report.events:
            _empty(fig, title, "no life-cycle events recorded")
            return
        ax: Any = fig.add_subplot()
        kinds = sorted({e.kind for e in report.events})
        row = {k: i for i, k in enumerate(kinds)}
        for e in report.events:
            at = _timestamp(e.occurred_at)
            color = COLORS[Outcome.FAIL] if e.kind in _BAD_EVENTS else _BLUE
            ax.plot([at], [row[e.kind]], marker="o", markersize=4, color=color, linestyle="")
            if e.verified_until:
                until = datetime.fromisoformat(e.verified_until)
                ax.plot(
                    [at, until],
                    [row[e.kind]] * 2,
                    color=COLORS[Outcome.PASS],
                    linewidth=3,
                    alpha=0.5,
                    solid_capstyle="butt",
                )
        ax.axvline(
            datetime(report.as_of.year, report.as_of.month, report.as_of.day),
            color="#333333",
            linewidth=0.8,
            linestyle="--",
        )
        ax.set_yticks(range(len(kinds)), [k.replace("_", " ") for k in kinds])
        ax.set_ylim(-0.7, len(kinds) - 0.3)
        ax.set_title(title, loc="left")
        _date_axis(ax)

    return draw


_BAD_EVENTS = frozenset(
    {"verification_failed", "non_compliance_found", "seal_broken", "tamper_detected"}
)


def charts(report: Report) -> list[Chart]:
    """The charts of a report, in reading order."""
    if isinstance(report, InstrumentReport):
        return [
            Chart(
                key="criteria",
                title="Criteria",
                caption="Outcome of each criterion (green pass, red fail, grey not applicable).",
                draw=_criteria_strip(report),
            ),
            Chart(
                key="life-cycle",
                title="Life cycle",
                caption="Life-cycle events over time; green bars are the periods each "
                "verification was valid for; the dashed line is the report date.",
                draw=_life_cycle(report),
            ),
        ]
    return [
        Chart(
            key="criteria",
            title="Criteria",
            caption="Share of the instruments passing (green), failing (red) and not concerned "
            "by (grey) each criterion.",
            draw=_criteria_shares(report),
        ),
        Chart(
            key="verification-due",
            title="Verification due dates",
            caption="Instruments in service by the month their verification runs out: red "
            "ran out before the report date (dashed), blue is still valid.",
            draw=_verification_due(report),
        ),
        Chart(
            key="over-time",
            title="Certificates and non-compliances over time",
            caption="Above: the fleet's certificates by status. Below: non-compliances found "
            "per month and how many were still open (without a corrective action) at each "
            "month's end.",
            draw=_over_time(report),
        ),
    ]


_SIZE = {"over-time": (7.5, 3.6)}
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^")]+)')
_HEAD = re.compile(r"^.*?(<svg\b)", re.S)
_DIMENSIONS = re.compile(r'<svg\b([^>]*?) width="[^"]*" height="[^"]*"')


def svg(chart: Chart) -> str:
    """The chart as an SVG element to inline in HTML: ids prefixed by the chart's key (so
    several charts on one page never share one), a title for assistive technology, no XML
    prolog. Call inside :func:`rendering`."""
    fig = Figure(figsize=_SIZE.get(chart.key, (7.5, 2.8)), layout="constrained")
    chart.draw(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = _HEAD.sub(r"\1", buf.getvalue(), count=1)
    prefix = f"chart-{chart.key}-"
    text = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", text)
    text = _DIMENSIONS.sub(
        lambda m: f'<svg{m.group(1)} width="100%" role="img" aria-labelledby="{prefix}title"',
        text,
        count=1,
    )
    head_end = text.index(">") + 1
    title = f'<title id="{prefix}title">{escape(chart.title)}</title>'
    return text[:head_end] + title + text[head_end:]
