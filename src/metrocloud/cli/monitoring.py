"""Condition monitoring and predictive maintenance over the node's lake: ``metrocloud monitor
run``, ``metrocloud maintenance plan`` and ``metrocloud maintenance reliability``; the
alerts streaming mode raised as readings arrived: ``metrocloud monitor alerts``; and the
streaming monitor's operations: ``metrocloud monitor queue`` (what it owes, what it gave up
on), ``monitor retry SEGMENT`` (put a poisoned segment back) and ``monitor replay`` (rebuild
its state and alerts from the lake, with the node stopped).

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
    err,
    out,
)

if TYPE_CHECKING:
    from metrocloud.lake import LakeEngine
    from metrocloud.services.node import Node

__all__ = ["maintenance_app", "monitor_app"]

monitor_app = typer.Typer(
    no_args_is_help=True,
    help="Condition monitoring: alerts from the lake and the registry, streaming alerts and "
    "the streaming monitor's queue, retry and replay (docs/monitoring.md).",
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
ReplayFrom = Annotated[
    str | None,
    typer.Option(
        "--from",
        "--start",
        help="Replay readings from, inclusive: YYYY-MM-DD or an ISO time (no zone: UTC).",
    ),
]
ReplayTo = Annotated[
    str | None,
    typer.Option(
        "--to",
        "--end",
        help="Replay readings until, exclusive: YYYY-MM-DD or an ISO time (no zone: UTC). "
        "The live monitor continues from the state at this time: leave it out to resume.",
    ),
]


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


def _open(data_dir: Path, db: str | None) -> Node:
    from metrocloud.services.node import Node

    return Node.open(_settings(data_dir, db), create=False)


@monitor_app.command("queue")
def monitor_queue(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="Only these: pending (owed) or poisoned (given up)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Print the streaming monitor's queue in commit order: the segments it still owes
    (pending, with their failed tries) and those it gave up on after their last try
    (poisoned, with the error); docs/monitoring.md "Operations"."""
    from metrocloud.services.streaming import list_stream_queue, queued_json

    rows: list[Any] = []
    with _errors():
        node = _open(data_dir, db)
        try:
            cursor = None
            while True:
                page = list_stream_queue(node, state=state, limit=1000, cursor=cursor)
                rows += page.items
                if (cursor := page.next_cursor) is None:
                    break
        finally:
            node.close()
    if as_json:
        for q in rows:
            typer.echo(json.dumps(queued_json(q), ensure_ascii=False))
        return
    poisoned = sum(q.state == "poisoned" for q in rows)
    table = Table(
        title=f"{len(rows)} queued segment(s): {len(rows) - poisoned} pending, {poisoned} poisoned"
    )
    for col in ("segment", "state", "readings", "tries", "since (UTC)", "next try", "last error"):
        table.add_column(col, overflow="fold")
    for q in rows:
        table.add_row(
            escape(q.segment),
            "[red]poisoned[/]" if q.state == "poisoned" else "pending",
            str(q.readings),
            str(q.attempts),
            q.poisoned_at or q.committed_at,
            q.next_try_at or "-",
            escape(q.error or "-"),
        )
    out.print(table)


@monitor_app.command("retry")
def monitor_retry(
    segment: Annotated[str, typer.Argument(help="The poisoned segment's id (monitor queue).")],
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why it may be tried again (logged).")
    ] = None,
) -> None:
    """Put a poisoned segment back in the streaming queue once the cause is fixed: no tries
    counted, at its commit position, so the running node's monitor takes it next (it polls
    every second); its readings older than what came after it are late (counted, not
    compared): replay for alerts as if it never failed."""
    from metrocloud.services.streaming import retry_stream_segment

    with _errors():
        node = _open(data_dir, db)
        try:
            row = retry_stream_segment(node, None, segment, reason=reason)
        finally:
            node.close()
    out.print(
        f"segment {escape(row.segment)} re-queued ({row.readings} readings, position "
        f"{row.position}); last error: {escape(row.error or '-')}",
        highlight=False,
        soft_wrap=True,
    )


@monitor_app.command("replay")
def monitor_replay(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    start: ReplayFrom = None,
    end: ReplayTo = None,
    as_json: AsJson = False,
) -> None:
    """Rebuild the streaming state and alerts from the lake's readings in [--from, --to),
    day by day through the live monitor's logic (for the stream kinds: what `monitor run`
    finds over the same window). Takes the lake's writer lock: refused while the node
    runs. Replaces the streaming alerts; running it twice gives the same alerts."""
    from metrocloud.services.streaming import replay_stream

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        node = _open(data_dir, db)
        try:
            with _progress() as bar:
                task = bar.add_task("replay readings", total=None)

                def tick(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                r = replay_stream(node, start=lo, end=hi, progress=tick)
        finally:
            node.close()
    record = {
        "version": r.version,
        "start": None if r.start is None else r.start.isoformat(),
        "end": None if r.end is None else r.end.isoformat(),
        "partitions": r.partitions,
        "readings": r.readings,
        "late": r.late,
        "registers": r.registers,
        "alerts": r.alerts,
        "segments_marked": r.segments_marked,
        "dropped_pending": r.dropped_pending,
        "dropped_poisoned": r.dropped_poisoned,
    }
    if as_json:
        typer.echo(json.dumps(record))
    else:
        out.print(
            f"replayed lake version {r.version}: {r.readings} readings of {r.registers} "
            f"registers in {r.partitions} partition(s), {r.alerts} streaming alert(s); "
            f"{r.segments_marked} segment(s) newly counted as taken in, "
            f"{r.dropped_pending} pending and {r.dropped_poisoned} poisoned queue row(s) dropped",
            highlight=False,
            soft_wrap=True,
        )
    if r.end is not None:
        err.print(
            "note: the streaming state stops at --to; readings after it are not in it, so "
            "the live monitor may raise a gap per register: replay without --to to resume",
            highlight=False,
            soft_wrap=True,
        )


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
