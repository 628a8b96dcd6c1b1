"""The lake flusher's columns: the readings a JSON decoder finds in the stored payloads;
the intake rounds the payloads are stored in.

The flusher slices a canonical payload's fields with a regular expression, parses the
numbers of many batches at once and computes the day column without a time zone lookup;
the table it builds must be exactly the one the plain definitions give (JSON, the UTC date
of each reading), at any time a reading may carry.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metrocloud.formats.batches import GENESIS_PREV, MAX_STATUS
from metrocloud.ingest import flusher as module
from metrocloud.ingest.rounds import join_round, split_round
from metrocloud.trust.canonical import canonical_json

SAFE = 2**53 - 1
#: the latest time Python's datetime holds (the end of year 9999), for the reference below
LAST_MS = 253_402_300_799_999
_Row = namedtuple("_Row", "category received_at key_id")

hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
text = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters='"\\'),
    min_size=1,
    max_size=8,
)


@st.composite
def payloads(draw: st.DrawFn, last_t: int = SAFE) -> bytes:
    n = draw(st.integers(min_value=1, max_value=12))
    t = sorted(draw(st.sets(st.integers(0, last_t), min_size=n, max_size=n)))
    counter = draw(st.integers(min_value=1, max_value=SAFE))
    return canonical_json(
        {
            "v": 1,
            "instrument": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)),
            "key": draw(hex64),
            "counter": counter,
            "prev": GENESIS_PREV if counter == 1 else draw(hex64),
            "software": draw(hex64),
            "quantity": draw(text),
            "unit": draw(text),
            "t": t,
            "value": draw(
                st.lists(
                    st.one_of(st.integers(-SAFE, SAFE), st.floats(-SAFE, SAFE)),
                    min_size=n,
                    max_size=n,
                )
            ),
            "status": draw(st.lists(st.integers(0, MAX_STATUS), min_size=n, max_size=n)),
        }
    )


def _reference_rows(docs: list[dict[str, Any]], rows: list[_Row]) -> list[dict[str, Any]]:
    out = []
    for doc, row in zip(docs, rows, strict=True):
        ingested = datetime.fromisoformat(row.received_at.replace("Z", "+00:00"))
        for seq, (t, value, status) in enumerate(
            zip(doc["t"], doc["value"], doc["status"], strict=True)
        ):
            at = datetime.fromtimestamp(t / 1000, UTC)
            at = at.replace(microsecond=t % 1000 * 1000)  # exact milliseconds
            out.append(
                {
                    "instrument": doc["instrument"],
                    "category": row.category,
                    "day": at.date(),
                    "t": at,
                    "quantity": doc["quantity"],
                    "value": float(value),
                    "unit": doc["unit"],
                    "status": status,
                    "batch_counter": doc["counter"],
                    "seq": seq,
                    "ingested_at": ingested,
                }
            )
    return out


@settings(max_examples=100)
@given(batch=st.lists(payloads(last_t=LAST_MS), min_size=1, max_size=6))
def test_the_columns_of_canonical_payloads_are_the_readings_json_holds(batch: list[bytes]) -> None:
    rows = [
        _Row("MI-003", f"2026-01-0{1 + i % 2}T10:00:00.{i:03d}Z", f"key-{i}")
        for i in range(len(batch))
    ]
    decoded = [(row, p, module._CANONICAL.fullmatch(p)) for row, p in zip(rows, batch, strict=True)]
    assert all(m is not None for _, _, m in decoded)  # the fast decoder's layout
    columns = module._columns([(row, p, m.groups()) for row, p, m in decoded])  # type: ignore[union-attr]
    got = pa.table(columns.arrays).to_pylist()
    assert got == _reference_rows([orjson.loads(p) for p in batch], rows)
    assert columns.arrays["day"].type == pa.date32()
    assert columns.arrays["t"].type == pa.timestamp("ms", tz="UTC")


@settings(max_examples=200)
@given(st.lists(st.integers(0, SAFE), min_size=1, max_size=50))
@example([0, 86_399_999, 86_400_000, LAST_MS, LAST_MS + 1, SAFE])
def test_the_day_is_the_utc_date_at_any_time(times: list[int]) -> None:
    t = pa.array(times, pa.int64())
    by_zone = t.cast(module._UTC_MS).cast(pa.date32())
    assert t.cast(module._NAIVE_MS).cast(pa.date32()).equals(by_zone)
    assert by_zone.cast(pa.int32()).to_pylist() == [x // 86_400_000 for x in times]


@given(st.lists(st.binary(max_size=600), max_size=40))
def test_a_round_gives_back_exactly_the_lines_joined_into_it(lines: list[bytes]) -> None:
    """Any bytes, newlines and empty lines included (an OCMF record may span lines)."""
    data = join_round(lines)
    assert split_round(data) == lines
    if data:
        with pytest.raises(ValueError, match="end inside"):
            split_round(data[:-1])
