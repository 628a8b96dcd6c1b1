"""``metrocloud lake stats``, ``compact``, ``retain`` and ``vacuum`` on a real lake: what they
print is what the manifest holds; the writing ones are refused (exit 1, one line) while
another handle holds the writer lock; bad input is one line on stderr, exit 2."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from metrocloud.cli import app, out
from metrocloud.lake import Lake
from metrocloud.lake.schema import FILE_SCHEMA
from tests.lake._support import table

runner = CliRunner()
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (12, 11, 1)]


def _readings(day: date, category: str, offset: int) -> pa.Table:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return table(
        (ins, category, start + timedelta(minutes=10 * (k + offset)), "1-0:1.8.0", k + offset)
        for ins in ("A1", "B2")
        for k in range(5)
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A node's data directory whose lake holds three segments per day: MI-003 on three
    days, MI-001 on the last one."""
    with Lake.open(tmp_path / "lake", create=True) as lake:
        for k in range(3):
            for d in DAYS:
                lake.write_segment(f"e-{d}-{k}", _readings(d, "MI-003", 10 * k))
            lake.write_segment(f"w-{k}", _readings(DAYS[-1], "MI-001", 10 * k))
    return tmp_path


def run(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    width = out._width
    out._width = 200
    try:
        result = runner.invoke(
            app, ["lake", *args, "--data-dir", str(data_dir)], env={"COLUMNS": "200", **env}
        )
    finally:
        out._width = width
    return result.exit_code, result.stdout, result.stderr


def _content(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in Lake.open(root).manifest.files():
        part = pq.read_table(root / f.path, schema=FILE_SCHEMA)
        part = part.set_column(0, "instrument", part.column("instrument").cast(pa.string()))
        rows += [{**r, "category": f.category, "day": f.day} for r in part.to_pylist()]
    return sorted(rows, key=lambda r: (r["category"], r["day"], r["instrument"], r["t"]))


def _stats(data_dir: Path) -> dict[str, dict[str, Any]]:
    code, stdout, stderr = run(data_dir, "stats", "--json")
    assert code == 0, stderr
    return {s["category"]: s for s in map(json.loads, stdout.splitlines())}


def test_stats_counts_partitions_files_rows_and_bytes_per_category(data_dir: Path) -> None:
    stats = _stats(data_dir)
    files = Lake.open(data_dir / "lake").manifest.files()
    assert stats == {
        "MI-001": {
            "category": "MI-001",
            "partitions": 1,
            "files": 3,
            "rows": 30,
            "bytes": sum(f.bytes for f in files if f.category == "MI-001"),
            "files_per_partition_max": 3,
            "files_per_partition_median": 3.0,
            "first_day": DAYS[-1].isoformat(),
            "last_day": DAYS[-1].isoformat(),
        },
        "MI-003": {
            "category": "MI-003",
            "partitions": 3,
            "files": 9,
            "rows": 90,
            "bytes": sum(f.bytes for f in files if f.category == "MI-003"),
            "files_per_partition_max": 3,
            "files_per_partition_median": 3.0,
            "first_day": DAYS[0].isoformat(),
            "last_day": DAYS[-1].isoformat(),
        },
    }
    code, stdout, _ = run(data_dir, "stats")
    assert code == 0
    lines = [line for line in stdout.splitlines() if "MI-00" in line]
    assert len(lines) == 2 and "MI-001" in lines[0] and "MI-003" in lines[1]
    assert lines[1].split() == [
        "MI-003",
        "3",
        "9",
        "3",
        "3",
        "90",
        "0.0",
        str(DAYS[0]),
        str(DAYS[-1]),
    ]


def test_stats_reads_while_a_writer_holds_the_lock(data_dir: Path) -> None:
    with Lake.open(data_dir / "lake", writer=True):
        assert _stats(data_dir)["MI-003"]["files"] == 9


@pytest.mark.parametrize(
    "args",
    [("compact",), ("vacuum",), ("retain", "--keep-days", "500")],
    ids=["compact", "vacuum", "retain"],
)
def test_the_writing_commands_are_refused_while_a_node_holds_the_lock(
    data_dir: Path, args: tuple[str, ...]
) -> None:
    before = Lake.open(data_dir / "lake").manifest
    with Lake.open(data_dir / "lake", writer=True):
        code, stdout, stderr = run(data_dir, *args, METROCLOUD_LAKE_COMPACT_INTERVAL_S="600")
    assert code == 1 and stdout == ""
    message = " ".join(stderr.split())
    assert "the lake's writer is a running node (it compacts every 600 s); stop it or wait" in (
        message
    )
    assert len(stderr.strip().splitlines()) == 1
    assert Lake.open(data_dir / "lake").manifest == before


def test_compact_merges_every_partition_keeping_every_row(data_dir: Path) -> None:
    root = data_dir / "lake"
    before = _content(root)
    code, stdout, stderr = run(data_dir, "compact")
    assert code == 0, stderr
    assert "compacted 4 partition(s): 12 files into 4, 120 rows" in stdout
    assert "compact" in stderr  # the progress bar
    assert _content(root) == before
    assert {s["files_per_partition_max"] for s in _stats(data_dir).values()} == {1}
    # the replaced files are gone (no node: no reader to wait for)
    assert len(list((root / "readings").rglob("*.parquet"))) == 4
    code, stdout, _ = run(data_dir, "compact")
    assert code == 0 and "compacted 0 partition(s)" in stdout


def test_compact_min_files_leaves_smaller_partitions(data_dir: Path) -> None:
    root = data_dir / "lake"
    with Lake.open(root, writer=True) as lake:
        lake.write_segment("extra", _readings(DAYS[0], "MI-003", 100))
    code, stdout, stderr = run(data_dir, "compact", "--min-files", "4")
    assert code == 0, stderr
    assert "compacted 1 partition(s): 4 files into 1, 40 rows" in stdout
    assert _stats(data_dir)["MI-003"]["files"] == 1 + 3 + 3


def test_retain_drops_the_old_days_only(data_dir: Path) -> None:
    root = data_dir / "lake"
    before = _content(root)
    code, stdout, stderr = run(
        data_dir, "retain", "--keep-days", "11", METROCLOUD_INTAKE_MAX_AGE_DAYS="10"
    )
    assert code == 0, stderr
    assert f"kept every category from {DAYS[1]} on: dropped 1 partition(s), 30 rows" in stdout
    assert _content(root) == [r for r in before if r["day"] != DAYS[0].isoformat()]
    code, stdout, stderr = run(
        data_dir,
        "retain",
        "--keep-days",
        "2",
        "--category",
        "MI-003",
        METROCLOUD_INTAKE_MAX_AGE_DAYS="1",
    )
    assert code == 0, stderr
    assert "dropped 1 partition(s), 30 rows" in stdout
    assert {(r["category"], r["day"]) for r in _content(root)} == {
        ("MI-003", DAYS[-1].isoformat()),
        ("MI-001", DAYS[-1].isoformat()),
    }


def test_vacuum_deletes_what_the_manifest_no_longer_lists(data_dir: Path) -> None:
    root = data_dir / "lake"
    with Lake.open(root, writer=True) as lake:
        lake.compact(grace=timedelta(hours=1))  # as a node does: retired files wait
        assert len(lake.manifest.retired) == 12
    stray = root / "readings" / "category=MI-003" / f"day={DAYS[0]}" / ".leftover.tmp-1"
    stray.write_bytes(b"half a file")
    code, stdout, stderr = run(data_dir, "vacuum")
    assert code == 0, stderr
    assert "deleted 13 file(s)" in stdout
    assert Lake.open(root).manifest.retired == ()
    assert len(list((root / "readings").rglob("*"))) == 4 + 2 + 4  # files, categories, days


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("compact", "--min-files", "1"), {}, "--min-files must be 2 or more, got 1"),
        (("retain", "--keep-days", "30"), {}, "--keep-days 30 must exceed the intake's"),
        (
            ("retain", "--keep-days", "500", "--category", "MI-999"),
            {},
            "--category 'MI-999' is not a category",
        ),
        (
            ("stats",),
            {"METROCLOUD_LAKE_RETENTION_DAYS": "7"},
            "invalid settings: lake_retention_days (7) must exceed",
        ),
    ],
    ids=["min-files", "keep-days", "category", "setting"],
)
def test_bad_input_is_one_line_exit_2(
    data_dir: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    before = Lake.open(data_dir / "lake").manifest
    code, stdout, stderr = run(data_dir, *args, **env)
    assert code == 2 and stdout == ""
    assert says in " ".join(stderr.split())
    assert stderr.count("error:") == 1
    assert Lake.open(data_dir / "lake").manifest == before


@pytest.mark.parametrize("command", ["stats", "compact", "vacuum"])
def test_no_lake_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    code, stdout, stderr = run(tmp_path, command)
    assert code == 2 and stdout == ""
    assert f"no lake at {tmp_path / 'lake'}" in " ".join(stderr.split())
    assert not (tmp_path / "lake").exists()  # nothing created
