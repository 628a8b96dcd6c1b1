"""Lake benchmark (issue figure c): prints one JSON line per figure.

    python bench/lake.py                 # 10^8 readings (about 10 minutes, a few GB in /tmp)
    python bench/lake.py --quick         # 10^6 readings, the same code, under a minute
    python bench/lake.py --readings N    # any scale

A fleet aggregate through the lake layer (daily consumption per instrument, and counter
regressions and gaps) against the same two queries hand-written in DuckDB SQL over the same
Parquet files, in the same run: the ratio must stay within 1.5, the process's peak RSS within
4 GiB throughout (generation included). Exits non-zero if the two answers differ.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lake import ResultMismatch, run_fleet_aggregates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^6 readings, under a minute")
    ap.add_argument("--readings", type=int, default=None, help="readings to synthesize")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds; the best counts")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir in /tmp")
    args = ap.parse_args()
    readings = args.readings or (1_000_000 if args.quick else 100_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="metrocloud-lake-bench-", dir=args.workdir))
    try:
        figures = run_fleet_aggregates(readings, tmp, rounds=args.rounds)
    except ResultMismatch as exc:
        print(f"lake and direct results differ: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in figures:
        print(json.dumps(f), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
