"""Condition monitoring and predictive maintenance over the node's lake: ``metrocloud monitor
run``, ``metrocloud maintenance plan`` and ``metrocloud maintenance reliability``; and the
alerts streaming mode raised as readings arrived: ``metrocloud monitor alerts``.

Each runs on DuckDB (default) or Apache Spark (``--engine spark [--spark-master URL]``),
through the same :class:`~metrocloud.lake.engine.LakeEngine` interface and with the same
results (docs/lake.md, "Apache Spark"). The node's operator runs them: they see every
instrument of the node. Results on stdout (a table, or ``--json``: one JSON object per line),
progress on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from metrocloud.cli._common import (
    CliError,
    DataDir,
    Db,
    _errors,
    _progress,
    _settings,
    app,
    out,
)

if TYPE_CHECKING:
    from metrocloud.lake import LakeEngine
    from metrocloud.services.node import Node

__all__ = ["maintenance_app", "monitor_app"]

monitor_app = typer.Typer(
    no_args_is_help=True,
    help="Condition monitoring: alerts from the lake and the registry (docs/monitoring.md).",
)
app.add_typer(monitor_app, name="monitor")
maintenance_app = typer.Typer(
    no_args_is_help=True,
    help="Predictive maintenance: drift, MPE crossing, re-verification, reliability per type.",
)
app.add_typer(maintenance_app, name="maintenance")


class EngineChoice(StrEnum):
    duckdb = "duckdb"
    spark = "spark"


From = Annotated[
    str | None,
    typer.Option(
        "--from", help="Window start, inclusive: YYYY-MM-DD or an ISO time (no zone: UTC)."
    ),
]
To = Annotated[
    str | None,
    typer.Option("--to", help="Window end, exclusive: YYYY-MM-DD or an ISO time (no zone: UTC)."),
]
EngineOpt = Annotated[
    EngineChoice,
    typer.Option("--engine", help="Lake query engine: duckdb (embedded) or spark (pyspark)."),
]
SparkMaster = Annotated[
    str | None,
    typer.Option(
        "--spark-master",
        envvar="METROCLOUD_SPARK_MASTER",
        help="Spark master URL for --engine spark (default local[2]), e.g. spark://host:7077.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} must be YYYY-MM-DD or an ISO 8601 time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _Counted:
    """The engine, with each lake query counted on the progress bar."""

    def __init__(self, engine: LakeEngine, tick: Callable[[], None]) -> None:
        self._engine = engine
        self._tick = tick

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            self._tick()
            return result

        return call


def _master(ctx: typer.Context, engine: EngineChoice, spark_master: str | None) -> str | None:
    """The Spark master for the engine: ``METROCLOUD_SPARK_MASTER`` in the environment is
    for ``--engine spark`` and ignored by duckdb; ``--spark-master`` given with duckdb is a
    mistake the engine factory refuses."""
    if engine is EngineChoice.spark:
        return spark_master
    source = ctx.get_parameter_source("spark_master")
    return spark_master if source is not None and source.name == "COMMANDLINE" else None


#: how the alert tables colour a severity (batch and streaming alike)
_SEVERITY_COLOUR = {"critical": "red", "warning": "yellow", "info": "cyan"}


@contextmanager
def _engine(
    ctx: typer.Context,
    data_dir: Path,
    db: str | None,
    engine: EngineChoice,
    spark_master: str | None,
) -> Iterator[tuple[Node, Any]]:
    """The node and its lake engine, each query counted on a progress bar on stderr."""
    from metrocloud.services.fleet import node_engine
    from metrocloud.services.node import Node

    node = Node.open(_settings(data_dir, db), create=False)
    try:
        with _progress() as bar:
            opening = bar.add_task(f"{engine.value} engine", total=1)
            master = _master(ctx, engine, spark_master)
            with node_engine(node, engine.value, spark_master=master) as eng:
                bar.update(opening, completed=1)
                queries = bar.add_task("lake queries", total=None)
                yield node, _Counted(eng, lambda: bar.advance(queries))
    finally:
        node.close()


def _evidence(evidence: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in evidence.items())


@monitor_app.command("run")
def monitor_run(
    ctx: typer.Context,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    start: From = None,
    end: To = None,
    engine: EngineOpt = EngineChoice.duckdb,
    spark_master: SparkMaster = None,
    as_json: AsJson = False,
) -> None:
    """Run every detector over [--from, --to) and print the alerts, one per instrument and
    kind (integrity, metrology, security; docs/monitoring.md)."""
    from metrocloud.services.fleet import alert_json
    from metrocloud.services.monitoring import detect

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        with _engine(ctx, data_dir, db, engine, spark_master) as (node, eng):
            alerts = detect(node, eng, start=lo, end=hi)
    if as_json:
        for a in alerts:
            typer.echo(json.dumps(alert_json(a), ensure_ascii=False))
        return
    table = Table(title=f"{len(alerts)} alert(s) ({engine.value})")
    for col in ("instrument", "kind", "severity", "first evidence (UTC)", "evidence"):
        table.add_column(col, overflow="fold")
    for a in alerts:
        wire = alert_json(a)
        table.add_row(
            a.instrument,
            a.kind,
            f"[{_SEVERITY_COLOUR[a.severity]}]{a.severity}[/]",
            wire["at"],
            escape(_evidence(wire["evidence"])),
        )
    out.print(table)


@monitor_app.command("alerts")
def monitor_alerts(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    instrument: Annotated[
        str | None, typer.Option("--instrument", help="Only this instrument's alerts.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Only this kind: counter_reset, reverse_flow, gap, seal_broken, tamper_detected.",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Print the alerts streaming mode raised as readings arrived (one per instrument and
    kind, with how often it recurred; no lake scan, docs/monitoring.md "Streaming")."""
    from metrocloud.services.node import Node
    from metrocloud.services.streaming import list_stream_alerts, stream_alert_json

    with _errors():
        node = Node.open(_settings(data_dir, db), create=False)
        try:
            alerts = list_stream_alerts(node, instrument=instrument, kind=kind)
        finally:
            node.close()
    if as_json:
        for a in alerts:
            typer.echo(json.dumps(stream_alert_json(a), ensure_ascii=False))
        return
    table = Table(title=f"{len(alerts)} streaming alert(s)")
    for col in ("instrument", "kind", "severity", "first evidence (UTC)", "count", "evidence"):
        table.add_column(col, overflow="fold")
    for a in alerts:
        wire = stream_alert_json(a)
        table.add_row(
            a.instrument,
            a.kind,
            f"[{_SEVERITY_COLOUR[a.severity]}]{a.severity}[/]",
            wire["at"],
            str(a.count),
            escape(_evidence({k: v for k, v in wire["evidence"].items() if k != "count"})),
        )
    out.print(table)


@maintenance_app.command("plan")
def maintenance_plan(
    ctx: typer.Context,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    start: From = None,
    end: To = None,
    engine: EngineOpt = EngineChoice.duckdb,
    spark_master: SparkMaster = None,
    as_json: AsJson = False,
) -> None:
    """Per instrument with a reference meter: drift (Theil-Sen, with Sen's 95 % interval),
    current error, predicted crossing of the in-service MPE and the recommended
    re-verification date."""
    from metrocloud.services.fleet import estimate_json
    from metrocloud.services.maintenance import plan_maintenance

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        with _engine(ctx, data_dir, db, engine, spark_master) as (node, eng):
            plan = plan_maintenance(node, eng, start=lo, end=hi)
    if as_json:
        for e in plan:
            typer.echo(json.dumps(estimate_json(e), ensure_ascii=False))
        return
    table = Table(title=f"maintenance plan: {len(plan)} instrument(s) ({engine.value})")
    for col in (
        "instrument",
        "drift %/year [95 %]",
        "error %",
        "MPE %",
        "days",
        "MPE crossing",
        "earliest",
        "re-verify by",
    ):
        table.add_column(col, overflow="fold")
    for e in plan:
        table.add_row(
            e.instrument,
            f"{e.drift_percent_per_year:+.3f} [{e.drift_low:+.3f}, {e.drift_high:+.3f}]",
            f"{e.error_percent:+.3f}",
            f"{e.mpe_percent:.2f}",
            str(e.days),
            e.predicted_crossing.date().isoformat() if e.predicted_crossing else "-",
            e.crossing_earliest.date().isoformat() if e.crossing_earliest else "-",
            e.recommended_reverification.isoformat() if e.recommended_reverification else "-",
        )
    out.print(table)


@maintenance_app.command("reliability")
def maintenance_reliability(
    ctx: typer.Context,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    start: From = None,
    end: To = None,
    engine: EngineOpt = EngineChoice.duckdb,
    spark_master: SparkMaster = None,
    as_json: AsJson = False,
) -> None:
    """Kaplan-Meier survival per type (certificate): days from --from (default: the lake's
    first reading) until an instrument's first critical alert, censored at --to (default:
    now)."""
    from metrocloud.services.maintenance import median_survival, type_reliability
    from metrocloud.services.monitoring import detect

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        with _engine(ctx, data_dir, db, engine, spark_master) as (node, eng):
            if lo is None:
                firsts = eng.fleet_summary().column("first_t").to_pylist()
                if not firsts:
                    raise CliError("the lake holds no reading: give --from")
                lo = min(firsts)
            hi = hi or node.now()
            alerts = detect(node, eng, start=lo, end=hi)
            curves = type_reliability(node, alerts, start=lo, end=hi)
    if as_json:
        for cert, curve in curves.items():
            record = {
                "certificate": cert,
                "start": lo.isoformat(),
                "end": hi.isoformat(),
                "instruments": curve[0].at_risk if curve else 0,
                "failures": sum(p.failures for p in curve),
                "median_survival_days": median_survival(curve),
                "curve": [
                    {
                        "days": p.t,
                        "at_risk": p.at_risk,
                        "failures": p.failures,
                        "censored": p.censored,
                        "survival": p.survival,
                    }
                    for p in curve
                ],
            }
            typer.echo(json.dumps(record))
        return
    days = (hi - lo).total_seconds() / 86400
    table = Table(title=f"reliability per type over {days:.1f} days ({engine.value})")
    for col in ("certificate", "instruments", "failures", "survival at end", "median (days)"):
        table.add_column(col, overflow="fold")
    for cert, curve in curves.items():
        median = median_survival(curve)
        table.add_row(
            cert,
            str(curve[0].at_risk if curve else 0),
            str(sum(p.failures for p in curve)),
            f"{curve[-1].survival:.3f}" if curve else "-",
            "-" if median is None else f"{median:.1f}",
        )
    out.print(table)
