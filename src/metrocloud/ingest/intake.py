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
:class:`~metrocloud.ingest.flusher.LakeFlusher` moves readings into the lake; their
readings, decoded, together in one ``intake_rounds`` row until the flusher has them in the
lake: :func:`store_accepted`, :mod:`metrocloud.ingest.rounds`), rejected ones into
``quarantine`` with the reason and the evidence, counters advanced. An outcome is
returned only after that transaction committed: "acknowledged" means durable. On SQLite the
intake writes with ``synchronous=FULL`` (:meth:`Intake.open`), so a commit survives power
loss as well as a killed process.

Throughput (bench/ingest.py): checks 1 to 4, the CPU work, run in the caller's thread,
outside any transaction (verifying a signature releases the interpreter lock, so callers
verify in parallel), with the registry facts of all the submission's instruments read in
one query and cached for ``cache_seconds``. The write transactions are shared (group
commit): a caller whose lines are checked queues them; one of the queued callers, the
*leader*, waits for its turn on the database (:func:`write_turn`), then decides and stores
everything queued by then in one transaction, in arrival order, exactly as if the
submissions had come one after the other, and wakes the others once it committed. If a
shared transaction fails, each of its submissions is retried in a transaction of its own, so
one submission's failure is never another's. While a thread of this process is inside a
write transaction, the process's other busy threads step aside at their next line
(:data:`TURNS`): the database's write lock, which every other writer of the node waits for,
is never held by a thread that itself waits for the interpreter lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select

from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats.batches import BatchPayload, parse_payload, split_wire, verify_batch
from metrocloud.ingest.rounds import ARROW, RoundBatch, arrow_round, round_digest
from metrocloud.ledger.storage import read_tree_size
from metrocloud.store.bulk import insert_rows
from metrocloud.store.database import Database
from metrocloud.store.schema import (
    certificates,
    device_counters,
    device_keys,
    instruments,
    intake_batches,
    intake_flags,
    intake_rounds,
    quarantine,
)
from metrocloud.store.turns import write_turn
from metrocloud.trust.keys import PublicKey

__all__ = [
    "REASONS",
    "Intake",
    "IntakeLimits",
    "Outcome",
    "store_accepted",
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
    # imported OCMF records only (metrocloud.ingest.ocmf): signed, but a rule of the record broken
    "invalid-record",
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
)
_ROUND_BATCH_COLUMNS = (*_BATCH_COLUMNS, "round_id")
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
_COUNTER_COLUMNS = ("key_id", "instrument_id", "counter", "digest", "last_t")
#: ids per IN (...) list of a registry or counter query
_CHUNK = 500
#: most lines and wire bytes one leader takes into one round (one write transaction; at
#: least one submission): the next writer, in any process, waits for it
_MAX_ROUND_LINES = 20_000
_MAX_ROUND_BYTES = 2 << 20
#: cached registry facts / parsed device keys; the caches start over past this size
_MAX_CACHED = 200_000
#: seconds for which one read of the registry log's size serves every submission
_SIZE_REUSE_S = 0.1


class _Turns:
    """Who runs Python in this process: a thread inside a write transaction first, then the
    lake flusher's decoding, then the intake's checks.

    A thread inside a write transaction holds the database's write lock: every other writer,
    in any process, waits for it. It must not, in turn, wait for the interpreter lock behind
    this process's busy threads (at every row it hands the interpreter lock over while SQLite
    works). So the busy ones call a pause point between two units of work (a line checked, a
    batch decoded) and wait there while a writer is inside :meth:`writing` (which it leaves
    before its commit, a single call into SQLite). The checks also step aside while the lake
    flusher decodes (:meth:`flushing`): the flusher is one thread, the checks are many, and
    the lake falling behind the intake would only move the work to later.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._writers = 0
        self._flushers = 0
        #: hints read without the lock, at every pause point
        self.writer_inside = False
        self.busy = False

    def _enter(self, writer: bool) -> None:
        with self._cond:
            if writer:
                self._writers += 1
                self.writer_inside = True
            else:
                self._flushers += 1
            self.busy = True

    def _leave(self, writer: bool) -> None:
        with self._cond:
            if writer:
                self._writers -= 1
                self.writer_inside = self._writers > 0
            else:
                self._flushers -= 1
            self.busy = self._writers > 0 or self._flushers > 0
            self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Inside a write transaction (never call a pause point in here)."""
        self._enter(True)
        try:
            yield
        finally:
            self._leave(True)

    @contextmanager
    def flushing(self) -> Iterator[None]:
        """The lake flusher's decoding (which pauses for writers only)."""
        self._enter(False)
        try:
            yield
        finally:
            self._leave(False)

    def pause(self) -> None:
        """The intake's pause point: wait while a writer or the flusher works."""
        if self.busy:
            with self._cond:
                while self._writers or self._flushers:
                    self._cond.wait()

    def pause_for_writers(self) -> None:
        """The flusher's pause point: wait while a writer is inside."""
        if self.writer_inside:
            with self._cond:
                while self._writers:
                    self._cond.wait()


#: this process's turns (the intake's checks and writes, the lake flusher's work)
TURNS = _Turns()


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """How far reading times may stray from the node's clock."""

    #: readings may lie this far in the future (device clocks drift)
    max_skew_ms: int = 5 * 60 * 1000
    #: and be at most this old (a device that was offline sends its backlog)
    max_age_ms: int = 400 * 24 * 3600 * 1000
    #: how long registry facts (keys, certificates) are used without asking whether the
    #: registry changed; a revocation takes effect within this time (and the tenth of a
    #: second for which the intake's threads share one look at the registry's log)
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
        if self.reason is not None:
            out["reason"] = self.reason
        if self.detail is not None:
            out["detail"] = self.detail
        if self.instrument is not None:
            out["instrument"] = self.instrument
        if self.counter is not None:
            out["counter"] = self.counter
        out["readings"] = self.readings
        if self.flags:
            out["flags"] = list(self.flags)
        return out


_object_new = object.__new__
_set_status, _set_reason, _set_detail, _set_instrument, _set_counter, _set_readings, _set_flags = (
    Outcome.__dict__[name].__set__
    for name in ("status", "reason", "detail", "instrument", "counter", "readings", "flags")
)


def _accepted(instrument: str, counter: int, readings: int, flags: tuple[str, ...]) -> Outcome:
    """``Outcome("accepted", None, None, instrument, counter, readings, flags)``, built by
    setting its slots (the frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` once per field: a few microseconds a batch)."""
    outcome = _object_new(Outcome)
    _set_status(outcome, "accepted")
    _set_reason(outcome, None)
    _set_detail(outcome, None)
    _set_instrument(outcome, instrument)
    _set_counter(outcome, counter)
    _set_readings(outcome, readings)
    _set_flags(outcome, flags)
    return outcome


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


@dataclass(slots=True)
class _Counter:
    counter: int
    digest: str
    last_t: int
    instrument_id: str
    dirty: bool = False
    new: bool = False


#: What checks 2 to 7 need of a parsed batch, and what the lake needs of an accepted one:
#: (instrument, key, counter, prev, software, digest, first t, last t, readings, quantity,
#: unit, t, value, status). The parser's own object is freed as soon as a line is parsed.
_Batch = tuple[
    str, str, int, str, str, str, int, int, int, str, str, list[int], list[Any], list[int]
]
#: one checked line: (line, batch or None, instrument or None, early rejection or None)
_Checked = tuple[bytes, _Batch | None, _Instrument | None, _Reject | None]


def _batch(p: BatchPayload) -> _Batch:
    t = p.t
    return (
        p.instrument,
        p.key,
        p.counter,
        p.prev,
        p.software,
        p.digest,
        t[0],
        t[-1],
        len(t),
        p.quantity,
        p.unit,
        t,
        p.value,
        p.status,
    )


@dataclass
class _Plan:
    """What one transaction writes, decided batch by batch inside it."""

    batches: list[tuple[Any, ...]] = field(default_factory=list)
    #: the readings of each accepted batch (stored as one round until the flusher moved it)
    readings: list[RoundBatch] = field(default_factory=list)
    rejected: list[tuple[Any, ...]] = field(default_factory=list)
    flags: list[tuple[Any, ...]] = field(default_factory=list)
    #: (key, counter) -> digest of the batches accepted in this transaction
    accepted: dict[tuple[str, int], str] = field(default_factory=dict)


class _Submission:
    """One caller's lines, waiting for a leader; its outcomes or error once durable."""

    __slots__ = (
        "checked",
        "done",
        "error",
        "lines",
        "now_ms",
        "outcomes",
        "received_at",
        "size",
        "transport",
    )

    def __init__(self, lines: Sequence[bytes], transport: str, now: datetime) -> None:
        self.lines = lines
        self.size = sum(map(len, lines))
        self.transport = transport
        self.received_at = now.isoformat().replace("+00:00", "Z")
        self.now_ms = int(now.timestamp() * 1000)
        self.checked: list[_Checked] | None = None
        self.outcomes: list[Outcome] | None = None
        self.error: BaseException | None = None
        self.done = False


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
        #: instrument id -> (when read or confirmed, the log's size when read, its facts)
        self._cache: dict[str, tuple[float, int, _Instrument | None]] = {}
        #: parsed device keys by their base64 SPKI (a key's bytes never change; whether it
        #: is revoked comes with the registry facts, cached for ``cache_seconds`` only)
        self._public_keys: dict[str, PublicKey] = {}
        #: (when read, the log's size): see :meth:`_log_size`
        self._size_read: tuple[float, int] = (float("-inf"), -1)
        self._lock = threading.Lock()
        #: group commit: submissions waiting for a leader, and whether one is working
        self._round = threading.Condition(threading.Lock())
        self._queue: deque[_Submission] = deque()
        self._leading = False
        #: rounds (write transactions shared by submissions) and submissions, for tests
        self.rounds = 0
        self.submissions = 0

    @classmethod
    def open(cls, url: str, *, schema: str | None = None, **kw: Any) -> Intake:
        """An intake with its own connections (``synchronous=FULL`` on SQLite)."""
        return cls(Database(url, schema=schema, durable=True), **kw)

    # -- the one entry point -------------------------------------------------------------

    def submit(self, lines: Sequence[bytes], transport: str) -> list[Outcome]:
        """Check and store ``lines``; the outcomes, in order, once they are durable."""
        mine = _Submission(lines, transport, self.clock())
        self._check(mine)  # in the caller's thread: verifying releases the interpreter lock
        with self._round:
            self._queue.append(mine)
            while not mine.done:
                if self._leading:
                    self._round.wait()
                    continue
                self._leading = True  # lead rounds until this submission is stored
                self._round.release()
                try:
                    self._lead_round()
                except BaseException:
                    with self._round:
                        if not mine.done and mine in self._queue:  # not stored: never will be
                            self._queue.remove(mine)
                            mine.done = True
                    raise
                finally:
                    self._round.acquire()
                    self._leading = False
                    self._round.notify_all()
        if mine.error is not None:
            raise mine.error
        assert mine.outcomes is not None
        return mine.outcomes

    def _lead_round(self) -> None:
        """One round: wait for the database, then store everything queued by then (up to a
        limit) in one transaction. The submissions that arrived while this leader waited
        join its round."""
        group: list[_Submission] = []
        failure: BaseException | None = None
        try:
            with write_turn(self.db):
                with self._round:
                    lines = size = 0
                    while self._queue and (
                        not group or (lines < _MAX_ROUND_LINES and size < _MAX_ROUND_BYTES)
                    ):
                        group.append(self._queue.popleft())
                        lines += len(group[-1].lines)
                        size += group[-1].size
                self._lead(group)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._round:
                for sub in group:
                    if sub.outcomes is None and sub.error is None:
                        sub.error = failure or RuntimeError("the intake round was aborted")
                    sub.done = True

    def _lead(self, group: list[_Submission]) -> None:
        """Store the checked submissions of ``group`` in one transaction; sets each one's
        outcomes or error (:meth:`submit` wakes their callers)."""
        try:
            self._store(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for sub in group:  # isolate the failure: each in its own transaction
                try:
                    self._store([sub])
                except Exception as own:
                    sub.error = own

    # -- checks 1 to 4: no transaction needed ---------------------------------------------

    def _check(self, sub: _Submission) -> None:
        """Checks 1 to 4 of every line of ``sub`` (the registry facts of all its instruments
        come from the cache or from one query)."""
        rows: list[tuple[bytes, bytes, bytes, _Batch | None, _Reject | None]] = []
        wanted: set[str] = set()
        pause = TURNS.pause
        for line in sub.lines:
            pause()
            try:
                payload, signature = split_wire(bytes(line).strip())
                batch = _batch(parse_payload(payload))
            except InvalidInput as exc:
                rows.append((line, b"", b"", None, _Reject("malformed", str(exc))))
                continue
            wanted.add(batch[0])
            rows.append((line, payload, signature, batch, None))
        facts = self._instruments(wanted)
        checked: list[_Checked] = []
        append = checked.append
        for line, payload, signature, parsed, early in rows:
            pause()
            if parsed is None:
                append((line, None, None, early))
                continue
            try:
                inst = _keys_check(parsed, facts[parsed[0]], payload, signature)
                append((line, parsed, inst, None))
            except _Reject as rej:
                append((line, parsed, None, rej))
        sub.checked = checked

    def _instruments(self, ids: Iterable[str]) -> dict[str, _Instrument | None]:
        """Registry facts of ``ids`` (None: not registered), from the cache while fresh.

        An entry is fresh for ``cache_seconds`` after it was read or last confirmed; after
        that it is confirmed, without reading it again, if the node's log has not grown
        since it was read (every change of the registry is a statement appended to the log,
        in the same transaction), and read again otherwise. The log's size is read before
        the facts, so a change that lands in between makes the entry look older, never
        newer, than it is."""
        found: dict[str, _Instrument | None] = {}
        missing: list[str] = []
        expired: list[str] = []
        cache = self._cache
        ttl = self.limits.cache_seconds
        now = time.monotonic()
        for instrument_id in ids:
            hit = cache.get(instrument_id)
            if hit is None:
                missing.append(instrument_id)
            elif now - hit[0] < ttl:
                found[instrument_id] = hit[2]
            else:
                expired.append(instrument_id)
        size: int | None = None
        if expired:
            size = self._log_size()
            for instrument_id in expired:
                stamp, seen, inst = cache[instrument_id]
                if seen == size:  # nothing changed in the registry since it was read
                    found[instrument_id] = inst
                    cache[instrument_id] = (now, seen, inst)
                else:
                    missing.append(instrument_id)
        if missing:
            if size is None:
                size = self._log_size()
            loaded = self._load(missing)
            if len(cache) + len(missing) > _MAX_CACHED:
                cache.clear()
            stamp = time.monotonic()
            for instrument_id in missing:
                inst = loaded.get(instrument_id)
                found[instrument_id] = inst
                cache[instrument_id] = (stamp, size, inst)
        return found

    def _log_size(self) -> int:
        """The size of the node's log (-1 if it has none yet, as in some tests), read at
        most every :data:`_SIZE_REUSE_S` seconds (never beyond ``cache_seconds``): the
        submissions checked meanwhile, in any thread, share the last look (each would
        otherwise take a pooled connection)."""
        now = time.monotonic()
        stamp, size = self._size_read
        if now - stamp < min(_SIZE_REUSE_S, self.limits.cache_seconds):
            return size
        with self.db.read() as conn:
            found = read_tree_size(conn)
        size = -1 if found is None else found
        self._size_read = (now, size)  # stamped before the read: never younger than it is
        return size

    def _load(self, ids: Sequence[str]) -> dict[str, _Instrument]:
        """The registry facts of ``ids`` in three queries per chunk (instruments, their
        certificates, their device keys), on the driver's cursor: no per-row SQL work."""
        rows: list[Any] = []
        certs: dict[str, Any] = {}
        keys: list[Any] = []
        with self.db.read() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                found = _select_in(
                    conn, instruments, ("id", "category", "certificate_id"), "id", chunk
                )
                rows += found
                wanted = sorted({r[2] for r in found} - certs.keys())
                for c in _select_in(
                    conn, certificates, ("id", "status", "valid_until", "software"), "id", wanted
                ):
                    certs[c[0]] = c
                keys += _select_in(
                    conn,
                    device_keys,
                    ("instrument_id", "key_id", "public_key", "revoked_leaf"),
                    "instrument_id",
                    chunk,
                )
        keys_of: dict[str, dict[str, tuple[PublicKey, bool]]] = {}
        parsed = self._public_keys
        if len(parsed) + len(keys) > _MAX_CACHED:
            parsed.clear()
        for instrument_id, key_id, spki, revoked_leaf in keys:
            public_key = parsed.get(spki)
            if public_key is None:
                public_key = parsed[spki] = PublicKey.from_spki_b64(spki)
            keys_of.setdefault(instrument_id, {})[key_id] = (public_key, revoked_leaf is not None)
        facts: dict[str, tuple[str, date, frozenset[str]]] = {}
        for cert_id, status, valid_until, software in certs.values():
            listed = software if isinstance(software, list) else json.loads(software)
            facts[cert_id] = (
                status,
                valid_until if isinstance(valid_until, date) else date.fromisoformat(valid_until),
                frozenset(s["checksum"] for s in listed if s.get("algorithm") == "sha256"),
            )
        out: dict[str, _Instrument] = {}
        for instrument_id, category, cert_id in rows:
            status, valid_until, approved = facts[cert_id]
            out[instrument_id] = _Instrument(
                id=instrument_id,
                category=category,
                keys=keys_of.get(instrument_id, {}),
                certificate_id=cert_id,
                certificate_status=status,
                certificate_valid_until=valid_until,
                approved=approved,
            )
        return out

    # -- checks 5 to 7: in the transaction, against the key's newest accepted batch ---------

    def _store(self, group: list[_Submission]) -> None:
        """Decide ``group``'s checked lines in order and store them in one transaction."""
        plan = _Plan()
        decided: list[list[Outcome]] = []
        # the caller holds the write turn; TURNS.writing() is left before the commit, which
        # db.write() makes at its end
        with self.db.write() as conn, TURNS.writing():
            counters = self._counters(
                conn,
                {
                    batch[1]
                    for sub in group
                    for _, batch, _, r in sub.checked or ()
                    if batch is not None and r is None
                },
            )
            statuses: dict[tuple[str, date], CertificateStatus] = {}
            for sub in group:
                decided.append(self._decide_all(conn, sub, counters, statuses, plan))
            if plan.batches:
                store_accepted(conn, plan.batches, arrow_round(plan.readings), ARROW)
            insert_rows(conn, quarantine, _QUARANTINE_COLUMNS, plan.rejected)
            insert_rows(conn, intake_flags, _FLAG_COLUMNS, plan.flags)
            self._save_counters(conn, counters)
        with self._lock:
            self.rounds += 1
            self.submissions += len(group)
            for outcomes in decided:
                for outcome in outcomes:
                    self.counts.add(outcome)
        for sub, outcomes in zip(group, decided, strict=True):
            sub.outcomes = outcomes

    def _decide_all(
        self,
        conn: Connection,
        sub: _Submission,
        counters: dict[str, _Counter],
        statuses: dict[tuple[str, date], CertificateStatus],
        plan: _Plan,
    ) -> list[Outcome]:
        received_at, transport, now_ms = sub.received_at, sub.transport, sub.now_ms
        today = _day(now_ms)
        outcomes: list[Outcome] = []
        append = outcomes.append
        for line, batch, inst, early in sub.checked or ():
            reject = early
            if reject is None:
                assert batch is not None and inst is not None
                key = (inst.certificate_id, today)
                status = statuses.get(key)
                if status is None:
                    status = statuses[key] = effective_status(
                        inst.certificate_status, inst.certificate_valid_until, today
                    )
                try:
                    append(
                        self._decide(
                            conn,
                            line,
                            batch,
                            inst,
                            status,
                            counters,
                            now_ms,
                            received_at,
                            transport,
                            plan,
                        )
                    )
                    continue
                except _Reject as late:
                    reject = late
            append(_quarantine(line, batch, reject, received_at, transport, plan))
        return outcomes

    def _counters(self, conn: Connection, keys_wanted: Iterable[str]) -> dict[str, _Counter]:
        """The keys' newest accepted batches, locked until the transaction ends where the
        database lets writers in side by side (PostgreSQL: ``FOR UPDATE``, in key order, so
        two transactions deciding for one key take turns; a key's first batch is guarded by
        the table's primary key). On SQLite the transaction is the only writer already."""
        keys = sorted(keys_wanted)
        found: dict[str, _Counter] = {}
        lock = conn.dialect.name != "sqlite"
        for start in range(0, len(keys), _CHUNK):
            for key_id, instrument_id, counter, digest, last_t in _select_in(
                conn,
                device_counters,
                _COUNTER_COLUMNS,
                "key_id",
                keys[start : start + _CHUNK],
                lock=lock,
            ):
                found[key_id] = _Counter(counter, digest, last_t, instrument_id)
        return found

    def _decide(
        self,
        conn: Connection,
        line: bytes,
        batch: _Batch,
        inst: _Instrument,
        status: CertificateStatus,
        counters: dict[str, _Counter],
        now_ms: int,
        received_at: str,
        transport: str,
        plan: _Plan,
    ) -> Outcome:
        instrument, key, counter, prev, software, digest, first, latest, n = batch[:9]
        last = counters.get(key)
        expected = 1 if last is None else last.counter + 1
        if counter < expected:
            assert last is not None
            stored: str | None
            if counter == last.counter:  # the newest batch again (an acknowledgement lost)
                stored = last.digest
            else:  # a replay is the same payload: the same first reading time
                b = intake_batches.c
                stored = conn.execute(
                    select(b.digest).where(
                        b.first_t == first, b.key_id == key, b.counter == counter
                    )
                ).scalar()
                if stored is None:  # from this very transaction, not yet written
                    stored = plan.accepted.get((key, counter))
            if stored == digest:
                return Outcome("duplicate", None, None, instrument, counter, n)
            raise _Reject(
                "counter-rollback",
                f"counter {counter} of key {key} is behind the accepted {expected - 1}"
                + (" and differs from the batch accepted with it" if stored else ""),
            )
        if counter == expected and last is not None and prev != last.digest:
            raise _Reject(
                "chain-broken",
                f"batch {counter} names previous digest {prev}, but batch {last.counter} "
                f"of key {key} has digest {last.digest}",
            )
        if status is not CertificateStatus.VALID:
            raise _Reject(
                "unapproved-software",
                f"certificate {inst.certificate_id} of {inst.id} is {status.value}: "
                "it approves no software",
            )
        if software not in inst.approved:
            raise _Reject(
                "unapproved-software",
                f"software {software} is not approved by certificate {inst.certificate_id}",
            )
        limits = self.limits
        if latest > now_ms + limits.max_skew_ms:
            raise _Reject(
                "implausible-time",
                f"reading at {_iso(latest)} is ahead of the node's clock {_iso(now_ms)}",
            )
        if first < now_ms - limits.max_age_ms:
            raise _Reject("implausible-time", f"reading at {_iso(first)} is too old")
        if last is not None and first <= last.last_t:
            raise _Reject(
                "implausible-time",
                f"first reading {_iso(first)} is not after the key's previous reading "
                f"{_iso(last.last_t)}",
            )
        flags: tuple[str, ...] = ()
        if counter > expected:  # accepted, and the instrument is flagged
            flags = ("counter-gap",)
            plan.flags.append(
                (
                    instrument,
                    "counter-gap",
                    f"key {key}: counter {counter} follows {expected - 1}; "
                    f"{counter - expected} batch(es) missing",
                    received_at,
                )
            )
        if last is None:
            last = counters[key] = _Counter(counter, digest, latest, instrument, new=True)
        last.counter, last.digest, last.last_t, last.dirty = counter, digest, latest, True
        plan.accepted[(key, counter)] = digest
        plan.batches.append(
            (
                key,
                counter,
                digest,
                instrument,
                inst.category,
                n,
                first,
                latest,
                received_at,
                transport,
            )
        )
        _, _, _, _, _, _, _, _, _, quantity, unit, times, values, statuses = batch
        plan.readings.append(
            (
                instrument,
                inst.category,
                key,
                counter,
                quantity,
                unit,
                now_ms,
                times,
                values,
                statuses,
            )
        )
        return _accepted(instrument, counter, n, flags)

    def _save_counters(self, conn: Connection, counters: dict[str, _Counter]) -> None:
        new = [
            (k, c.instrument_id, c.counter, c.digest, c.last_t)
            for k, c in counters.items()
            if c.new
        ]
        insert_rows(conn, device_counters, _COUNTER_COLUMNS, new)
        changed = [
            (c.counter, c.digest, c.last_t, k) for k, c in counters.items() if c.dirty and not c.new
        ]
        if changed:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            quote = conn.dialect.identifier_preparer.quote
            table = quote(device_counters.name)
            conn.exec_driver_sql(
                f"UPDATE {table} SET {quote('counter')} = {mark}, {quote('digest')} = {mark}, "  # noqa: S608 - identifiers quoted, values bound
                f"{quote('last_t')} = {mark} WHERE {quote('key_id')} = {mark}",
                changed,
            )


def store_accepted(
    conn: Connection, rows: Sequence[tuple[Any, ...]], data: bytes, data_format: str
) -> int:
    """Store accepted batches: their records ``rows`` (``_BATCH_COLUMNS``, at least one)
    into ``intake_batches`` and what the lake needs of them, ``data`` in ``data_format``
    (:mod:`metrocloud.ingest.rounds`: one entry per row, in order), into one
    ``intake_rounds`` row, which each record names; the round's id. One row for a whole
    transaction, not one per batch: it is kept only until the lake flusher has its
    readings, and is deleted as a whole."""
    round_id = conn.execute(
        insert(intake_rounds)
        .values(
            batches=len(rows),
            readings=sum(r[5] for r in rows),
            format=data_format,
            data=data,
            digest=round_digest(data),
        )
        .returning(intake_rounds.c.id)
    ).scalar_one()
    insert_rows(conn, intake_batches, _ROUND_BATCH_COLUMNS, [(*r, round_id) for r in rows])
    return int(round_id)


def _select_in(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    column: str,
    values: Sequence[Any],
    *,
    lock: bool = False,
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE column IN (values)`` (``FOR UPDATE`` with
    ``lock``) on the driver's cursor (plain tuples, no SQL compilation or result processing
    per row); identifiers are the Table's, quoted by the dialect, the values are bound."""
    if not values:
        return []
    quote = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(quote(table.c[c].name) for c in columns)
    marks = ", ".join([mark] * len(values))
    sql = f"SELECT {names} FROM {quote(table.name)} WHERE {quote(column)} IN ({marks})"  # noqa: S608
    if lock:
        sql += f" ORDER BY {quote(column)} FOR UPDATE"
    return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(values)).all()]


def _keys_check(
    batch: _Batch, inst: _Instrument | None, payload: bytes, signature: bytes
) -> _Instrument:
    """Checks 2 to 4 of one parsed batch; its instrument's facts if they pass."""
    if inst is None:
        raise _Reject("unknown-instrument", f"no instrument {batch[0]} on this node")
    key_id = batch[1]
    key = inst.keys.get(key_id)
    if key is None:
        raise _Reject(
            "unknown-key",
            f"key {key_id} is not a device key of instrument {inst.id}",
        )
    public_key, revoked = key
    if revoked:
        raise _Reject("revoked-key", f"device key {key_id} of {inst.id} is revoked")
    try:
        verify_batch(payload, signature, public_key)
    except VerificationError as exc:
        raise _Reject("bad-signature", str(exc)) from None
    return inst


def _quarantine(
    line: bytes,
    batch: _Batch | None,
    rej: _Reject,
    received_at: str,
    transport: str,
    plan: _Plan,
) -> Outcome:
    instrument, key, counter, readings = (
        (None, None, None, 0) if batch is None else (batch[0], batch[1], batch[2], batch[8])
    )
    plan.rejected.append(
        (
            received_at,
            transport,
            rej.reason,
            rej.detail,
            instrument,
            key,
            counter,
            bytes(line),
        )
    )
    if rej.reason == "unapproved-software" and instrument is not None:
        plan.flags.append((instrument, "unapproved-software", rej.detail, received_at))
    return Outcome("rejected", rej.reason, rej.detail, instrument, counter, readings)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
