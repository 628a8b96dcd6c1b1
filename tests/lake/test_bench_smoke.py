"""bench/_lake.py keeps working (tiny scale; the real figures come from bench/lake.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "_lake.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_lake_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_fleet_aggregates_returns_the_figures(tmp_path: Path) -> None:
    figures = _load().run_fleet_aggregates(20_000, tmp_path, rounds=1)
    by_name = {f["name"]: f for f in figures}
    assert {"lake_fleet_aggregate_s", "direct_duckdb_s", "lake_vs_direct_ratio"} <= set(by_name)
    assert by_name["lake_vs_direct_ratio"]["target"] == 1.5
    assert by_name["peak_rss_mib"]["target"] == 4096
    assert all(set(f) == {"name", "value", "unit", "target", "better", "scale"} for f in figures)


def test_the_synthetic_monitoring_fleet_has_the_simulators_mix(tmp_path: Path) -> None:
    from rich.console import Console

    from metrocloud.lake import DuckDBEngine, Lake

    bench = _load()
    ids = [f"ins-{i:03d}" for i in range(40)]
    build, faults = bench.write_fleet_lake(tmp_path / "lake", ids, 6, tmp_path, Console(quiet=True))
    assert abs(build.written - bench.FLEET_READINGS_PER_DAY * 40 * 6) < 0.1 * build.written
    assert build.files == build.partitions  # compacted: one file per partition
    assert set(faults) <= set(ids)
    with DuckDBEngine(Lake.open(tmp_path / "lake"), threads=1) as engine:
        got = engine.sql(
            "SELECT category, quantity, count(DISTINCT instrument) AS n FROM readings "
            "GROUP BY ALL ORDER BY ALL"
        ).to_pylist()
    counts = {(r["category"], r["quantity"]): r["n"] for r in got}
    registers = {(c, q): n for (c, q), n in counts.items() if not q.endswith("*ref")}
    # 40 % electricity, 20 % gas, 20 % water, 10 % fuel, 10 % EV; a quarter with a reference
    assert registers == {
        ("MI-003", "1-0:1.8.0"): 16,
        ("MI-002", "7-0:3.0.0"): 8,
        ("MI-001", "8-0:1.0.0"): 8,
        ("MI-005", "V-tot"): 4,
        ("DE-EV", "1-0:1.8.0"): 4,
    }
    assert 0 < sum(n for (c, q), n in counts.items() if q.endswith("*ref")) < 40
