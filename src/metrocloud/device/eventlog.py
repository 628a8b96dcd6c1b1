"""The device's event logger and audit trail: counted, hash-chained, signed, append-only.

WELMEC Guide 7.2 asks that changes of legally relevant parameters be recorded in an event
logger (P7/U7, parameter protection), that software downloads leave an audit trail (D4),
and that stored legally relevant data be complete, protected against change and
attributable (L1-L4). Each record here is::

    {"v": 1, "seq": 3, "kind": "parameter_changed", "at": "2026-01-05T10:00:00.000Z",
     "data": {...}, "prev": "<hex SHA-256 of record 2's signed bytes>", "key": "<key_id>",
     "sig": "<base64url signature, no padding>"}

* ``seq`` counts 1, 2, 3, ... without gaps, so a removed record shows as a gap;
* ``prev`` is the SHA-256 of the previous record's *signed bytes* (64 zeros for seq 1), so
  records cannot be reordered, replaced or inserted without breaking the chain;
* ``sig`` is the device key's signature over ``EVENT_DOMAIN`` + the RFC 8785 canonical JSON
  of the record without ``sig``. The domain prefix keeps an event signature from ever
  passing as a batch signature (a batch payload starts with ``{``) and vice versa.

The log is a file of canonical JSON lines, appended and fsync'ed one record at a time and
verified completely when reloaded. It never overwrites: when it holds ``capacity`` records,
:meth:`EventLog.append` raises :class:`EventLogFull`, and the device refuses every
operation it would have to record (it stops legally relevant operation rather than lose
evidence) until the log is read out and the device is re-provisioned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from metrocloud._fs import append_durably, fsync_directory
from metrocloud.domain.errors import InvalidInput, RuleViolation, VerificationError
from metrocloud.trust import utc_timestamp
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "DEFAULT_CAPACITY",
    "EVENT_DOMAIN",
    "GENESIS",
    "LOG_FORMAT",
    "ChainCheck",
    "DeviceEventKind",
    "EventLog",
    "EventLogFull",
    "EventRecord",
    "load_records",
    "parse_record",
    "verify_chain",
]

#: prefix of the bytes an event record's signature covers
EVENT_DOMAIN = b"metrocloud-device-event-v1\x00"
#: ``prev`` of the first record
GENESIS = "0" * 64
#: records a log holds unless configured otherwise
DEFAULT_CAPACITY = 10_000
#: the rule named by format errors
LOG_FORMAT = "metrocloud device event log v1"

_FIELDS = frozenset({"v", "seq", "kind", "at", "data", "prev", "key", "sig"})
_HEX = frozenset("0123456789abcdef")
_B64URL = re.compile(r"[A-Za-z0-9_-]{2,200}")


class DeviceEventKind(StrEnum):
    """What a device records. Names follow :class:`metrocloud.domain.instruments.EventKind`."""

    PROVISIONED = "provisioned"
    PARAMETER_CHANGED = "parameter_changed"
    SOFTWARE_UPDATED = "software_updated"
    SOFTWARE_UPDATE_REFUSED = "software_update_refused"
    SEAL_BROKEN = "seal_broken"
    TAMPER_DETECTED = "tamper_detected"
    POWER_FAILURE = "power_failure"
    CLOCK_SET = "clock_set"


class EventLogFull(RuleViolation):
    """The event log holds ``capacity`` records; it is never overwritten."""

    code = "event-log-full"

    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"the event log holds its capacity of {capacity} records and is never "
            "overwritten; the device refuses operations it must record until the log is "
            "read out and the device re-provisioned",
            rule="WELMEC 7.2 P7/U7 (event logger), D4 (audit trail), L8 (storage capacity)",
        )
        self.capacity = capacity


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One signed record of the event log."""

    seq: int
    kind: DeviceEventKind
    at: str
    data: Mapping[str, Any]
    prev: str
    key: str
    signature: bytes

    def body(self) -> dict[str, Any]:
        """The record without its signature: what is signed and hashed."""
        return {
            "v": 1,
            "seq": self.seq,
            "kind": str(self.kind),
            "at": self.at,
            "data": dict(self.data),
            "prev": self.prev,
            "key": self.key,
        }

    def signed_bytes(self) -> bytes:
        """``EVENT_DOMAIN`` + canonical JSON of :meth:`body`."""
        return EVENT_DOMAIN + canonical_json(self.body())

    @property
    def hash(self) -> str:
        """Hex SHA-256 of :meth:`signed_bytes`: the ``prev`` of the next record."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_line(self) -> bytes:
        """The record as one canonical JSON line (with trailing newline)."""
        return canonical_json({**self.body(), "sig": _b64url(self.signature)}) + b"\n"


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The outcome of :func:`verify_chain`.

    ``valid_records`` records verified from the start; ``head`` is the hash of the last of
    them (``GENESIS`` if none). When the chain is broken, ``broken_seq`` is the position
    (1-based, the seq that was due there) of the first bad record and ``reason`` says why.
    """

    ok: bool
    valid_records: int
    head: str
    broken_seq: int | None = None
    reason: str | None = None

    def raise_for_break(self) -> None:
        """Raise :class:`VerificationError` naming the first broken link, if any."""
        if not self.ok:
            raise VerificationError(
                f"event log broken at seq {self.broken_seq}: {self.reason}",
                rule="WELMEC 7.2 L3/L4 (integrity and authenticity of stored data)",
            )


def verify_chain(records: Sequence[EventRecord], public_key: PublicKey) -> ChainCheck:
    """Check counting, hash chain, key and signature of every record, in order.

    Reports the first broken link; records after it are not examined (every one of them
    depends on it).
    """
    head = GENESIS
    for index, record in enumerate(records):
        expected = index + 1
        reason = None
        if record.seq != expected:
            reason = (
                f"found seq {record.seq} where {expected} was due (a record was removed, "
                "inserted or reordered)"
            )
        elif record.prev != head:
            reason = (
                f"prev {record.prev} is not the hash {head} of record {expected - 1} "
                "(a record was changed or replaced)"
            )
        elif record.key != public_key.key_id:
            reason = f"signed with key {record.key}, the device key is {public_key.key_id}"
        else:
            signed = record.signed_bytes()
            try:
                public_key.verify(record.signature, signed)
            except VerificationError:
                reason = "signature does not verify (the record was altered)"
            else:
                head = hashlib.sha256(signed).hexdigest()
        if reason is not None:
            return ChainCheck(
                ok=False, valid_records=index, head=head, broken_seq=expected, reason=reason
            )
    return ChainCheck(ok=True, valid_records=len(records), head=head)


def parse_record(line: bytes) -> EventRecord:
    """Parse one line of the log file (strictly); :class:`InvalidInput` if malformed."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"event record is not JSON: {exc}", rule=LOG_FORMAT) from None
    if type(raw) is not dict or raw.keys() != _FIELDS:
        found = sorted(raw) if type(raw) is dict else type(raw).__name__
        raise InvalidInput(
            f"event record must have exactly the fields {', '.join(sorted(_FIELDS))}; "
            f"found {found}",
            rule=LOG_FORMAT,
        )
    seq, kind, at, data = raw["seq"], raw["kind"], raw["at"], raw["data"]
    if raw["v"] != 1 or type(raw["v"]) is not int:
        raise InvalidInput(f"event record v must be 1, found {raw['v']!r}", rule=LOG_FORMAT)
    if type(seq) is not int or seq < 1:
        raise InvalidInput(
            f"event record seq must be an integer >= 1, found {seq!r}", rule=LOG_FORMAT
        )
    if kind not in DeviceEventKind.__members__.values():
        raise InvalidInput(f"event record kind {kind!r} is unknown", rule=LOG_FORMAT)
    if type(at) is not str or type(data) is not dict:
        raise InvalidInput("event record at must be text and data an object", rule=LOG_FORMAT)
    for name in ("prev", "key"):
        if not _is_hex64(raw[name]):
            raise InvalidInput(
                f"event record {name} must be 64 lowercase hex characters", rule=LOG_FORMAT
            )
    return EventRecord(
        seq=seq,
        kind=DeviceEventKind(kind),
        at=at,
        data=MappingProxyType(data),
        prev=raw["prev"],
        key=raw["key"],
        signature=_b64url_decode(raw["sig"]),
    )


def load_records(path: Path) -> tuple[list[EventRecord], int]:
    """The complete records of a log file and the count of trailing bytes of a torn append.

    A final line without newline is an append that never completed (power lost during the
    write); its bytes are counted, not parsed. A malformed complete line raises
    :class:`InvalidInput` naming its line number.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        try:
            records.append(parse_record(line))
        except InvalidInput as exc:
            raise InvalidInput(f"{path} line {number}: {exc.message}", rule=exc.rule) from None
    return records, len(data) - end


class EventLog:
    """An append-only, signed event log, in memory or backed by a file.

    Use :meth:`open` (file) or :meth:`in_memory`. Appends are serialized by a lock and are
    durable (fsync) before :meth:`append` returns.
    """

    def __init__(
        self,
        key: PrivateKey,
        *,
        path: Path | None,
        records: Iterable[EventRecord] = (),
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if type(capacity) is not int or capacity < 1:
            raise InvalidInput(f"event log capacity must be an integer >= 1, found {capacity!r}")
        self._key = key
        self._path = path
        self._records = list(records)
        self._capacity = capacity
        self._clock = clock or _now
        self._lock = threading.Lock()
        check = verify_chain(self._records, key.public_key)
        check.raise_for_break()
        self._head = check.head

    @classmethod
    def in_memory(
        cls,
        key: PrivateKey,
        *,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], datetime] | None = None,
    ) -> EventLog:
        return cls(key, path=None, capacity=capacity, clock=clock)

    @classmethod
    def open(
        cls,
        path: Path,
        key: PrivateKey,
        *,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], datetime] | None = None,
    ) -> EventLog:
        """Open (or create) the log file and verify every record in it.

        A torn final append is cut off and, if there is room, recorded as a
        ``power_failure`` event. Any other damage raises :class:`VerificationError` (or
        :class:`InvalidInput` for a malformed line): the device does not start on a log it
        cannot vouch for.
        """
        path = Path(path)
        if not path.exists():
            append_durably(path, b"")
            fsync_directory(path.parent)
        records, torn = load_records(path)
        if len(records) > capacity:
            raise InvalidInput(
                f"event log {path} holds {len(records)} records, more than its capacity {capacity}"
            )
        log = cls(key, path=path, records=records, capacity=capacity, clock=clock)
        if torn:
            with path.open("r+b") as handle:
                handle.truncate(path.stat().st_size - torn)
                handle.flush()
                os.fsync(handle.fileno())
            if not log.is_full:
                log.append(
                    DeviceEventKind.POWER_FAILURE,
                    {"detail": "incomplete event record discarded on reload", "bytes": torn},
                )
        return log

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def records(self) -> tuple[EventRecord, ...]:
        return tuple(self._records)

    @property
    def head(self) -> str:
        """Hash of the last record (``GENESIS`` when empty)."""
        return self._head

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def remaining(self) -> int:
        return self._capacity - len(self._records)

    @property
    def is_full(self) -> bool:
        return len(self._records) >= self._capacity

    def __len__(self) -> int:
        return len(self._records)

    def ensure_room(self, count: int = 1) -> None:
        """Raise :class:`EventLogFull` unless ``count`` more records fit."""
        if self.remaining < count:
            raise EventLogFull(self._capacity)

    def append(
        self, kind: DeviceEventKind | str, data: Mapping[str, Any] | None = None
    ) -> EventRecord:
        """Sign, persist (fsync) and return the next record; :class:`EventLogFull` if full."""
        try:
            kind = DeviceEventKind(kind)
        except ValueError:
            raise InvalidInput(
                f"unknown event kind {kind!r}; expected one of "
                f"{', '.join(k.value for k in DeviceEventKind)}",
                rule=LOG_FORMAT,
            ) from None
        payload = dict(data or {})
        canonical_json(payload)  # reject what cannot be recorded before anything is written
        with self._lock:
            self.ensure_room()
            unsigned = EventRecord(
                seq=len(self._records) + 1,
                kind=kind,
                at=utc_timestamp(self._clock()),
                data=MappingProxyType(payload),
                prev=self._head,
                key=self._key.key_id,
                signature=b"",
            )
            signed = unsigned.signed_bytes()
            record = EventRecord(
                seq=unsigned.seq,
                kind=kind,
                at=unsigned.at,
                data=unsigned.data,
                prev=unsigned.prev,
                key=unsigned.key,
                signature=self._key.sign(signed),
            )
            if self._path is not None:
                append_durably(self._path, record.to_line())
            self._records.append(record)
            self._head = hashlib.sha256(signed).hexdigest()
            return record

    def verify(self) -> ChainCheck:
        """Verify the records in memory (and, for a file log, re-read the file)."""
        if self._path is None:
            return verify_chain(self._records, self._key.public_key)
        records, torn = load_records(self._path)
        check = verify_chain(records, self._key.public_key)
        if check.ok and torn:
            return ChainCheck(
                ok=False,
                valid_records=check.valid_records,
                head=check.head,
                broken_seq=len(records) + 1,
                reason=f"{torn} bytes of an incomplete record follow the last record",
            )
        return check

    def __repr__(self) -> str:
        where = str(self._path) if self._path else "memory"
        return f"EventLog({where}, records={len(self._records)}, capacity={self._capacity})"


def _now() -> datetime:
    return datetime.now(UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: Any) -> bytes:
    """Strict unpadded base64url: exactly the text :func:`_b64url` produces."""
    if type(text) is not str or _B64URL.fullmatch(text) is None:
        raise InvalidInput("event record sig must be unpadded base64url", rule=LOG_FORMAT)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput("event record sig is not base64url", rule=LOG_FORMAT) from None
    if _b64url(data) != text:
        raise InvalidInput("event record sig is not canonical base64url", rule=LOG_FORMAT)
    return data


def _is_hex64(value: Any) -> bool:
    return type(value) is str and len(value) == 64 and set(value) <= _HEX
