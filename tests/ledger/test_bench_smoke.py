"""bench/_ledger.py keeps working (tiny sizes; the real figures come from the bench runner)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "_ledger.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ledger_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_functions_return_figures() -> None:
    bench = _load()
    assert bench.bench_append(3_000, 1_000) > 0
    median, p99 = bench.bench_inclusion(2_000, 50)
    assert 0 < median <= p99
