"""Data-driven services against ground truth (issue #5): prints one JSON line per figure.

    python bench/services.py            # sim --instruments 10000 --days 365 --seed 1 (long)
    python bench/services.py --quick    # 200 instruments x 30 days, the same code, ~1 minute
    python bench/services.py --instruments N --days D [--no-spark] [--spark-days D]
    python bench/services.py --keep DIR ...  # keep the simulation; run again: score it again
    python bench/services.py --synthetic-readings 100000000 [--days 175] [--no-spark]

1. A fleet is simulated on a fresh node through the real intake into the lake
   (:func:`metrocloud.sim.run_simulation`, labels beside it).
2. Monitoring (:func:`metrocloud.services.monitoring.detect`) runs over the whole lake on
   DuckDB, timed (target: 60 s over 10^8 readings), then, unless ``--no-spark`` or pyspark is
   missing, on Apache Spark in local mode over the same files: its time is printed beside
   DuckDB's and the two alert lists must be identical (the benchmark fails otherwise); with
   ``--spark-days D`` both over the first D simulated days only (Spark local takes the
   better part of an hour per 10^8 readings on two cores).
3. The alerts are scored against the labels: recall and precision over faults (stuck
   register, clock drift, counter reset, reverse flow) and over tampering (broken seal,
   unapproved software, under-registration); targets 0.95 and 0.90.
4. Maintenance (:func:`metrocloud.services.maintenance.plan_maintenance`): the share of
   drifting instruments (with a reference meter, the others have no drift signal in the lake)
   whose predicted MPE crossing lies within +-30 days of the label (target 0.80).

The simulation's own throughput is printed too (readings/s through the intake), as the
context of the figures; it has no target here (bench/ingest.py measures the intake).

``--synthetic-readings N`` measures monitoring alone at scale, without the simulator (which
takes about 35 minutes for 10^8 readings): the instruments are registered through the
services on a fresh node (10,000 per registration), the lake is generated in DuckDB
(``bench/_lake.write_fleet_lake``: the simulator's category mix and reading rhythm, reference
meters, drift and injected faults) in six-hour segments and compacted; then ``detect`` is
timed on DuckDB (total and per detector, wall and CPU) and, unless ``--no-spark``, on Spark
local over the same files (the alert lists must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FAULTS = ("stuck_register", "clock_drift", "counter_reset", "reverse_flow")
TAMPERING = ("seal_broken", "unapproved_software", "under_registration")
KINDS = FAULTS + TAMPERING


def emit(name: str, value: float, unit: str, target: float | None, better: str, scale: str) -> None:
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value, 4),
                "unit": unit,
                "target": target,
                "better": better,
                "scale": scale,
            }
        ),
        flush=True,
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _group(scores: dict[str, Any], kinds: tuple[str, ...]) -> tuple[float, float]:
    tp = sum(scores[k].tp for k in kinds)
    fp = sum(scores[k].fp for k in kinds)
    fn = sum(scores[k].fn for k in kinds)
    recall = tp / (tp + fn) if tp + fn else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    return recall, precision


def machine_load() -> str:
    """The load averages (1, 5, 15 minutes): the machine is shared, timings are noisy."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its reaped children (a Spark JVM
    is a child, counted once it exits)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _spark_engine(lake: Any) -> Any | None:
    try:
        from metrocloud.lake.spark_engine import SparkEngine
    except ImportError as exc:  # the engine or pyspark is not installed
        say(f"spark: not measured ({exc})")
        return None
    return SparkEngine(lake)


def run(
    instruments: int, days: int, seed: int, workdir: Path, spark: bool, spark_days: int | None
) -> int:
    import pyarrow.parquet as pq

    from metrocloud.lake import DuckDBEngine, Lake
    from metrocloud.services.evaluation import score_alerts, score_crossings
    from metrocloud.services.maintenance import plan_maintenance
    from metrocloud.services.monitoring import detect
    from metrocloud.services.node import Node
    from metrocloud.services.settings import Settings
    from metrocloud.sim import SimConfig, run_simulation

    scale = f"{instruments} instruments x {days} days (seed {seed})"
    node = Node.open(Settings(data_dir=workdir / "node", country="DE"))
    labels_path = workdir / "node" / "sim" / "labels.parquet"
    summary_path = labels_path.with_name("labels.summary.json")
    if summary_path.exists():
        # --keep DIR of an earlier run: score its lake again, without simulating
        summary = json.loads(summary_path.read_text())
        if (summary["instruments"], summary["days"], summary["seed"]) != (instruments, days, seed):
            raise SystemExit(f"{workdir} holds another simulation: {summary_path}")
        lake_rows = int(summary["lake"]["rows"])
        say(f"scoring the simulation in {workdir} again ({lake_rows:,} lake rows)")
    else:
        start = datetime.now(UTC).date() - timedelta(days=days + 1)
        say(f"simulating {scale} ...")
        result = run_simulation(
            node, SimConfig(instruments=instruments, days=days, seed=seed, start=start)
        )
        lake_rows = result.lake_rows
        say(
            f"simulated: {result.readings_accepted:,} readings accepted, {lake_rows:,} lake "
            f"rows, {result.elapsed_s:,.0f} s"
        )
        emit(
            "sim_intake_readings_per_s",
            result.readings_accepted / result.elapsed_s,
            "readings/s",
            None,
            "higher",
            scale,
        )
    emit("lake_readings", lake_rows, "readings", None, "higher", scale)
    labels = pq.read_table(labels_path).to_pylist()

    lake = Lake.open(node.settings.lake_path())
    engine = DuckDBEngine(lake)
    t0 = time.perf_counter()
    alerts = detect(node, engine)
    duck_s = time.perf_counter() - t0
    say(f"monitoring on DuckDB: {len(alerts):,} alerts in {duck_s:,.1f} s")
    # the target is 60 s over 10^8 readings: scaled linearly to the lake's size
    target_s = 60.0 * max(lake_rows, 1) / 1e8
    emit("monitoring_duckdb_s", duck_s, "s", round(target_s, 3), "lower", scale)
    emit(
        "monitoring_duckdb_s_per_1e8_readings",
        duck_s * 1e8 / max(lake_rows, 1),
        "s",
        60.0,
        "lower",
        scale,
    )

    failed = 0
    if spark:
        w_alerts, w_duck_s, w_scale, bounds = alerts, duck_s, scale, {}
        if spark_days:
            # Spark over the first days only (at this size it runs for hours): DuckDB again
            # over the same window beside it
            summary = json.loads(summary_path.read_text())
            begin = datetime.fromisoformat(summary["start"].replace("Z", "+00:00"))
            bounds = {"start": begin, "end": begin + timedelta(days=spark_days)}
            lo_ms, hi_ms = (int(b.timestamp() * 1000) for b in bounds.values())
            rows = engine.sql(
                f"SELECT count(*) AS n FROM readings WHERE epoch_ms(t) >= {lo_ms} "
                f"AND epoch_ms(t) < {hi_ms}"
            ).to_pylist()[0]["n"]
            w_scale = f"{scale}, the first {spark_days} days: {rows} readings"
            emit("monitoring_window_readings", rows, "readings", None, "higher", w_scale)
            t0 = time.perf_counter()
            w_alerts = detect(node, engine, **bounds)
            w_duck_s = time.perf_counter() - t0
            emit("monitoring_duckdb_window_s", w_duck_s, "s", None, "lower", w_scale)
        spark_engine = _spark_engine(lake)
        if spark_engine is not None:
            try:
                t0 = time.perf_counter()
                spark_alerts = detect(node, spark_engine, **bounds)
                spark_s = time.perf_counter() - t0
            finally:
                spark_engine.close()
            say(f"monitoring on Spark (local): {len(spark_alerts):,} alerts in {spark_s:,.1f} s")
            emit("monitoring_spark_local_s", spark_s, "s", None, "lower", w_scale)
            emit(
                "monitoring_spark_over_duckdb", spark_s / w_duck_s, "ratio", None, "lower", w_scale
            )
            if spark_alerts != w_alerts:
                say("FAIL: Spark and DuckDB alert lists differ")
                failed = 1

    scores = score_alerts(alerts, labels)
    # the targets read "on faults and tampering": each group on its own, and both together
    groups = (("faults", FAULTS), ("tampering", TAMPERING), ("faults_and_tampering", KINDS))
    for group, kinds in groups:
        recall, precision = _group(scores, kinds)
        emit(f"{group}_recall", recall, "ratio", 0.95, "higher", scale)
        emit(f"{group}_precision", precision, "ratio", 0.90, "higher", scale)
    for kind, s in scores.items():
        say(f"  {kind:<20} tp {s.tp:>6} fp {s.fp:>6} fn {s.fn:>6}")

    t0 = time.perf_counter()
    estimates = plan_maintenance(node, engine)
    plan_s = time.perf_counter() - t0
    crossings = score_crossings({e.instrument: e.predicted_crossing for e in estimates}, labels)
    say(
        f"maintenance: {len(estimates):,} drift estimates in {plan_s:,.1f} s; "
        f"{crossings.within}/{crossings.labelled} crossings within 30 days"
    )
    emit("mpe_crossing_within_30d", crossings.fraction, "ratio", 0.80, "higher", scale)
    emit("maintenance_plan_s", plan_s, "s", None, "lower", scale)
    engine.close()
    lake.close()
    node.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit("peak_rss_mib", peak, "MiB", None, "lower", scale)
    return failed


#: the steps of detect (services.monitoring.STEPS) reported as figures
DETECTORS = ("counters", "clock", "stuck", "metrology", "peer")
#: injected fault (bench/_lake.FLEET_FAULTS) -> the alert kinds that find it
FAULT_ALERTS = {
    "stuck": ("stuck_register",),
    "reset": ("counter_reset",),
    "clock": ("clock_drift",),
    "reverse": ("reverse_flow",),
    "missing": ("gap",),
    "under": ("under_registration", "drift", "peer_deviation"),
}


def _jvm_cpu_s(engine: Any) -> float | None:
    """CPU seconds of the Spark JVM (local mode: a child process of this one) so far."""
    try:
        pid = engine.session.sparkContext._gateway.proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (AttributeError, OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def register_fleet(node: Any, count: int) -> list[str]:
    """A notified body and a manufacturer (admitted), one certificate per profile of the
    synthetic fleet (bench/_lake.FLEET_PROFILES), ``count`` instruments registered through
    the services (10,000 per registration; instrument i of profile FLEET_PROFILE_OF[i % 10]).
    Returns their ids in the order of i."""
    from _lake import FLEET_PROFILE_OF, FLEET_PROFILES
    from metrocloud.device import identify
    from metrocloud.domain.categories import InstrumentCategory
    from metrocloud.domain.parties import PartyRole
    from metrocloud.services import certificates as certs
    from metrocloud.services import instruments as inst
    from metrocloud.services import parties as pty
    from metrocloud.services.common import Actor

    nb, _ = pty.admit_party(
        node, None, name="Synthetic NB", role=PartyRole.NOTIFIED_BODY, nb_number="9999"
    )
    maker, _ = pty.admit_party(node, None, name="Synthetic Meters", role=PartyRole.MANUFACTURER)
    issued = datetime(2025, 1, 1, tzinfo=UTC).date()
    certificate_of: dict[int, str] = {}
    for p, category, *_, accuracy_class in FLEET_PROFILES:
        software = identify(f"SYN-{p}-FW", "1.0.0", {"metering": f"synthetic {p}".encode()})
        cert, _ = certs.issue_certificate(
            node,
            Actor.of_party(nb),
            certs.CertificateDraft(
                number=f"SYN-{category}",
                holder_id=maker["id"],
                category=InstrumentCategory(category),
                model=f"SYN-{p}",
                accuracy_class=str(accuracy_class),
                software=(software,),
                issued_on=issued,
                valid_until=issued.replace(year=issued.year + 10),
            ),
        )
        certificate_of[int(p)] = cert["id"]
    ids: list[str] = []
    step = node.settings.max_batch
    for lo in range(0, count, step):
        drafts = [
            inst.InstrumentDraft(
                serial=f"SYN{i:08d}", certificate_id=certificate_of[FLEET_PROFILE_OF[i % 10]]
            )
            for i in range(lo, min(count, lo + step))
        ]
        refs, _ = inst.register_instruments(node, Actor.of_party(maker), drafts)
        ids += [r["id"] for r in refs]
    return ids


def run_synthetic(readings: int, days: int, workdir: Path, spark: bool) -> int:
    """``--synthetic-readings``: monitoring alone on a generated lake (module doc)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rich.console import Console

    from _lake import fleet_instruments, write_fleet_lake
    from metrocloud.lake import DuckDBEngine, Lake
    from metrocloud.services.monitoring import STEPS, detect
    from metrocloud.services.node import Node
    from metrocloud.services.settings import Settings

    node = Node.open(Settings(data_dir=workdir / "node", country="DE"))
    count = fleet_instruments(readings, days)
    t0 = time.perf_counter()
    ids = register_fleet(node, count)
    say(f"registered {count:,} instruments in {time.perf_counter() - t0:.1f} s")
    build, faults = write_fleet_lake(
        node.settings.lake_path(), ids, days, workdir, Console(stderr=True)
    )
    scale = f"{build.written} readings, {count} instruments x {days} days (synthetic)"
    say(
        f"lake: generated in {build.gen_s:.0f} s, written in {build.write_s:.0f} s, "
        f"compacted in {build.compact_s:.0f} s ({build.bytes / 2**20:,.0f} MiB)"
    )
    emit("lake_readings", build.written, "readings", None, "higher", scale)

    lake = Lake.open(node.settings.lake_path())
    engine = DuckDBEngine(lake)
    say(f"detect on DuckDB ... ({machine_load()})")
    timings: dict[str, tuple[float, float]] = {}
    w0, c0 = time.perf_counter(), _cpu_s()
    alerts = detect(node, engine, timings=timings)
    duck_s, duck_cpu = time.perf_counter() - w0, _cpu_s() - c0
    engine.close()
    say(
        f"monitoring on DuckDB: {len(alerts):,} alerts in {duck_s:.1f} s, CPU {duck_cpu:.1f} s "
        f"({machine_load()}); per step (wall, CPU): "
        + ", ".join(f"{k} {w:.1f}/{c:.1f}" for k, (w, c) in timings.items())
    )
    emit("monitoring_duckdb_s", duck_s, "s", round(60.0 * build.written / 1e8, 3), "lower", scale)
    emit(
        "monitoring_duckdb_s_per_1e8_readings",
        duck_s * 1e8 / max(build.written, 1),
        "s",
        60.0,
        "lower",
        scale,
    )
    emit("monitoring_duckdb_cpu_s", duck_cpu, "s", None, "lower", scale)
    for step in STEPS:
        wall, cpu = timings.get(step, (0.0, 0.0))
        name = step if step in DETECTORS else f"{step}_step"
        emit(f"monitoring_duckdb_{name}_s", wall, "s", None, "lower", scale)
        emit(f"monitoring_duckdb_{name}_cpu_s", cpu, "s", None, "lower", scale)
    emit("load_average_1m", os.getloadavg()[0], "load", None, "lower", scale)
    emit("monitoring_alerts", len(alerts), "alerts", None, "higher", scale)
    kinds: dict[str, set[str]] = {}
    for a in alerts:
        kinds.setdefault(a.instrument, set()).add(a.kind)
    found = sum(1 for ins, f in faults.items() if kinds.get(ins, set()) & set(FAULT_ALERTS[f]))
    say(
        f"alerts by kind: {dict(sorted(Counter(a.kind for a in alerts).items()))}; injected "
        f"faults found: {found}/{len(faults)} (by fault: "
        + ", ".join(
            f"{f} {sum(1 for i, g in faults.items() if g == f and kinds.get(i, set()) & set(k))}"
            f"/{sum(1 for g in faults.values() if g == f)}"
            for f, k in FAULT_ALERTS.items()
        )
        + ")"
    )
    emit("synthetic_faults_found", found / max(len(faults), 1), "ratio", None, "higher", scale)

    failed = 0
    if spark:
        spark_engine = _spark_engine(lake)
        if spark_engine is not None:
            try:
                say(f"detect on Spark (local) ... ({machine_load()})")
                jvm0 = _jvm_cpu_s(spark_engine)
                w0, c0 = time.perf_counter(), _cpu_s()
                spark_alerts = detect(node, spark_engine)
                spark_s, py_cpu = time.perf_counter() - w0, _cpu_s() - c0
                jvm1 = _jvm_cpu_s(spark_engine)
            finally:
                spark_engine.close()
            jvm = None if jvm0 is None or jvm1 is None else jvm1 - jvm0
            say(
                f"monitoring on Spark (local): {len(spark_alerts):,} alerts in {spark_s:.1f} s, "
                f"CPU {py_cpu:.1f} s Python + {jvm if jvm is not None else float('nan'):.1f} s "
                f"JVM ({machine_load()})"
            )
            emit("monitoring_spark_local_s", spark_s, "s", None, "lower", scale)
            emit("monitoring_spark_over_duckdb", spark_s / duck_s, "ratio", None, "lower", scale)
            if jvm is not None:
                emit("monitoring_spark_local_cpu_s", py_cpu + jvm, "s", None, "lower", scale)
            if spark_alerts != alerts:
                say("FAIL: Spark and DuckDB alert lists differ")
                failed = 1
    lake.close()
    node.close()
    emit(
        "peak_rss_mib",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "MiB",
        None,
        "lower",
        scale,
    )
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 instruments x 30 days")
    ap.add_argument("--instruments", type=int, default=None)
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument(
        "--synthetic-readings",
        type=int,
        default=None,
        metavar="N",
        help="monitoring alone on a generated lake of about N readings (--days, default 175)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark figure")
    ap.add_argument(
        "--spark-days",
        type=int,
        default=None,
        metavar="D",
        help="Spark (and DuckDB beside it) over the first D simulated days only",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir in /tmp")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="simulate into DIR and keep it; if DIR holds that simulation already, score it "
        "again without simulating",
    )
    args = ap.parse_args()
    if args.synthetic_readings is not None:
        tmp = Path(tempfile.mkdtemp(prefix="metrocloud-services-bench-", dir=args.workdir))
        try:
            return run_synthetic(
                args.synthetic_readings, args.days or 175, tmp, spark=not args.no_spark
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    instruments = args.instruments or (200 if args.quick else 10_000)
    days = args.days or (30 if args.quick else 365)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run(instruments, days, args.seed, args.keep, not args.no_spark, args.spark_days)
    tmp = Path(tempfile.mkdtemp(prefix="metrocloud-services-bench-", dir=args.workdir))
    try:
        return run(instruments, days, args.seed, tmp, not args.no_spark, args.spark_days)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
