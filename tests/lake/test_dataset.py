"""Writing, layout, exactly-once, crashes, maintenance, snapshots, errors."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from metrocloud.domain.errors import Conflict, InvalidInput
from metrocloud.lake import DuckDBEngine, Lake, LakeCorrupt, segment_file_name
from metrocloud.lake.manifest import MANIFEST_NAME

from ._support import T0, expected, grid, table, visible


class Crash(Exception):
    """A simulated process death at a named step."""


def crash_at(step: str, occurrence: int = 1):  # type: ignore[no-untyped-def]
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == occurrence:
                raise Crash(f"{step} #{occurrence}")

    return hook


def files_on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "readings").rglob("*") if p.is_file()}


def live(root: Path) -> set[str]:
    return {f.path for f in Lake.open(root).snapshot().manifest.files()}


# -- write / read / layout ------------------------------------------------------------------


def test_round_trip_and_partition_layout(tmp_path: Path) -> None:
    rows = grid(days=2) + grid(("W9",), days=2, category="MI-001", quantity="8-0:1.0.0")
    with Lake.open(tmp_path, create=True) as lake:
        paths = lake.write_segment("seg-1", table(rows))
    name = segment_file_name("seg-1")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        f"readings/category=MI-001/day=2026-03-01/{name}",
        f"readings/category=MI-001/day=2026-03-02/{name}",
        f"readings/category=MI-003/day=2026-03-01/{name}",
        f"readings/category=MI-003/day=2026-03-02/{name}",
    ]
    assert visible(tmp_path) == expected(rows)
    f = pq.ParquetFile(paths[-1])
    assert "category" not in f.schema_arrow.names and "day" not in f.schema_arrow.names
    assert pa.types.is_dictionary(f.schema_arrow.field("instrument").type)
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    data = f.read()
    keys = list(
        zip(
            data.column("instrument").to_pylist(),
            data.column("quantity").to_pylist(),
            data.column("t").to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)


def test_instrument_and_day_are_validated_and_day_may_be_given(tmp_path: Path) -> None:
    rows = grid(("A1",), days=1)
    t = table(rows)
    t = t.append_column("day", pc.cast(t.column("t"), pa.date32()))
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("s", t.select([0, 1, 10, 2, 3, 4, 5, 6, 7, 8, 9]))
        bad = t.set_column(10, "day", pa.array([date(2020, 1, 1)] * t.num_rows))
        with pytest.raises(InvalidInput, match="'day' disagrees"):
            lake.write_segment("s2", bad)
    assert visible(tmp_path) == expected(rows)


def test_rewriting_a_segment_is_idempotent(tmp_path: Path) -> None:
    rows = grid()
    with Lake.open(tmp_path, create=True) as lake:
        first = lake.write_segment("seg", table(rows))
        version = lake.manifest.version
        again = lake.write_segment("seg", table(rows))
        assert again == first
        assert lake.manifest.version == version
        lake.compact(min_files=2)  # nothing to merge: one file per partition
        lake.write_segment("seg", table(rows))
    assert visible(tmp_path) == expected(rows)


def test_duplicate_readings_inside_a_segment_are_refused(tmp_path: Path) -> None:
    rows = grid(("A1",), days=1)
    with Lake.open(tmp_path, create=True) as lake:
        with pytest.raises(InvalidInput, match=r"more than once.*\(instrument, quantity, t\)"):
            lake.write_segment("dup", table([*rows, rows[5]]))
        assert lake.manifest.files() == ()


def test_one_writer_many_readers(tmp_path: Path) -> None:
    with Lake.open(tmp_path, create=True):
        with pytest.raises(Conflict, match="one writer"):
            Lake.open(tmp_path, writer=True)
        reader = Lake.open(tmp_path)
        with pytest.raises(InvalidInput, match="writer=True"):
            reader.write_segment("x", table(grid()))
    Lake.open(tmp_path, writer=True).close()  # the lock went with the writer


# -- crashes ----------------------------------------------------------------------------------

WRITE_STEPS = [
    ("write.temp", 1),
    ("write.renamed", 1),
    ("write.temp", 3),
    ("write.renamed", 4),
    ("commit.temp", 1),
    ("commit.replaced", 1),
]


@pytest.mark.parametrize(("step", "occurrence"), WRITE_STEPS)
def test_crash_during_write_then_rewrite_is_exactly_once(
    tmp_path: Path, step: str, occurrence: int
) -> None:
    before = grid(("Z0",), days=1)
    rows = grid(days=2) + grid(("W1",), days=2, category="MI-001")  # 4 partitions
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("old", table(before))
    lake = Lake.open(tmp_path, writer=True, on_step=crash_at(step, occurrence))
    with pytest.raises(Crash):
        lake.write_segment("seg", table(rows))
    lake.close()  # the process died
    committed = step == "commit.replaced"
    assert visible(tmp_path) == expected(before + rows if committed else before)
    with Lake.open(tmp_path, writer=True) as lake:  # the ingest replays the segment
        lake.write_segment("seg", table(rows))
        lake.vacuum()
    assert visible(tmp_path) == expected(before + rows)
    assert files_on_disk(tmp_path) == live(tmp_path)
    assert not (tmp_path / f".{MANIFEST_NAME}.tmp").exists()


COMPACT_STEPS = [
    ("write.temp", 1),
    ("write.renamed", 1),
    ("compact.written", 1),
    ("commit.temp", 1),
    ("commit.replaced", 1),
    ("compact.committed", 1),
    ("compact.written", 2),
    ("vacuum.deleted", 1),
    ("vacuum.deleted", 3),
]


@pytest.mark.parametrize(("step", "occurrence"), COMPACT_STEPS)
def test_crash_during_compaction_keeps_old_or_new_set(
    tmp_path: Path, step: str, occurrence: int
) -> None:
    rows = grid(days=2)
    with Lake.open(tmp_path, create=True) as lake:
        for n, part in enumerate((rows[0::3], rows[1::3], rows[2::3])):
            lake.write_segment(f"seg-{n}", table(part))
    want = expected(rows)
    lake = Lake.open(tmp_path, writer=True, on_step=crash_at(step, occurrence))
    with pytest.raises(Crash):
        lake.compact()
    lake.close()
    assert visible(tmp_path) == want  # never both sets, never neither
    with Lake.open(tmp_path, writer=True) as lake:
        lake.compact()
        lake.vacuum()
        assert len(lake.manifest.files()) == 2  # one per partition
        for n, part in enumerate((rows[0::3], rows[1::3], rows[2::3])):
            assert lake.write_segment(f"seg-{n}", table(part)) == []  # merged away, still once
    assert visible(tmp_path) == want
    assert files_on_disk(tmp_path) == live(tmp_path)


def test_compaction_keeps_exactly_the_same_rows(tmp_path: Path) -> None:
    rows = grid(days=3) + grid(("G1", "G2"), days=3, category="MI-002", quantity="7-0:3.0.0")
    with Lake.open(tmp_path, create=True) as lake:
        for n in range(5):
            lake.write_segment(f"s{n}", table(rows[n::5]))
        full_before = Lake.open(tmp_path).snapshot()
        with DuckDBEngine(full_before, threads=1) as e:
            before = e.sql("SELECT * FROM readings ORDER BY instrument, quantity, t")
        report = lake.compact(max_rows=40)
        assert report.partitions == 6 and report.files_before == 30 and report.rows == len(rows)
    with DuckDBEngine(Lake.open(tmp_path), threads=1) as e:
        after = e.sql("SELECT * FROM readings ORDER BY instrument, quantity, t")
        assert e.snapshot.rows() == len(rows)
    assert after.equals(before)
    for f in (tmp_path / "readings").rglob("*.parquet"):
        assert pq.ParquetFile(f).metadata.num_rows <= 40


# -- retention --------------------------------------------------------------------------------


def test_retention_drops_old_partitions_and_keeps_them_dropped(tmp_path: Path) -> None:
    elec = grid(days=5)
    water = grid(("W1",), days=5, category="MI-001", quantity="8-0:1.0.0")
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("e", table(elec))
        lake.write_segment("w", table(water))
        report = lake.retain(2, category="MI-003", today=date(2026, 3, 5))
        assert report.cutoff == date(2026, 3, 3) and report.partitions == 2
        assert visible(tmp_path) == expected(
            [r for r in elec if r[2].date() >= date(2026, 3, 3)] + water
        )
        assert files_on_disk(tmp_path) == live(tmp_path)
        lake.retain(1, today=date(2026, 3, 5))  # all categories
        kept = [r for r in elec + water if r[2].date() >= date(2026, 3, 4)]
        assert visible(tmp_path) == expected(kept)
        # an old segment replayed after retention cannot bring old days back
        old = grid(("OLD",), days=2)
        lake.write_segment("late", table(old))
        assert visible(tmp_path) == expected(kept)
        assert "late" in lake.manifest.segments
        lake.retain(0, today=date(2026, 3, 10))
        assert visible(tmp_path) == []
        assert lake.manifest.segments == {}  # nothing left to guard


# -- snapshots --------------------------------------------------------------------------------


def test_readers_keep_their_snapshot_until_refresh(tmp_path: Path) -> None:
    first, second = grid(("A1",), days=2), grid(("B1",), days=2)
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("1", table(first))
        reader = DuckDBEngine(Lake.open(tmp_path), threads=1)
        v1 = reader.version
        lake.write_segment("2", table(second))
        count = "SELECT count(*) AS n FROM readings"
        assert reader.sql(count).column("n")[0].as_py() == len(first)
        # compaction with a grace keeps the old snapshot's files readable
        lake.write_segment("3", table(grid(("A1",), days=2, quantity="2-8-0")))
        lake.compact(grace=timedelta(hours=1))
        assert reader.sql(count).column("n")[0].as_py() == len(first)
        assert reader.refresh() > v1
        assert reader.sql(count).column("n")[0].as_py() == 3 * len(first)
        reader.close()
        # past the grace, vacuum deletes what no manifest lists
        retired = {r.path for r in lake.manifest.retired}
        assert retired and retired <= files_on_disk(tmp_path)
        lake.vacuum(grace=timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2))
        assert files_on_disk(tmp_path) == live(tmp_path)
        assert lake.manifest.retired == ()


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["quantity"]), "column 'quantity' is missing"),
        (
            lambda t: t.set_column(4, "value", pa.array(["x"] * t.num_rows)),
            "column 'value' has type string, expected double",
        ),
        (
            lambda t: t.set_column(2, "t", t.column("t").cast(pa.timestamp("ms"))),
            "column 't' has type timestamp",
        ),
        (
            lambda t: t.append_column("colour", pa.array(["red"] * t.num_rows)),
            r"unexpected column\(s\) \['colour'\]",
        ),
        (
            lambda t: t.set_column(0, "instrument", pa.array([None] * t.num_rows, pa.string())),
            "column 'instrument' has .* null",
        ),
        (
            lambda t: t.set_column(1, "category", pa.array(["MI-999"] * t.num_rows)),
            r"column 'category' holds unknown code\(s\) \['MI-999'\]",
        ),
        (
            lambda t: t.set_column(6, "status", pa.array([2**40] * t.num_rows, pa.int64())),
            "column 'status' .* does not convert to int32",
        ),
    ],
)
def test_a_wrong_schema_is_invalid_input_naming_the_column(
    tmp_path: Path, mutate: object, message: str
) -> None:
    with Lake.open(tmp_path, create=True) as lake:
        with pytest.raises(InvalidInput, match=message):
            lake.write_segment("bad", mutate(table(grid(("A",), days=1))))  # type: ignore[operator]
        assert lake.manifest.files() == () and lake.manifest.segments == {}


def test_compatible_types_are_accepted(tmp_path: Path) -> None:
    rows = grid(("A1", "B1"), days=1)
    t = table(rows)
    t = t.set_column(0, "instrument", pc.dictionary_encode(t.column("instrument")))
    t = t.set_column(2, "t", t.column("t").cast(pa.timestamp("us", tz="UTC")))
    t = t.set_column(6, "status", t.column("status").cast(pa.int8()))
    with Lake.open(tmp_path, create=True) as lake:
        lake.write_segment("ok", t)
    assert visible(tmp_path) == expected(rows)


def _corrupt_cases(root: Path) -> None:
    with Lake.open(root, create=True) as lake:
        lake.write_segment("s", table(grid(("A",), days=1)))


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    _corrupt_cases(tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    good = manifest.read_bytes()

    manifest.write_bytes(good[: len(good) // 2])
    with pytest.raises(LakeCorrupt, match=r"manifest .* is corrupt: not JSON"):
        Lake.open(tmp_path)
    with pytest.raises(LakeCorrupt):
        Lake.open(tmp_path, create=True)  # never re-created over a damaged one

    doc = json.loads(good)
    doc["datasets"]["readings"][0]["rows"] += 1
    manifest.write_text(json.dumps(doc))
    with pytest.raises(LakeCorrupt, match="checksum"):
        Lake.open(tmp_path)

    manifest.write_bytes(good)
    listed = tmp_path / doc["datasets"]["readings"][0]["path"]
    os.rename(listed, listed.with_suffix(".moved"))
    with pytest.raises(LakeCorrupt, match="does not exist"):
        Lake.open(tmp_path)
    os.rename(listed.with_suffix(".moved"), listed)

    manifest.unlink()
    with pytest.raises(LakeCorrupt, match="not a lake"):
        Lake.open(tmp_path)
    with pytest.raises(LakeCorrupt, match="manifest was lost"):
        Lake.open(tmp_path, create=True)


def test_bad_segment_ids_are_refused(tmp_path: Path) -> None:
    with Lake.open(tmp_path, create=True) as lake:
        for bad in ("", "x" * 201, "a\nb"):
            with pytest.raises(InvalidInput, match="segment id"):
                lake.write_segment(bad, table(grid(("A",), days=1)))
        assert segment_file_name("a/b c") != segment_file_name("a_b c")
        assert lake.write_segment("empty", table([])) == []
        assert "empty" in lake.manifest.segments


def test_time_of_t0() -> None:
    assert T0.tzinfo is UTC
