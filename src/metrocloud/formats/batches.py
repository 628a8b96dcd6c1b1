"""The signed measurement batch: wire format "metrocloud signed batch v1".

A batch is one register's ordered readings, signed once by the device key. The payload is
an RFC 8785 canonical JSON object (UTF-8) with exactly these fields::

    {"v": 1, "instrument": "ins-DE-01J...", "key": "<key_id, hex64>",
     "counter": 7, "prev": "<hex64 SHA-256 of the previous batch's payload bytes>",
     "software": "<hex64 legally relevant software checksum>",
     "quantity": "1-0:1.8.0", "unit": "kWh",
     "t": [<epoch ms UTC, strictly increasing>], "value": [<numbers>], "status": [<ints>]}

The readings are columns of equal length (1 to :data:`MAX_READINGS`), so a receiver loads
them into columnar storage without building one object per reading; a batch of one reading
is "signing one by one". ``counter`` starts at 1 and grows by one per batch of the device
key; ``prev`` is :data:`GENESIS_PREV` (64 zeros) for counter 1. Counter and ``prev`` make
the batches of a key one hash chain: a receiver sees every missing, repeated, reordered or
altered batch (WELMEC 7.2 T1, T3, L1).

Wire form, one line of ASCII (the unit of HTTP NDJSON bodies and MQTT messages)::

    MCB1.<base64url(payload), no padding>.<base64url(signature), no padding>

The signature is over the exact payload bytes (never a re-serialization): Ed25519 (64
bytes, RFC 8032) or ECDSA P-256 with SHA-256, DER-encoded (FIPS 186-5), as the key
``key`` names (WELMEC 7.2 T4). The chain is over payload bytes only, so an ECDSA
signature's malleability cannot change a batch's identity: receivers deduplicate by
``(key, counter)`` or by :attr:`SignedBatch.digest`, never by the wire line.

Parsing is strict: one accepted wire line per (payload, signature), the payload must be
canonical (RFC 8785) and every rule below is checked; anything else raises
:class:`InvalidBatch` naming the field (WELMEC 7.2 T6: corrupted data is never used).
The hot path (:func:`split_wire`, :func:`parse_payload`, :func:`verify_batch`) builds no
per-reading Python objects beyond the lists ``orjson`` decodes. :func:`split_wire` and
:func:`parse_payload` first try a fast path that can only *accept*: it returns when
conditions hold that each imply a rule of the reference checks (:func:`_split_wire_checked`,
:func:`_parse_payload_checked`), and hands anything else to the reference, which raises the
error (so every error, its order and its message are the reference's) or accepts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "FIELDS",
    "FORMAT",
    "GENESIS_PREV",
    "INSTRUMENT_PATTERN",
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS",
    "MAX_STATUS",
    "WIRE_PREFIX",
    "BatchPayload",
    "InvalidBatch",
    "SignedBatch",
    "encode_batch",
    "open_batch",
    "parse_payload",
    "payload_digest",
    "split_wire",
    "verify_batch",
]

#: the rule every batch error names
FORMAT = "metrocloud signed batch v1"
#: the first bytes of every wire line
WIRE_PREFIX = b"MCB1."
#: ``prev`` of the first batch of a key
GENESIS_PREV = "0" * 64
#: most readings in one batch
MAX_READINGS = 10_000
#: largest payload accepted (10,000 readings of long floats fit comfortably)
MAX_PAYLOAD_BYTES = 1 << 20
#: largest ``status`` word: 31 bits (the lake stores it as a signed 32-bit integer)
MAX_STATUS = 2**31 - 1
#: the payload's fields, in canonical (sorted) order
FIELDS = (
    "counter",
    "instrument",
    "key",
    "prev",
    "quantity",
    "software",
    "status",
    "t",
    "unit",
    "v",
    "value",
)

_VERSION = 1
_MAX_SAFE = 2**53 - 1  # I-JSON (RFC 7493 §2.2), as RFC 8785 requires
_MAX_SIGNATURE_BYTES = 72  # DER ECDSA P-256 at most; Ed25519 is 64
_PREFIX_LEN = len(WIRE_PREFIX)
_MAX_WIRE_BYTES = len(WIRE_PREFIX) + 4 * (-(-MAX_PAYLOAD_BYTES // 3)) + 1 + 96 + 2
_FIELD_SET = frozenset(FIELDS)
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: what ``instrument`` must fully match
INSTRUMENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TEXT = re.compile(r"[^\x00-\x1f\x7f\"\\]{1,64}")

_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
#: base64url to standard base64, and "+", "/", "=" (not base64url) to a byte that strict
#: decoding refuses: one pass instead of a check for the alphabet and a translation
_URL_TO_STD_STRICT = bytes.maketrans(b"-_+/=", b"+/!!!")
#: the padding standard base64 needs, by length % 4 (1 is never decoded)
_PADDING = (b"", b"", b"==", b"=")
_SEXTET = {c: i for i, c in enumerate(_B64URL_ALPHABET)}
_TRAILING_MASK = {2: 0x0F, 3: 0x03}
_a2b_base64 = binascii.a2b_base64

_loads = orjson.loads
_dumps = orjson.dumps
_SORT_KEYS = orjson.OPT_SORT_KEYS
_sha256 = hashlib.sha256
_lt = operator.lt
_INT: set[type] = {int}
_NUMBER: set[type] = {int, float}
#: the last field of a canonical payload: only numbers follow it
_VALUE_ARRAY = b'"value":['
#: The fast path's layout of a canonical payload: the fields in canonical order, no
#: whitespace, string fields without escapes (so each is its raw bytes), ``counter`` an
#: integer from 1 to 10**15 - 1, ``v`` 1, and the three arrays captured (their characters
#: are checked with ``bytes.translate``, faster than a character class over every byte).
_FAST_LAYOUT = re.compile(
    rb'\{"counter":[1-9][0-9]{0,14},"instrument":"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}",'
    rb'"key":"[0-9a-f]{64}","prev":"[0-9a-f]{64}","quantity":"[^"\\\x00-\x1f\x7f]{1,256}",'
    rb'"software":"[0-9a-f]{64}","status":\[([^\]]+)\],"t":\[([^\]]+)\],'
    rb'"unit":"[^"\\\x00-\x1f\x7f]{1,256}","v":1,"value":(\[[^\]]+\])\}'
)
#: what the integer columns and the value column may hold on the fast path (no sign, no
#: fraction, no exponent for the integers; no exponent for the values)
_INT_CHARS = b"0123456789,"
_VALUE_CHARS = b"0123456789,.-[]"


class InvalidBatch(InvalidInput):
    """A batch that is not "metrocloud signed batch v1"; the message names the field."""

    code = "invalid-batch"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, rule=FORMAT)
        #: the payload field at fault, or None for the wire line as a whole
        self.field = field


@dataclass(frozen=True, slots=True)
class BatchPayload:
    """A parsed, well-formed payload. ``t``, ``value``, ``status`` are equal-length columns.

    The columns are the lists the JSON decoder produced; treat them as read-only.
    """

    v: int
    instrument: str
    key: str
    counter: int
    prev: str
    software: str
    quantity: str
    unit: str
    t: list[int]
    value: list[int | float]
    status: list[int]
    #: hex SHA-256 of the payload bytes: the ``prev`` of the key's next batch
    digest: str

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """Payload bytes and the signature over exactly those bytes."""

    payload: bytes
    signature: bytes

    def wire(self) -> bytes:
        """The wire line ``MCB1.<payload>.<signature>`` (base64url, no padding, no newline)."""
        return b"".join(
            (WIRE_PREFIX, _b64url_encode(self.payload), b".", _b64url_encode(self.signature))
        )

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the payload bytes: the ``prev`` of the key's next batch."""
        return _sha256(self.payload).hexdigest()

    def parse(self) -> BatchPayload:
        """The payload, parsed and checked by :func:`parse_payload`."""
        return parse_payload(self.payload)


def _new_payload(
    instrument: str,
    key: str,
    counter: int,
    prev: str,
    software: str,
    quantity: str,
    unit: str,
    t: list[int],
    value: list[int | float],
    status: list[int],
    digest: str,
) -> BatchPayload:
    """``BatchPayload(v=1, ...)`` for the fast path: the frozen dataclass's ``__init__``
    calls ``object.__setattr__`` per field; this sets its slots directly (the same object)."""
    p = _object_new(BatchPayload)
    _set_v(p, _VERSION)
    _set_instrument(p, instrument)
    _set_key(p, key)
    _set_counter(p, counter)
    _set_prev(p, prev)
    _set_software(p, software)
    _set_quantity(p, quantity)
    _set_unit(p, unit)
    _set_t(p, t)
    _set_value(p, value)
    _set_status(p, status)
    _set_digest(p, digest)
    return p


_object_new = object.__new__
(
    _set_v,
    _set_instrument,
    _set_key,
    _set_counter,
    _set_prev,
    _set_software,
    _set_quantity,
    _set_unit,
    _set_t,
    _set_value,
    _set_status,
    _set_digest,
) = (
    BatchPayload.__dict__[name].__set__
    for name in (
        "v",
        "instrument",
        "key",
        "counter",
        "prev",
        "software",
        "quantity",
        "unit",
        "t",
        "value",
        "status",
        "digest",
    )
)


def payload_digest(payload: bytes) -> str:
    """Hex SHA-256 of payload bytes (what the next batch's ``prev`` must be)."""
    return _sha256(payload).hexdigest()


# -- encoding -----------------------------------------------------------------------------


def encode_batch(
    private_key: PrivateKey,
    *,
    instrument: str,
    counter: int,
    prev: str,
    software: str,
    quantity: str,
    unit: str,
    t: Sequence[int],
    value: Sequence[int | float],
    status: Sequence[int],
) -> SignedBatch:
    """Check the fields, build the RFC 8785 payload and sign it with ``private_key``.

    The payload's ``key`` is ``private_key.key_id``. Raises :class:`InvalidBatch` for any
    field a receiver would reject, so a device never emits a batch that cannot be ingested.
    """
    fields: dict[str, Any] = {
        "v": _VERSION,
        "instrument": instrument,
        "key": private_key.key_id,
        "counter": counter,
        "prev": prev,
        "software": software,
        "quantity": quantity,
        "unit": unit,
        "t": list(t),
        "value": list(value),
        "status": list(status),
    }
    _check_fields(fields)
    values = fields["value"]
    if float in set(map(type, values)) and not all(map(math.isfinite, values)):
        index = next(i for i, x in enumerate(values) if not math.isfinite(x))
        raise InvalidBatch(
            f"batch field 'value' holds {values[index]!r} at index {index}; "
            "expected finite numbers (JSON has no NaN or Infinity)",
            field="value",
        )
    try:
        payload = canonical_json(fields)
    except InvalidInput as exc:  # pragma: no cover - the field checks admit only JCS values
        raise InvalidBatch(f"batch payload cannot be canonicalized: {exc.message}") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidBatch(
            f"batch payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are allowed, "
            "split the readings over more batches",
            field="value",
        )
    return SignedBatch(payload=payload, signature=private_key.sign(payload))


# -- decoding -----------------------------------------------------------------------------


def split_wire(line: bytes) -> tuple[bytes, bytes]:
    """``(payload bytes, signature bytes)`` of a wire line; one trailing LF/CRLF is allowed.

    Rejects (with :class:`InvalidBatch`) a wrong prefix, a wrong number of parts, and
    base64url that is padded, has characters outside the alphabet, or non-zero trailing
    bits, so every (payload, signature) has exactly one accepted line.
    """
    # Fast path: every rule of _split_wire_checked holds, decided with fewer passes over
    # the bytes; anything else (including every error) goes to the reference.
    if type(line) is bytes:
        body = line
        if body.endswith(b"\n"):
            body = body[:-2] if body.endswith(b"\r\n") else body[:-1]
        dot = body.find(b".", _PREFIX_LEN)
        if (
            dot > 0
            and len(body) <= _MAX_WIRE_BYTES
            and body.startswith(WIRE_PREFIX)
            and body.find(b".", dot + 1) < 0
        ):
            payload = _b64url_fast(body[_PREFIX_LEN:dot])
            signature = _b64url_fast(body[dot + 1 :])
            if (
                payload is not None
                and signature is not None
                and len(signature) <= _MAX_SIGNATURE_BYTES
            ):
                return payload, signature
    return _split_wire_checked(line)


def _split_wire_checked(line: bytes) -> tuple[bytes, bytes]:
    """The reference :func:`split_wire`: every rule in order, raising the first broken."""
    if not isinstance(line, bytes | bytearray):
        raise InvalidBatch(f"wire line must be bytes, found {type(line).__name__}")
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if len(line) > _MAX_WIRE_BYTES:
        raise InvalidBatch(
            f"wire line is {len(line)} bytes; at most {_MAX_WIRE_BYTES} are allowed "
            f"(payloads of at most {MAX_PAYLOAD_BYTES} bytes)"
        )
    if not line.startswith(WIRE_PREFIX):
        raise InvalidBatch(
            f"wire line must start with {WIRE_PREFIX.decode()!r}, found {bytes(line[:5])!r}"
        )
    parts = bytes(line[len(WIRE_PREFIX) :]).split(b".")
    if len(parts) != 2:
        raise InvalidBatch(
            "wire line must be MCB1.<payload>.<signature>: expected 2 parts after the prefix, "
            f"found {len(parts)}"
        )
    payload = _b64url_decode(parts[0], "payload")
    signature = _b64url_decode(parts[1], "signature")
    if len(signature) > _MAX_SIGNATURE_BYTES:
        raise InvalidBatch(
            f"wire line signature is {len(signature)} bytes; at most {_MAX_SIGNATURE_BYTES} "
            "(DER ECDSA P-256; Ed25519 is 64)"
        )
    return payload, signature


def parse_payload(payload: bytes) -> BatchPayload:
    """Parse and check payload bytes; :class:`InvalidBatch` names the first field at fault.

    Checked: JSON object with exactly :data:`FIELDS`, their types and ranges, equal column
    lengths of 1 to :data:`MAX_READINGS`, ``t`` strictly increasing, and that the bytes are
    the RFC 8785 canonical form (which also excludes duplicate fields and whitespace).
    """
    if type(payload) is bytes and len(payload) <= MAX_PAYLOAD_BYTES:
        parsed = _parse_fast(payload)
        if parsed is not None:
            return parsed
    return _parse_payload_checked(payload)


def _parse_fast(payload: bytes) -> BatchPayload | None:
    """The payload if it is a canonical batch by sufficient conditions, else None (then
    :func:`_parse_payload_checked` decides). Each condition implies rules of the reference:

    1. the layout (:data:`_FAST_LAYOUT`) and the JSON decoder accepting the bytes: an object
       of exactly :data:`FIELDS`, each once, in canonical order and without whitespace;
       ``v`` is 1; ``counter`` an integer from 1 to 10**15 - 1; ``instrument``, ``key``,
       ``prev``, ``software`` match their patterns; ``quantity`` and ``unit`` hold no control
       character, quote or backslash (so no escape: the decoded text is the raw bytes);
    2. ``status`` and ``t`` hold digits and commas only: integers from 0 (a token beyond
       64 bits would decode as a float, but also exceed the maxima checked in (4));
       ``value`` holds no exponent, so its tokens are numbers;
    3. equal column lengths of at most :data:`MAX_READINGS` (at least 1 by the layout);
    4. ``t`` strictly increasing up to 2**53 - 1, ``status`` at most :data:`MAX_STATUS`,
       ``value`` within ±(2**53 - 1), ``prev`` genesis for counter 1, texts of 1-64
       characters;
    5. canonical numbers: integers without sign or leading zero are canonical (the decoder
       refuses leading zeros); the values re-encode to their exact bytes, with no integral
       float (".0") among them, which RFC 8785 writes as an integer. Strings were shown
       canonical in (1).
    """
    m = _FAST_LAYOUT.fullmatch(payload)
    if m is None:
        return None
    status_text, t_text, value_text = m.groups()
    # (2)
    if (
        status_text.translate(None, _INT_CHARS)
        or t_text.translate(None, _INT_CHARS)
        or value_text.translate(None, _VALUE_CHARS)
    ):
        return None
    try:
        fields = _loads(payload)  # (1)
    except orjson.JSONDecodeError:
        return None
    t, value, status = fields["t"], fields["value"], fields["status"]
    n = len(t)
    counter, prev, quantity, unit = (
        fields["counter"],
        fields["prev"],
        fields["quantity"],
        fields["unit"],
    )
    if (
        n <= MAX_READINGS  # (3)
        and len(value) == n
        and len(status) == n
        and t[-1] <= _MAX_SAFE  # (4)
        and all(map(_lt, t, t[1:]))
        and max(status) <= MAX_STATUS
        and min(value) >= -_MAX_SAFE
        and max(value) <= _MAX_SAFE
        and (counter != 1 or prev == GENESIS_PREV)
        and len(quantity) <= 64
        and len(unit) <= 64
        and _dumps(value) == value_text  # (5)
        and b".0," not in value_text
        and b".0]" not in value_text
    ):
        return _new_payload(
            fields["instrument"],
            fields["key"],
            counter,
            prev,
            fields["software"],
            quantity,
            unit,
            t,
            value,
            status,
            _sha256(payload).hexdigest(),
        )
    return None


def _parse_payload_checked(payload: bytes) -> BatchPayload:
    """The reference :func:`parse_payload`: every rule in order, raising the first broken."""
    if not isinstance(payload, bytes):
        raise InvalidBatch(f"batch payload must be bytes, found {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidBatch(
            f"batch payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are allowed"
        )
    try:
        fields = _loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidBatch(f"batch payload is not JSON: {exc}") from None
    if type(fields) is not dict:
        raise InvalidBatch(f"batch payload must be a JSON object, found {_json_type(fields)}")
    if fields.keys() != _FIELD_SET:
        _field_set_error(fields)
    _check_fields(fields)
    _check_canonical(fields, payload)
    return BatchPayload(
        v=fields["v"],
        instrument=fields["instrument"],
        key=fields["key"],
        counter=fields["counter"],
        prev=fields["prev"],
        software=fields["software"],
        quantity=fields["quantity"],
        unit=fields["unit"],
        t=fields["t"],
        value=fields["value"],
        status=fields["status"],
        digest=_sha256(payload).hexdigest(),
    )


def verify_batch(payload: bytes, signature: bytes, public_key: PublicKey) -> None:
    """Raise :class:`VerificationError` unless ``signature`` is valid over ``payload``.

    Only the signature is checked; compare ``public_key.key_id`` with the payload's ``key``
    (as :func:`open_batch` does) when the key was not looked up by that field.
    """
    try:
        public_key.verify(signature, payload)
    except VerificationError as exc:
        raise VerificationError(
            f"batch signature does not verify under key {public_key.key_id} "
            f"({public_key.algorithm.value})",
            rule=f"{FORMAT}; {exc.rule}",
        ) from None


def open_batch(line: bytes, public_key_for: Callable[[str], PublicKey]) -> BatchPayload:
    """Split, parse and verify one wire line; ``public_key_for(key_id)`` finds the key.

    ``public_key_for`` should raise (e.g. ``NotFound``) for an unknown key id.
    """
    payload, signature = split_wire(line)
    parsed = parse_payload(payload)
    public_key = public_key_for(parsed.key)
    if public_key.key_id != parsed.key:
        raise VerificationError(
            f"batch names key {parsed.key} but was checked against key {public_key.key_id}",
            rule=FORMAT,
        )
    verify_batch(payload, signature, public_key)
    return parsed


# -- checks -------------------------------------------------------------------------------


def _check_fields(f: dict[str, Any]) -> None:
    """The field rules shared by encoding and parsing (no per-reading objects are built)."""
    v = f["v"]
    if type(v) is not int or v != _VERSION:
        raise InvalidBatch(
            f"batch field 'v' must be the integer {_VERSION} ({FORMAT}), found {_show(v)}",
            field="v",
        )
    instrument = f["instrument"]
    if type(instrument) is not str or INSTRUMENT_PATTERN.fullmatch(instrument) is None:
        raise InvalidBatch(
            "batch field 'instrument' must be an instrument id of 1-128 characters "
            f"A-Z a-z 0-9 . _ : - (e.g. ins-DE-01J...), found {_show(instrument)}",
            field="instrument",
        )
    for name in ("key", "prev", "software"):
        value = f[name]
        if type(value) is not str or _HEX64.fullmatch(value) is None:
            raise InvalidBatch(
                f"batch field {name!r} must be 64 lowercase hex characters (a SHA-256), "
                f"found {_show(value)}",
                field=name,
            )
    counter = f["counter"]
    if type(counter) is not int or not 1 <= counter <= _MAX_SAFE:
        raise InvalidBatch(
            f"batch field 'counter' must be an integer from 1 to {_MAX_SAFE}, "
            f"found {_show(counter)}",
            field="counter",
        )
    if counter == 1 and f["prev"] != GENESIS_PREV:
        raise InvalidBatch(
            "batch field 'prev' must be 64 zeros for counter 1 (the first batch of a key), "
            f"found {f['prev']}",
            field="prev",
        )
    for name, limit in (("quantity", 64), ("unit", 64)):
        value = f[name]
        if type(value) is not str or _TEXT.fullmatch(value) is None:
            raise InvalidBatch(
                f"batch field {name!r} must be text of 1-{limit} characters without control "
                f'characters, " or \\, found {_show(value)}',
                field=name,
            )
    _check_columns(f["t"], f["value"], f["status"])


def _check_columns(t: Any, value: Any, status: Any) -> None:
    for name, column in (("t", t), ("value", value), ("status", status)):
        if type(column) is not list:
            raise InvalidBatch(
                f"batch field {name!r} must be an array, found {_json_type(column)}", field=name
            )
    n = len(t)
    if not 1 <= n <= MAX_READINGS:
        raise InvalidBatch(
            f"batch field 't' holds {n} readings; a batch holds 1 to {MAX_READINGS}", field="t"
        )
    for name, column in (("value", value), ("status", status)):
        if len(column) != n:
            raise InvalidBatch(
                f"batch field {name!r} holds {len(column)} entries but 't' holds {n}; "
                "the columns t, value, status must have equal length",
                field=name,
            )
    if set(map(type, t)) != _INT:
        raise InvalidBatch(
            f"batch field 't' must hold integers (epoch milliseconds), found {_first_bad(t, _INT)}",
            field="t",
        )
    if t[0] < 0 or t[-1] > _MAX_SAFE or not all(map(_lt, t, islice(t, 1, None))):
        index = next((i for i in range(1, n) if not t[i - 1] < t[i]), None)
        if index is not None:
            raise InvalidBatch(
                f"batch field 't' must be strictly increasing, found {t[index]} after "
                f"{t[index - 1]} at index {index}",
                field="t",
            )
        raise InvalidBatch(
            f"batch field 't' must hold epoch milliseconds from 0 to {_MAX_SAFE}, "
            f"found {t[0] if t[0] < 0 else t[-1]}",
            field="t",
        )
    types = set(map(type, value))
    if not types <= _NUMBER:
        raise InvalidBatch(
            f"batch field 'value' must hold numbers, found {_first_bad(value, _NUMBER)}",
            field="value",
        )
    if min(value) < -_MAX_SAFE or max(value) > _MAX_SAFE:
        big = next(x for x in value if not -_MAX_SAFE <= x <= _MAX_SAFE)
        raise InvalidBatch(
            f"batch field 'value' holds {big!r}; values must lie within ±{_MAX_SAFE} "
            "(I-JSON, RFC 7493 §2.2: integers beyond it, and RFC 8785's integer form of "
            "larger integral floats, are not exact everywhere)",
            field="value",
        )
    if set(map(type, status)) != _INT or min(status) < 0 or max(status) > MAX_STATUS:
        bad = next(x for x in status if type(x) is not int or not 0 <= x <= MAX_STATUS)
        raise InvalidBatch(
            f"batch field 'status' must hold integers from 0 to {MAX_STATUS}, found {_show(bad)}",
            field="status",
        )


def _check_canonical(fields: dict[str, Any], payload: bytes) -> None:
    # Fast path: orjson's sorted compact output is RFC 8785 except for numbers that are
    # integral floats ("2.0" where RFC 8785 has "2") or in exponent notation ("1e-7",
    # "1e+16"; for other floats both print Python's shortest round-trip repr). The checks
    # admit floats only in 'value', the last field, so equal bytes with no ".0," ".0]" or
    # "e" after '"value":[' prove canonical form. Otherwise compare with the reference.
    if _dumps(fields, option=_SORT_KEYS) == payload:
        start = payload.rfind(_VALUE_ARRAY) + len(_VALUE_ARRAY)
        if (
            payload.find(b"e", start) < 0
            and payload.find(b".0,", start) < 0
            and payload.find(b".0]", start) < 0
        ):
            return
    try:
        canonical = canonical_json(fields)
    except InvalidInput as exc:  # pragma: no cover - the field checks admit only JCS values
        raise InvalidBatch(f"batch payload cannot be canonicalized: {exc.message}") from None
    if canonical != payload:
        raise InvalidBatch(
            "batch payload is not in RFC 8785 canonical form (whitespace, field order, "
            "duplicate fields, escapes or number format differ); sign canonical bytes"
        )


def _field_set_error(fields: dict[str, Any]) -> None:
    missing = sorted(_FIELD_SET - fields.keys())
    extra = sorted(map(str, fields.keys() - _FIELD_SET))
    if missing:
        raise InvalidBatch(
            f"batch payload lacks the field(s) {', '.join(missing)}", field=missing[0]
        )
    shown = ", ".join(repr(name[:40]) for name in extra[:5])
    raise InvalidBatch(
        f"batch payload has unknown field(s) {shown}; {FORMAT} has exactly {', '.join(FIELDS)}",
        field=extra[0],
    )


def _first_bad(column: list[Any], allowed: set[type]) -> str:
    index = next(i for i, x in enumerate(column) if type(x) not in allowed)
    return f"{_show(column[index])} at index {index}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:70] + "...") if len(value) > 70 else repr(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    return _json_type(value)


# -- base64url ------------------------------------------------------------------------------


def _b64url_encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url_fast(text: bytes) -> bytes | None:
    """:func:`_b64url_decode` for text it accepts, else None: standard base64 decoding in
    strict mode refuses every character outside its alphabet, and the translation turns the
    characters base64url lacks ("+", "/", "=") into one it refuses."""
    n = len(text)
    remainder = n & 3
    if n == 0 or remainder == 1:
        return None
    try:
        data = _a2b_base64(
            text.translate(_URL_TO_STD_STRICT) + _PADDING[remainder], strict_mode=True
        )
    except binascii.Error:
        return None
    if remainder and _SEXTET[text[-1]] & _TRAILING_MASK[remainder]:
        return None
    return data


def _b64url_decode(text: bytes, what: str) -> bytes:
    """Strict unpadded base64url (RFC 4648 §5): one accepted text per byte string."""
    n = len(text)
    if n == 0:
        raise InvalidBatch(f"wire line {what} is empty")
    if text.translate(None, _B64URL_ALPHABET):
        raise InvalidBatch(
            f"wire line {what} is not unpadded base64url (RFC 4648 §5): expected only "
            "A-Z a-z 0-9 - _ without '=' padding"
        )
    remainder = n % 4
    if remainder == 1:
        raise InvalidBatch(f"wire line {what} has an impossible base64url length {n}")
    if remainder and _SEXTET[text[-1]] & _TRAILING_MASK[remainder]:
        raise InvalidBatch(
            f"wire line {what} is not canonical base64url: non-zero trailing bits (RFC 4648 §3.5)"
        )
    try:
        return binascii.a2b_base64(text.translate(_URL_TO_STD) + b"=" * (-n % 4), strict_mode=True)
    except binascii.Error:  # pragma: no cover - the checks above admit only valid text
        raise InvalidBatch(f"wire line {what} is not valid base64url") from None
