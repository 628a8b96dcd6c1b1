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
