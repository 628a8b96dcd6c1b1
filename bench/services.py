"""Data-driven services against ground truth (issue #5): prints one JSON line per figure.

    python bench/services.py            # sim --instruments 10000 --days 365 --seed 1 (long)
    python bench/services.py --quick    # 200 instruments x 30 days, the same code, ~1 minute
    python bench/services.py --instruments N --days D [--no-spark]

1. A fleet is simulated on a fresh node through the real intake into the lake
   (:func:`metrocloud.sim.run_simulation`, labels beside it).
2. Monitoring (:func:`metrocloud.services.monitoring.detect`) runs over the whole lake on
   DuckDB, timed (target: 60 s over 10^8 readings), then, unless ``--no-spark`` or pyspark is
   missing, on Apache Spark in local mode over the same files: its time is printed beside
   DuckDB's and the two alert lists must be identical (the benchmark fails otherwise).
3. The alerts are scored against the labels: recall and precision over faults (stuck
   register, clock drift, counter reset, reverse flow) and over tampering (broken seal,
   unapproved software, under-registration); targets 0.95 and 0.90.
4. Maintenance (:func:`metrocloud.services.maintenance.plan_maintenance`): the share of
   drifting instruments (with a reference meter, the others have no drift signal in the lake)
   whose predicted MPE crossing lies within +-30 days of the label (target 0.80).

The simulation's own throughput is printed too (readings/s through the intake), as the
context of the figures; it has no target here (bench/ingest.py measures the intake).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FAULTS = ("stuck_register", "clock_drift", "counter_reset", "reverse_flow")
TAMPERING = ("seal_broken", "unapproved_software", "under_registration")


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


def _spark_engine(lake: Any) -> Any | None:
    try:
        from metrocloud.lake.spark_engine import SparkEngine
    except ImportError as exc:  # the engine or pyspark is not installed
        say(f"spark: not measured ({exc})")
        return None
    return SparkEngine(lake)


def run(instruments: int, days: int, seed: int, workdir: Path, spark: bool) -> int:
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
    start = datetime.now(UTC).date() - timedelta(days=days + 1)
    say(f"simulating {scale} ...")
    result = run_simulation(
        node, SimConfig(instruments=instruments, days=days, seed=seed, start=start)
    )
    say(
        f"simulated: {result.readings_accepted:,} readings accepted, {result.lake_rows:,} lake "
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
    emit("lake_readings", result.lake_rows, "readings", None, "higher", scale)
    labels = pq.read_table(result.labels).to_pylist()

    lake = Lake.open(node.settings.lake_path())
    engine = DuckDBEngine(lake)
    t0 = time.perf_counter()
    alerts = detect(node, engine)
    duck_s = time.perf_counter() - t0
    say(f"monitoring on DuckDB: {len(alerts):,} alerts in {duck_s:,.1f} s")
    # the target is 60 s over 10^8 readings: scaled linearly to the lake's size
    target_s = 60.0 * max(result.lake_rows, 1) / 1e8
    emit("monitoring_duckdb_s", duck_s, "s", round(target_s, 3), "lower", scale)
    emit(
        "monitoring_duckdb_s_per_1e8_readings",
        duck_s * 1e8 / max(result.lake_rows, 1),
        "s",
        60.0,
        "lower",
        scale,
    )

    failed = 0
    if spark:
        spark_engine = _spark_engine(lake)
        if spark_engine is not None:
            try:
                t0 = time.perf_counter()
                spark_alerts = detect(node, spark_engine)
                spark_s = time.perf_counter() - t0
            finally:
                spark_engine.close()
            say(f"monitoring on Spark (local): {len(spark_alerts):,} alerts in {spark_s:,.1f} s")
            emit("monitoring_spark_local_s", spark_s, "s", None, "lower", scale)
            emit("monitoring_spark_over_duckdb", spark_s / duck_s, "ratio", None, "lower", scale)
            if spark_alerts != alerts:
                say("FAIL: Spark and DuckDB alert lists differ")
                failed = 1

    scores = score_alerts(alerts, labels)
    for group, kinds in (("faults", FAULTS), ("tampering", TAMPERING)):
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 instruments x 30 days")
    ap.add_argument("--instruments", type=int, default=None)
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark figure")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir in /tmp")
    args = ap.parse_args()
    instruments = args.instruments or (200 if args.quick else 10_000)
    days = args.days or (30 if args.quick else 365)
    tmp = Path(tempfile.mkdtemp(prefix="metrocloud-services-bench-", dir=args.workdir))
    try:
        return run(instruments, days, args.seed, tmp, spark=not args.no_spark)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
