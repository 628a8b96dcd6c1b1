"""Signed-measurement intake: check each batch, keep what is proven, quarantine the rest.

Every wire line ("metrocloud signed batch v1", :mod:`metrocloud.formats.batches`) passes
these checks in this order; the first that fails names the rejection reason:

1. ``malformed``: the line is not a well-formed signed batch;
2. ``unknown-instrument``: no instrument with the batch's id is registered on this node;
3. ``unknown-key`` / ``revoked-key``: the key is not one of the instrument's device keys,
   or it was revoked;
4. ``bad-signature``: the signature does not verify over the payload bytes;
5. the counter continues the key's chain: an exact replay of an accepted batch (same counter,
   same bytes) is acknowledged again and stored once (``duplicate``); a lower or reused
   counter is ``counter-rollback``; the next counter whose ``prev`` is not the previous
   batch's digest is ``chain-broken``; a counter that skips ahead is accepted and flagged
   (``counter-gap``: batches were lost on the way);
6. ``unapproved-software``: the software identification is not approved by the instrument's
   certificate, or the certificate is not valid today (the instrument is flagged);
7. ``implausible-time``: readings in the future (beyond the allowed clock skew), older than
   the allowed age, or not after the key's previous batch.

A submission (an HTTP request, a burst of MQTT messages) is decided and stored in one write
transaction: accepted batches into ``intake_batches`` (the intake's durable log, from which
:class:`~metrocloud.ingest.flusher.LakeFlusher` moves readings into the lake), rejected
ones into ``quarantine`` with the reason and the evidence, counters advanced. An outcome is
returned only after that transaction committed: "acknowledged" means durable. On SQLite the
intake writes with ``synchronous=FULL`` (:meth:`Intake.open`), so a commit survives power
loss as well as a killed process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats.batches import BatchPayload, parse_payload, split_wire, verify_batch
from metrocloud.store.bulk import insert_rows
from metrocloud.store.database import Database
from metrocloud.store.schema import (
    certificates,
    device_counters,
    device_keys,
    instruments,
    intake_batches,
    intake_flags,
    quarantine,
)
from metrocloud.trust.keys import PublicKey

__all__ = [
    "REASONS",
    "Intake",
    "IntakeLimits",
    "Outcome",
]

#: every rejection reason, in the order the checks run
REASONS = (
    "malformed",
    "unknown-instrument",
    "unknown-key",
    "revoked-key",
    "bad-signature",
    "counter-rollback",
    "chain-broken",
    "unapproved-software",
    "implausible-time",
)
_MAX_DETAIL = 500
_BATCH_COLUMNS = (
    "key_id",
    "counter",
    "digest",
    "instrument_id",
    "category",
    "readings",
    "first_t",
    "last_t",
    "received_at",
    "transport",
    "wire",
)
_QUARANTINE_COLUMNS = (
    "received_at",
    "transport",
    "reason",
    "detail",
    "instrument_id",
    "key_id",
    "counter",
    "wire",
)
_FLAG_COLUMNS = ("instrument_id", "kind", "detail", "at")


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """How far reading times may stray from the node's clock."""

    #: readings may lie this far in the future (device clocks drift)
    max_skew_ms: int = 5 * 60 * 1000
    #: and be at most this old (a device that was offline sends its backlog)
    max_age_ms: int = 400 * 24 * 3600 * 1000
    #: how long registry facts (keys, certificates) are cached; a revocation takes effect
    #: within this time
    cache_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer for one wire line: ``accepted``, ``duplicate`` or ``rejected``."""

    status: str
    reason: str | None = None
    detail: str | None = None
    instrument: str | None = None
    counter: int | None = None
    readings: int = 0
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        for name in ("reason", "detail", "instrument", "counter"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["readings"] = self.readings
        if self.flags:
            out["flags"] = list(self.flags)
        return out


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:_MAX_DETAIL]


@dataclass(frozen=True, slots=True)
class _Instrument:
    id: str
    category: str
    #: key id -> (public key, revoked)
    keys: dict[str, tuple[PublicKey, bool]]
    certificate_id: str
    certificate_status: str
    certificate_valid_until: date
    approved: frozenset[str]


@dataclass
class _Counter:
    counter: int
    digest: str
    last_t: int
    instrument_id: str
    dirty: bool = False
    new: bool = False


@dataclass
class _Plan:
    """What one submission writes, decided batch by batch inside the transaction."""

    batches: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[Any, ...]] = field(default_factory=list)
    flags: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class IntakeCounts:
    """Totals since start (this process), for /metrics."""

    batches: dict[str, int] = field(default_factory=dict)
    readings_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.batches[outcome.status] = self.batches.get(outcome.status, 0) + 1
        if outcome.status == "accepted":
            self.readings_accepted += outcome.readings
        elif outcome.status == "rejected" and outcome.reason is not None:
            self.rejected[outcome.reason] = self.rejected.get(outcome.reason, 0) + 1


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Intake:
    """The node's measurement intake over one registry database."""

    def __init__(
        self,
        db: Database,
        *,
        limits: IntakeLimits | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.db = db
        self.limits = limits or IntakeLimits()
        self.clock = clock
        self.counts = IntakeCounts()
        self._cache: dict[str, tuple[float, _Instrument | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, schema: str | None = None, **kw: Any) -> Intake:
        """An intake with its own connections (``synchronous=FULL`` on SQLite)."""
        return cls(Database(url, schema=schema, durable=True), **kw)

    # -- the one entry point -------------------------------------------------------------

    def submit(self, lines: Sequence[bytes], transport: str) -> list[Outcome]:
        """Check and store ``lines``; the outcomes, in order, once they are durable."""
        now = self.clock()
        received_at = now.isoformat().replace("+00:00", "Z")
        now_ms = int(now.timestamp() * 1000)
        # outside the transaction: parsing and signatures (the CPU work), registry facts
        checked: list[tuple[bytes, BatchPayload | None, _Instrument | None, _Reject | None]] = []
        for line in lines:
            try:
                checked.append((line, *self._verify(line, now.date()), None))
            except _Reject as rej:
                checked.append((line, _try_parse(line), None, rej))
        outcomes: list[Outcome] = []
        plan = _Plan()
        with self.db.write() as conn:
            counters = self._counters(conn, [p for _, p, _, r in checked if p and not r])
            for line, parsed, inst, early in checked:
                reject = early
                if reject is None:
                    assert parsed is not None and inst is not None
                    try:
                        outcomes.append(
                            self._decide(conn, line, parsed, inst, counters, now_ms, plan)
                        )
                        continue
                    except _Reject as late:
                        reject = late
                outcomes.append(
                    self._quarantine(line, parsed, reject, received_at, transport, plan)
                )
            batch_rows = [(*row[:8], received_at, transport, row[8]) for row in plan.batches]
            insert_rows(conn, intake_batches, _BATCH_COLUMNS, batch_rows)
            insert_rows(conn, quarantine, _QUARANTINE_COLUMNS, plan.rejected)
            flags = [(i, k, d, received_at) for i, k, d, *_ in plan.flags]
            insert_rows(conn, intake_flags, _FLAG_COLUMNS, flags)
            self._save_counters(conn, counters)
        with self._lock:
            for outcome in outcomes:
                self.counts.add(outcome)
        return outcomes

    @staticmethod
    def _quarantine(
        line: bytes,
        parsed: BatchPayload | None,
        rej: _Reject,
        received_at: str,
        transport: str,
        plan: _Plan,
    ) -> Outcome:
        instrument = parsed.instrument if parsed else None
        counter = parsed.counter if parsed else None
        plan.rejected.append(
            (
                received_at,
                transport,
                rej.reason,
                rej.detail,
                instrument,
                parsed.key if parsed else None,
                counter,
                bytes(line),
            )
        )
        if rej.reason == "unapproved-software" and instrument is not None:
            plan.flags.append((instrument, "unapproved-software", rej.detail))
        return Outcome(
            "rejected", rej.reason, rej.detail, instrument, counter, len(parsed) if parsed else 0
        )

    # -- checks 1 to 4: no transaction needed ---------------------------------------------

    def _verify(self, line: bytes, today: date) -> tuple[BatchPayload, _Instrument]:
        try:
            payload, signature = split_wire(bytes(line).strip())
            parsed = parse_payload(payload)
        except InvalidInput as exc:
            raise _Reject("malformed", str(exc)) from None
        inst = self._instrument(parsed.instrument)
        if inst is None:
            raise _Reject("unknown-instrument", f"no instrument {parsed.instrument} on this node")
        key = inst.keys.get(parsed.key)
        if key is None:
            raise _Reject(
                "unknown-key",
                f"key {parsed.key} is not a device key of instrument {inst.id}",
            )
        public_key, revoked = key
        if revoked:
            raise _Reject("revoked-key", f"device key {parsed.key} of {inst.id} is revoked")
        try:
            verify_batch(payload, signature, public_key)
        except VerificationError as exc:
            raise _Reject("bad-signature", str(exc)) from None
        return parsed, inst

    def _instrument(self, instrument_id: str) -> _Instrument | None:
        hit = self._cache.get(instrument_id)
        if hit is not None and time.monotonic() - hit[0] < self.limits.cache_seconds:
            return hit[1]
        found = self._load(instrument_id)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[instrument_id] = (time.monotonic(), found)
        return found

    def _load(self, instrument_id: str) -> _Instrument | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(
                    instruments.c.id,
                    instruments.c.category,
                    instruments.c.certificate_id,
                    certificates.c.status,
                    certificates.c.valid_until,
                    certificates.c.software,
                )
                .join(certificates, certificates.c.id == instruments.c.certificate_id)
                .where(instruments.c.id == instrument_id)
            ).first()
            if row is None:
                return None
            keys = conn.execute(
                select(
                    device_keys.c.key_id, device_keys.c.public_key, device_keys.c.revoked_leaf
                ).where(device_keys.c.instrument_id == instrument_id)
            ).all()
        software = row.software if isinstance(row.software, list) else json.loads(row.software)
        return _Instrument(
            id=row.id,
            category=row.category,
            keys={
                k.key_id: (PublicKey.from_spki_b64(k.public_key), k.revoked_leaf is not None)
                for k in keys
            },
            certificate_id=row.certificate_id,
            certificate_status=row.status,
            certificate_valid_until=row.valid_until,
            approved=frozenset(s["checksum"] for s in software if s.get("algorithm") == "sha256"),
        )

    # -- checks 5 to 7: in the transaction, against the key's newest accepted batch ---------

    def _counters(self, conn: Connection, parsed: Iterable[BatchPayload]) -> dict[str, _Counter]:
        keys = sorted({p.key for p in parsed})
        found: dict[str, _Counter] = {}
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                select(device_counters).where(
                    device_counters.c.key_id.in_(keys[start : start + 500])
                )
            ).all()
            for r in rows:
                found[r.key_id] = _Counter(r.counter, r.digest, r.last_t, r.instrument_id)
        return found

    def _decide(
        self,
        conn: Connection,
        line: bytes,
        p: BatchPayload,
        inst: _Instrument,
        counters: dict[str, _Counter],
        now_ms: int,
        plan: _Plan,
    ) -> Outcome:
        flags: list[str] = []
        last = counters.get(p.key)
        expected = 1 if last is None else last.counter + 1
        if p.counter < expected:
            stored = conn.execute(
                select(intake_batches.c.digest).where(
                    intake_batches.c.key_id == p.key, intake_batches.c.counter == p.counter
                )
            ).scalar()
            if stored is None:  # from this very submission, not yet written
                stored = next(
                    (b[2] for b in plan.batches if b[0] == p.key and b[1] == p.counter), None
                )
            if stored == p.digest:
                return Outcome("duplicate", None, None, p.instrument, p.counter, len(p))
            raise _Reject(
                "counter-rollback",
                f"counter {p.counter} of key {p.key} is behind the accepted {expected - 1}"
                + (" and differs from the batch accepted with it" if stored else ""),
            )
        if p.counter == expected and last is not None and p.prev != last.digest:
            raise _Reject(
                "chain-broken",
                f"batch {p.counter} names previous digest {p.prev}, but batch {last.counter} "
                f"of key {p.key} has digest {last.digest}",
            )
        status = effective_status(
            inst.certificate_status, inst.certificate_valid_until, _day(now_ms)
        )
        if status is not CertificateStatus.VALID:
            raise _Reject(
                "unapproved-software",
                f"certificate {inst.certificate_id} of {inst.id} is {status.value}: "
                "it approves no software",
            )
        if p.software not in inst.approved:
            raise _Reject(
                "unapproved-software",
                f"software {p.software} is not approved by certificate {inst.certificate_id}",
            )
        first, latest = p.t[0], p.t[-1]
        if latest > now_ms + self.limits.max_skew_ms:
            raise _Reject(
                "implausible-time",
                f"reading at {_iso(latest)} is ahead of the node's clock {_iso(now_ms)}",
            )
        if first < now_ms - self.limits.max_age_ms:
            raise _Reject("implausible-time", f"reading at {_iso(first)} is too old")
        if last is not None and first <= last.last_t:
            raise _Reject(
                "implausible-time",
                f"first reading {_iso(first)} is not after the key's previous reading "
                f"{_iso(last.last_t)}",
            )
        if p.counter > expected:  # accepted, and the instrument is flagged
            flags.append("counter-gap")
            plan.flags.append(
                (
                    p.instrument,
                    "counter-gap",
                    f"key {p.key}: counter {p.counter} follows {expected - 1}; "
                    f"{p.counter - expected} batch(es) missing",
                )
            )
        if last is None:
            last = counters[p.key] = _Counter(p.counter, p.digest, latest, p.instrument, new=True)
        last.counter, last.digest, last.last_t, last.dirty = p.counter, p.digest, latest, True
        plan.batches.append(
            (
                p.key,
                p.counter,
                p.digest,
                p.instrument,
                inst.category,
                len(p),
                first,
                latest,
                bytes(line),
            )
        )
        return Outcome("accepted", None, None, p.instrument, p.counter, len(p), tuple(flags))

    def _save_counters(self, conn: Connection, counters: dict[str, _Counter]) -> None:
        new = [
            (k, c.instrument_id, c.counter, c.digest, c.last_t)
            for k, c in counters.items()
            if c.new
        ]
        insert_rows(
            conn, device_counters, ("key_id", "instrument_id", "counter", "digest", "last_t"), new
        )
        changed = [
            {"k": k, "c": c.counter, "d": c.digest, "t": c.last_t}
            for k, c in counters.items()
            if c.dirty and not c.new
        ]
        if changed:
            conn.execute(
                update(device_counters)
                .where(device_counters.c.key_id == bindparam("k"))
                .values(counter=bindparam("c"), digest=bindparam("d"), last_t=bindparam("t")),
                changed,
            )


def _try_parse(line: bytes) -> BatchPayload | None:
    try:
        return parse_payload(split_wire(bytes(line).strip())[0])
    except InvalidInput:
        return None


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
