"""bench/ingest.py keeps working: the same code as ``--quick`` at a tiny scale (a real node,
senders, ceilings), printing one well-formed JSON line per figure. Figure (c) comes from
bench/_lake.py, whose own smoke test is tests/lake/test_bench_smoke.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest.py"
KEYS = {"name", "value", "unit", "target", "better", "scale"}


def test_the_ingest_benchmark_prints_its_figures(tmp_path: Path) -> None:
    args = ["--single", "12", "2", "--batched", "6", "2", "--lake-readings", "0"]
    args += ["--ceiling-limit", "48", "--connections", "2", "--senders", "1", "--repeat", "1"]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert figures and all(set(f) == KEYS for f in figures)
    assert all(f["better"] in ("higher", "lower") for f in figures)
    assert all(isinstance(f["value"], int | float) and f["value"] >= 0 for f in figures)
    by_name = {f["name"]: f for f in figures}
    assert by_name["p256_single_intake_vs_raw_verify"]["target"] == 0.7
    assert by_name["batch96_e2e_readings_per_s"]["target"] == 500_000
    assert by_name["node_peak_rss_mib"]["target"] == 4096
    assert by_name["p256_single_raw_verify_ceiling"]["value"] > 0
    assert by_name["batch96_raw_pipeline_ceiling"]["value"] > 0
    assert list(tmp_path.iterdir()) == []  # the work directory is removed
