"""OCMF records as typed, frozen data, and their parser (OCMF 1.2, "JSON based OCMF Format").

A record is ``OCMF|<payload data section>|<signature section>``. The signature covers the
payload section byte for byte ("must not be manipulated ... otherwise positive validation is
not possible"), so the parser keeps those bytes exactly as they stand between the first and
the last pipe and never re-serializes them. JSON numbers are kept as the text they were
written as (Table 7, RV: "the representation must not be transformed").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from metrocloud.domain.errors import InvalidInput

__all__ = [
    "RULE_FORMAT",
    "OcmfDocument",
    "OcmfSignature",
    "Reading",
    "effective_readings",
    "parse_ocmf",
    "serialize_ocmf",
]

RULE_FORMAT = "OCMF 1.2 §JSON based OCMF Format (OCMF|payload|signature)"
RULE_PAYLOAD = "OCMF 1.2 §Payload Data Section"
RULE_SIGNATURE = "OCMF 1.2 Table 8 (signature section)"
RULE_READINGS = "OCMF 1.2 Table 7 (readings)"
HEADER = "OCMF"


class _Number(str):
    """A JSON number, kept as the exact text it was written as."""

    __slots__ = ()


@dataclass(frozen=True)
class Reading:
    """One reading of RD as written (Table 7); omitted fields are None (see inheritance)."""

    time: str | None = None
    transaction: str | None = None
    value: str | None = None
    obis: str | None = None
    unit: str | None = None
    current_type: str | None = None
    cumulated_loss: str | None = None
    error_flags: str | None = None
    status: str | None = None

    def inherit(self, previous: Reading) -> Reading:
        """This reading with omitted fields taken from ``previous`` (Table 7, "Readings").

        "Fields that have an identical value to the previous reading are omitted"; RV and CL
        belong to one reading and are never inherited.
        """
        taken = {
            f.name: getattr(previous, f.name)
            for f in fields(self)
            if getattr(self, f.name) is None and f.name not in ("value", "cumulated_loss")
        }
        return replace(self, **taken)

    def to_dict(self) -> dict[str, str | None]:
        """time, transaction, value, unit, obis, status: the keys of the verdict JSON."""
        return {
            "time": self.time,
            "transaction": self.transaction,
            "value": None if self.value is None else self.value.strip(),
            "unit": self.unit,
            "obis": self.obis,
            "status": self.status,
        }


@dataclass(frozen=True)
class OcmfSignature:
    """The signature section (Table 8): SA, SE, SM as given (None when absent) and SD."""

    algorithm: str | None
    encoding: str | None
    mime_type: str | None
    data: str
    #: the section exactly as it stands after the last pipe
    raw: bytes


@dataclass(frozen=True)
class OcmfDocument:
    """One OCMF record: the signed payload bytes, its fields (Tables 1-7) and the signature."""

    #: the signed bytes: the payload section exactly as it stands between the pipes
    payload: bytes
    signature: OcmfSignature
    format_version: str | None = None
    gateway_id: str | None = None
    gateway_serial: str | None = None
    gateway_version: str | None = None
    pagination: str | None = None
    meter_vendor: str | None = None
    meter_model: str | None = None
    meter_serial: str | None = None
    meter_firmware: str | None = None
    identification_status: bool | None = None
    identification_level: str | None = None
    identification_flags: tuple[str, ...] = ()
    identification_type: str | None = None
    identification_data: str | None = None
    tariff_text: str | None = None
    charge_point_type: str | None = None
    charge_point_id: str | None = None
    readings: tuple[Reading, ...] = ()


_HEADER_FIELDS = {
    "FV": "format_version",
    "GI": "gateway_id",
    "GS": "gateway_serial",
    "GV": "gateway_version",
    "PG": "pagination",
    "MV": "meter_vendor",
    "MM": "meter_model",
    "MS": "meter_serial",
    "MF": "meter_firmware",
    "IL": "identification_level",
    "IT": "identification_type",
    "ID": "identification_data",
    "TT": "tariff_text",
    "CT": "charge_point_type",
    "CI": "charge_point_id",
}
_READING_FIELDS = {
    "TM": "time",
    "TX": "transaction",
    "RV": "value",
    "RI": "obis",
    "RU": "unit",
    "RT": "current_type",
    "CL": "cumulated_loss",
    "EF": "error_flags",
    "ST": "status",
}


def parse_ocmf(text: str | bytes) -> OcmfDocument:
    """Parse ``OCMF|{payload}|{signature}``; whitespace around the whole string is ignored.

    The payload is everything between the first and the last pipe, kept as bytes. Raises
    :class:`InvalidInput` (with the rule) for anything that is not such a record.
    """
    data = _as_bytes(text)
    first, last = data.find(b"|"), data.rfind(b"|")
    if first < 0 or first == last:
        raise _err(f"expected OCMF|payload|signature, found {_preview(data)}", RULE_FORMAT)
    found = data[:first].decode("utf-8", "replace")
    if found != HEADER:
        raise _err(f"header is {found[:20]!r}, expected 'OCMF'", RULE_FORMAT)
    payload, raw_signature = data[first + 1 : last], data[last + 1 :]
    body = _json_object(payload, "payload section", RULE_PAYLOAD)
    signature = _json_object(raw_signature, "signature section", RULE_SIGNATURE)
    general: dict[str, Any] = {a: _string(body, k, RULE_PAYLOAD) for k, a in _HEADER_FIELDS.items()}
    return OcmfDocument(
        payload=payload,
        signature=_signature(signature, raw_signature),
        identification_status=_boolean(body, "IS"),
        identification_flags=_strings(body, "IF"),
        readings=_readings(body),
        **general,
    )


def serialize_ocmf(doc: OcmfDocument) -> str:
    """The record as text: header, the payload bytes unchanged, the signature section."""
    return b"|".join((HEADER.encode(), doc.payload, doc.signature.raw)).decode("utf-8")


def effective_readings(doc: OcmfDocument) -> tuple[Reading, ...]:
    """The readings with omitted fields inherited from the previous reading (Table 7)."""
    out: list[Reading] = []
    for reading in doc.readings:
        out.append(reading.inherit(out[-1]) if out else reading)
    return tuple(out)


def _as_bytes(text: str | bytes) -> bytes:
    if isinstance(text, str):
        try:
            data = text.strip().encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _err(
                f"text is not encodable as UTF-8 at position {exc.start}", RULE_FORMAT
            ) from None
    else:
        data = text.removeprefix(b"\xef\xbb\xbf").strip()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err(f"not UTF-8 text: invalid byte at position {exc.start}", RULE_FORMAT) from None
    return data


def _preview(data: bytes) -> str:
    text = data[:24].decode("utf-8", "replace")
    return repr(text) + ("..." if len(data) > 24 else "")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json_object(raw: bytes, what: str, rule: str) -> dict[str, Any]:
    """A JSON object from ``raw``: duplicate keys, NaN and Infinity are refused."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_float=_Number,
            parse_int=_Number,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise _err(f"{what} is not valid JSON: {_short(exc)}", rule) from None
    if not isinstance(value, dict):
        raise _err(f"{what} must be a JSON object, found {_kind(value)}", rule)
    return value


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _kind(value: object) -> str:
    if isinstance(value, _Number):
        return "a number"
    names = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _string(obj: Mapping[str, Any], key: str, rule: str, scalars: bool = True) -> str | None:
    """A string field; unless ``scalars`` is False a JSON number or boolean is kept as its text
    (meters write "FV": 1.0 and "CT": 0)."""
    value = obj.get(key)
    if not scalars and isinstance(value, _Number | bool):
        raise _err(f"{key} must be a string, found {_kind(value)}", rule)
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    raise _err(f"{key} must be a string, found {_kind(value)}", rule)


def _boolean(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _err(f"{key} must be a boolean, found {_kind(value)}", "OCMF 1.2 Table 4 (IS)")


def _strings(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(str(v) for v in value)
    raise _err(f"{key} must be an array of strings, found {_kind(value)}", "OCMF 1.2 Table 4")


def _readings(body: Mapping[str, Any]) -> tuple[Reading, ...]:
    value = body.get("RD")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _err(f"RD must be an array of readings, found {_kind(value)}", RULE_READINGS)
    out = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise _err(f"reading {n} of RD must be an object, found {_kind(item)}", RULE_READINGS)
        out.append(
            Reading(**{a: _string(item, k, RULE_READINGS) for k, a in _READING_FIELDS.items()})
        )
    return tuple(out)


def _signature(obj: Mapping[str, Any], raw: bytes) -> OcmfSignature:
    sd = _string(obj, "SD", RULE_SIGNATURE, scalars=False)
    if not sd:
        raise _err("signature section has no SD (signature data)", RULE_SIGNATURE)
    return OcmfSignature(
        algorithm=_string(obj, "SA", RULE_SIGNATURE, scalars=False),
        encoding=_string(obj, "SE", RULE_SIGNATURE, scalars=False),
        mime_type=_string(obj, "SM", RULE_SIGNATURE, scalars=False),
        data=sd,
        raw=raw,
    )


def _err(message: str, rule: str) -> InvalidInput:
    return InvalidInput(f"{message} [{rule}]", rule=rule)
