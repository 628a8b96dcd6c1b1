"""The checks of an evidence bundle that read its contents: what the statements are about,
the readings extract, and the timeline. Pure functions over parsed members; each raises
:class:`~metrocloud.domain.errors.VerificationError` with the evidence, or returns a one-line
summary of what held.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrocloud.domain.errors import VerificationError
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "BUNDLE_RULE",
    "EXTRACT_SCHEMA",
    "KEY_COLUMNS",
    "check_concern",
    "check_extract",
    "check_timeline",
    "parse_json",
    "summarize_readings",
]

BUNDLE_RULE: Final = "metrocloud evidence bundle v1 (docs/forensics.md)"
_TS = pa.timestamp("ms", tz="UTC")

#: the readings extract of a v1 bundle: the lake's readings of one instrument (docs/lake.md)
EXTRACT_SCHEMA: Final = pa.schema(
    [
        ("instrument", pa.string()),
        ("category", pa.string()),
        ("day", pa.date32()),
        ("t", _TS),
        ("quantity", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("status", pa.int32()),
        ("batch_counter", pa.int64()),
        ("seq", pa.int32()),
        ("ingested_at", _TS),
    ]
)
#: columns of the extract that may hold no null
KEY_COLUMNS: Final = ("instrument", "category", "day", "t", "quantity", "value")

_CERTIFICATE_CHANGES = frozenset(
    {
        "certificate.revised",
        "certificate.suspended",
        "certificate.reinstated",
        "certificate.withdrawn",
    }
)


def _fail(message: str, rule: str = BUNDLE_RULE) -> VerificationError:
    return VerificationError(message, rule=rule)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key(s) {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def parse_json(raw: bytes, what: str) -> Any:
    """Parse a member that must be RFC 8785 canonical JSON (so it has one byte form only)."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
        canonical = canonical_json(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(f"{what} is not JSON: {exc}", "RFC 8259") from None
    except Exception as exc:  # canonical_json refuses what JCS cannot encode (InvalidInput)
        raise _fail(f"{what} cannot be canonicalized: {exc}", "RFC 8785 §3.2") from None
    if canonical != raw:
        raise _fail(f"{what} is not in canonical form (RFC 8785)", "RFC 8785 §3.2")
    return value


def _at(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


# -- (8) the statements concern the instrument ------------------------------------------------


def _lists(items: Any, instrument_id: str) -> Mapping[str, Any] | None:
    if not isinstance(items, list):
        return None
    for item in items:
        if isinstance(item, Mapping) and item.get("id") == instrument_id:
            return item
    return None


def check_concern(instrument_id: str, payloads: Mapping[int, Mapping[str, Any]]) -> str:
    """Every statement is the instrument's registration, one of its events or declarations,
    a statement on its certificate, or the admission of a party that signed one of those;
    the registration and the certificate's issue are there."""
    registrations = [
        leaf
        for leaf, p in payloads.items()
        if p.get("kind") == "instruments.registered"
        and _lists(_at(p, "body", "instruments"), instrument_id) is not None
    ]
    if len(registrations) != 1:
        raise _fail(
            f"expected exactly one instruments.registered statement listing {instrument_id}, "
            f"found {len(registrations)} (leaves {registrations})"
        )
    item = _lists(_at(payloads[registrations[0]], "body", "instruments"), instrument_id)
    certificate_id = item.get("certificate_id") if item else None
    counts: dict[str, int] = {}
    signers: set[str] = set()
    admitted: dict[str, int] = {}
    for leaf, p in sorted(payloads.items()):
        kind = p.get("kind")
        body = p.get("body")
        if kind == "party.admitted":
            party = _at(body, "party", "id")
            if not isinstance(party, str) or party in admitted:
                raise _fail(f"statement at leaf {leaf} admits party {party!r} twice or no party")
            admitted[party] = leaf
            continue
        if kind == "instruments.registered":
            ok = leaf in registrations
        elif kind == "instrument.event":
            ok = _at(body, "event", "instrument_id") == instrument_id
        elif kind == "conformity.declared":
            ids = _at(body, "declaration", "instrument_ids")
            ok = isinstance(ids, list) and instrument_id in ids
        elif kind == "certificate.issued":
            ok = _at(body, "certificate", "id") == certificate_id
        elif kind in _CERTIFICATE_CHANGES:
            ok = _at(body, "certificate_id") == certificate_id
        else:
            raise _fail(
                f"statement at leaf {leaf} is of kind {kind!r}, which a v1 bundle holds not"
            )
        if not ok:
            raise _fail(
                f"statement at leaf {leaf} ({kind}) is not about instrument {instrument_id} "
                f"or its certificate {certificate_id}"
            )
        counts[str(kind)] = counts.get(str(kind), 0) + 1
        signer = p.get("signer")
        if isinstance(signer, str):
            signers.add(signer)
    if counts.get("certificate.issued") != 1:
        raise _fail(
            f"expected the issue of certificate {certificate_id} once, found "
            f"{counts.get('certificate.issued', 0)} certificate.issued statement(s)"
        )
    if set(admitted) != signers:
        missing = sorted(signers - set(admitted))
        extra = sorted(set(admitted) - signers)
        raise _fail(
            f"party admissions do not match the signers: missing {missing}, not signers {extra}"
        )
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{parts}; {len(admitted)} signing parties admitted"


# -- (9) the readings extract -----------------------------------------------------------------


def check_extract(
    data: bytes, instrument_id: str, start: datetime | None, end: datetime | None, rows: int
) -> pa.Table:
    """The Parquet extract: parses, has :data:`EXTRACT_SCHEMA`, ``rows`` rows, all the
    instrument's, none null in :data:`KEY_COLUMNS`, every ``t`` in ``[start, end)``."""
    try:
        # one thread: the extract is small and untrusted, and a read that leaves Arrow's
        # thread pool busy can abort the process at exit (apache/arrow#34314)
        table = pq.read_table(io.BytesIO(data), use_threads=False, pre_buffer=False)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not Parquet"
        raise _fail(
            f"readings extract does not parse as Parquet: {exc}", "Apache Parquet"
        ) from None
    if not table.schema.equals(EXTRACT_SCHEMA, check_metadata=False):
        raise _fail(
            f"readings extract has schema {table.schema.to_string(show_schema_metadata=False)!r}"
            f", expected {EXTRACT_SCHEMA.to_string(show_schema_metadata=False)!r}"
        )
    if table.num_rows != rows:
        raise _fail(f"readings extract has {table.num_rows} rows, the manifest says {rows}")
    for name in KEY_COLUMNS:
        if table.column(name).null_count:
            raise _fail(f"readings extract column {name!r} holds null values")
    if table.num_rows:
        others = pc.unique(table.column("instrument")).to_pylist()
        if others != [instrument_id]:
            raise _fail(
                f"readings extract holds instruments {others[:5]}, not only {instrument_id}"
            )
        t = table.column("t")
        first, last = pc.min(t).as_py(), pc.max(t).as_py()
        if (start is not None and first < start) or (end is not None and last >= end):
            raise _fail(
                f"readings extract spans {utc_timestamp(first)} to {utc_timestamp(last)}, outside "
                f"the window [{_show(start)}, {_show(end)})"
            )
    return table


def _show(t: datetime | None) -> str:
    return "-" if t is None else utc_timestamp(t)


def summarize_readings(table: pa.Table) -> list[dict[str, Any]]:
    """Per quantity and UTC day, in that order: count, first and last time and value, unit
    (the last one given). The measurement summary of a timeline."""
    if table.num_rows == 0:
        return []
    cols = table.select(["quantity", "t", "value", "unit"]).sort_by(
        [("quantity", "ascending"), ("t", "ascending")]
    )
    cols = cols.append_column("day", pc.cast(cols.column("t"), pa.date32()))
    grouped = (
        cols.group_by(["quantity", "day"], use_threads=False)
        .aggregate(
            [
                ("t", "count"),
                ("t", "min"),
                ("t", "max"),
                ("value", "first"),
                ("value", "last"),
                ("unit", "last"),
            ]
        )
        .sort_by([("quantity", "ascending"), ("day", "ascending")])
    )
    return [
        {
            "quantity": r["quantity"],
            "day": r["day"].isoformat(),
            "count": r["t_count"],
            "first_t": utc_timestamp(r["t_min"].astimezone(UTC)),
            "first_value": r["value_first"],
            "last_t": utc_timestamp(r["t_max"].astimezone(UTC)),
            "last_value": r["value_last"],
            "unit": r["unit_last"],
        }
        for r in grouped.to_pylist()
    ]


# -- (10) the timeline ------------------------------------------------------------------------

#: timeline entry types backed by a statement, with the statement kinds that may back them
_BACKED = {
    "registered": ("instruments.registered",),
    "event": ("instrument.event",),
    "verification": ("instrument.event",),
    "declaration": ("conformity.declared",),
    "certificate": ("certificate.issued", *sorted(_CERTIFICATE_CHANGES)),
}


def _ref_of(payload: Mapping[str, Any]) -> Any:
    body = payload.get("body")
    kind = payload.get("kind")
    if kind == "instrument.event":
        return _at(body, "event", "id")
    if kind == "conformity.declared":
        return _at(body, "declaration", "id")
    if kind == "certificate.issued":
        return _at(body, "certificate", "id")
    if kind in _CERTIFICATE_CHANGES:
        return _at(body, "certificate_id")
    return None


def _instant(value: Any, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _fail(f"{what} {value!r:.60} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _fail(f"{what} {value!r:.60} has no time zone")
    return parsed


def check_timeline(
    timeline: Any,
    instrument_id: str,
    window: Mapping[str, Any],
    payloads: Mapping[int, Mapping[str, Any]],
    extract: pa.Table,
) -> str:
    """The timeline is the instrument's, over the manifest's window, in time order; every
    entry that cites a leaf cites a statement of the bundle of the matching kind and record;
    its measurement summary is :func:`summarize_readings` of the extract."""
    if _at(timeline, "instrument", "id") != instrument_id:
        raise _fail(
            f"timeline is about instrument {_at(timeline, 'instrument', 'id')!r}, the manifest "
            f"names {instrument_id}"
        )
    if _at(timeline, "window") != window:
        raise _fail(f"timeline window {_at(timeline, 'window')!r} is not the manifest's {window!r}")
    entries = _at(timeline, "entries")
    if not isinstance(entries, list):
        raise _fail("timeline has no list of entries")
    previous: datetime | None = None
    summary: list[Any] = []
    cited = 0
    for n, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise _fail(f"timeline entry {n} is not an object")
        at = _instant(entry.get("at"), f"timeline entry {n} time")
        if previous is not None and at < previous:
            raise _fail(f"timeline entry {n} at {entry.get('at')} is earlier than the one before")
        previous = at
        kind = entry.get("type")
        if kind == "measurements":
            summary.append(entry.get("details"))
        leaf = entry.get("leaf_index")
        if leaf is None:
            if kind in _BACKED:
                raise _fail(f"timeline entry {n} ({kind}) cites no ledger leaf")
            continue
        if kind not in _BACKED:
            raise _fail(f"timeline entry {n} of type {kind!r} cites leaf {leaf}")
        payload = payloads.get(leaf) if isinstance(leaf, int) else None
        if payload is None:
            raise _fail(f"timeline entry {n} cites leaf {leaf!r}, which the bundle does not hold")
        if payload.get("kind") not in _BACKED[kind] or (
            kind != "registered" and _ref_of(payload) != entry.get("ref")
        ):
            raise _fail(
                f"timeline entry {n} ({kind} {entry.get('ref')}) cites leaf {leaf}, a "
                f"{payload.get('kind')} statement about {_ref_of(payload)!r}"
            )
        cited += 1
    expected = summarize_readings(extract)
    if canonical_json(summary) != canonical_json(expected):
        raise _fail(
            f"timeline measurement summary ({len(summary)} quantity-days) differs from the "
            f"summary of the readings extract ({len(expected)} quantity-days)"
        )
    return (
        f"{len(entries)} entries in time order, {cited} backed by statements, "
        f"{len(summary)} quantity-days matching the extract"
    )
