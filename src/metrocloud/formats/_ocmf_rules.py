"""Semantic rules of OCMF records, alone and as the transactions of one file.

OCMF 1.2 §"Signing and Verification Process": "The cohesion between several individual data
records is ensured by continuous pagination. ... The first record must be marked as the start
of a charging process, the last as the end of the charging process. In between, no data
records may have been removed or added. Likewise, intermediate error conditions ... and the
detection of unusable variables must lead to an error during the test. Furthermore, all data
records must come from the same source (serial number)."

Each broken rule is a :class:`Finding` whose text says what was expected, what was found, and
which rule of the specification it is.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Literal

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.formats._ocmf_model import OcmfDocument, Reading, effective_readings

__all__ = [
    "END_CODES",
    "Finding",
    "check_document",
    "check_group",
    "parse_time",
]

RULE_PROCESS = "OCMF 1.2 §Signing and Verification Process"
RULE_PG = "OCMF 1.2 Table 2 (PG)"
RULE_SERIAL = "OCMF 1.2 Table 1 (GS) and Table 3 (MS)"
RULE_IL = "OCMF 1.2 Table 11 (IL)"
RULE_TM = "OCMF 1.2 Table 7 (TM) and Table 19 (time status)"
RULE_TX = "OCMF 1.2 Table 7 (TX)"
RULE_RV = "OCMF 1.2 Table 7 (RV)"
RULE_EF = "OCMF 1.2 Table 7 (EF)"
RULE_ST = "OCMF 1.2 Table 7 (ST) and Table 10 (meter status)"
RULE_RD = "OCMF 1.2 Table 7 (readings)"

#: TX codes that end a transaction (E, and the more precise L, R, A, P)
END_CODES = frozenset("ELRAP")
_TX_CODES = frozenset("BCXST") | END_CODES
_METER_STATUS = {
    "N": "NOT_PRESENT",
    "G": "OK",
    "T": "TIMEOUT",
    "D": "DISCONNECTED",
    "R": "NOT_FOUND",
    "M": "MANIPULATED",
    "X": "EXCHANGED",
    "I": "INCOMPATIBLE",
    "O": "OUT_OF_RANGE",
    "S": "SUBSTITUTE",
    "E": "OTHER_ERROR",
    "F": "READ_ERROR",
}
_ERROR_FLAGS = {"E": "energy", "t": "time"}
_IL_ERRORS = frozenset({"MISMATCH", "INVALID", "OUTDATED", "UNKNOWN"})
_PG = re.compile(r"(?P<context>[TF])(?P<number>0|[1-9][0-9]*)")
_TM = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}),(?P<ms>\d{3})(?P<zone>[+-]\d{4})"
    r" (?P<sync>[UISR])"
)


@dataclass(frozen=True)
class Finding:
    """One reason a value is not valid: ``invalid`` (a check failed) or ``error`` (cannot check)."""

    kind: Literal["invalid", "error"]
    #: message with evidence, ending with the rule in brackets
    text: str
    rule: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def invalid(cls, message: str, rule: str) -> Finding:
        return cls("invalid", f"{message} [{rule}]", rule)

    @classmethod
    def error(cls, message: str, rule: str) -> Finding:
        return cls("error", f"{message} [{rule}]", rule)

    @classmethod
    def of(cls, exc: MetrocloudError, kind: Literal["invalid", "error"]) -> Finding:
        """A finding from an error whose message already names its rule."""
        return cls(kind, exc.message, exc.rule or "")

    def to_error(self) -> MetrocloudError:
        """The finding as the error to raise: VerificationError or InvalidInput."""
        cls = VerificationError if self.kind == "invalid" else InvalidInput
        return cls(self.text, rule=self.rule)


def parse_time(tm: str | None) -> datetime | None:
    """The instant of TM (``2018-07-24T13:22:04,000+0200 S``), None if it is malformed."""
    match = _TM.fullmatch(tm or "")
    if match is None:
        return None
    try:
        return datetime.strptime(
            f"{match['date']}.{match['ms']}{match['zone']}", "%Y-%m-%dT%H:%M:%S.%f%z"
        )
    except ValueError:
        return None


def _page(doc: OcmfDocument) -> tuple[str, int] | None:
    match = _PG.fullmatch(doc.pagination or "")
    return (match["context"], int(match["number"])) if match else None


def _decimal(text: str | None) -> Decimal | None:
    try:
        value = Decimal((text or "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


# --- one record -------------------------------------------------------------------------


def check_document(doc: OcmfDocument) -> list[Finding]:
    """The rules a single record must keep, whatever the other records of its file."""
    readings = effective_readings(doc)
    out = [*_pagination(doc), *_serial(doc), *_identification(doc)]
    out += _first_reading(doc.readings)
    out += _reading_rules(readings)
    out += _context(doc, readings)
    return out


def _pagination(doc: OcmfDocument) -> list[Finding]:
    if _page(doc) is not None:
        return []
    return [
        Finding.invalid(
            f"PG is {doc.pagination!r}; expected T or F followed by a number without leading "
            "zeros (e.g. 'T12')",
            RULE_PG,
        )
    ]


def _serial(doc: OcmfDocument) -> list[Finding]:
    if (doc.meter_serial or "").strip() or (doc.gateway_serial or "").strip():
        return []
    return [
        Finding.invalid("neither MS (meter serial) nor GS (gateway serial) is given", RULE_SERIAL)
    ]


def _identification(doc: OcmfDocument) -> list[Finding]:
    level = (doc.identification_level or "").strip()
    if level not in _IL_ERRORS:
        return []
    return [
        Finding.invalid(
            f"IL is {level}: the user assignment failed; expected no error state", RULE_IL
        )
    ]


def _first_reading(raw: Sequence[Reading]) -> list[Finding]:
    if not raw:
        return [Finding.invalid("RD holds no reading; expected one or more", RULE_RD)]
    first = raw[0]
    missing = [k for k, v in (("TM", first.time), ("ST", first.status)) if v is None]
    if not missing:
        return []
    return [
        Finding.invalid(
            f"reading 1 lacks {' and '.join(missing)}; the first reading must give them "
            "(later readings inherit them)",
            RULE_RD,
        )
    ]


def _reading_rules(readings: Sequence[Reading]) -> list[Finding]:
    """The rules of each reading; one finding per broken rule, naming all its readings."""
    broken: dict[tuple[str, str], list[int]] = {}
    for n, reading in enumerate(readings, 1):
        for message, rule in (*_reading(reading), *_status(reading), *_flags(reading)):
            broken.setdefault((message, rule), []).append(n)
    return [
        Finding.invalid(
            f"{'reading' if len(ns) == 1 else 'readings'} {', '.join(map(str, ns))}: {message}",
            rule,
        )
        for (message, rule), ns in broken.items()
    ]


def _reading(r: Reading) -> list[tuple[str, str]]:
    out = []
    if r.time is not None and parse_time(r.time) is None:
        out.append(
            (
                f"TM {r.time!r} is not 'YYYY-MM-DDThh:mm:ss,fff+hhmm S' with time status "
                "U, I, S or R",
                RULE_TM,
            )
        )
    if r.transaction is not None and r.transaction not in _TX_CODES:
        codes = ", ".join(sorted(_TX_CODES))
        out.append((f"TX {r.transaction!r} is unknown; expected one of {codes}", RULE_TX))
    if r.transaction == "X":
        out.append(
            (
                "TX=X, an error during charging: time and/or energy are no longer usable "
                "from this reading on",
                RULE_TX,
            )
        )
    if r.value is not None and _decimal(r.value) is None:
        out.append((f"RV {r.value!r} is not a number", RULE_RV))
    return out


def _status(r: Reading) -> list[tuple[str, str]]:
    if r.status is None or r.status == "G":
        return []
    name = _METER_STATUS.get(r.status, "unknown")
    return [(f"meter status ST={r.status} ({name}); expected G (OK)", RULE_ST)]


def _flags(r: Reading) -> list[tuple[str, str]]:
    flags = (r.error_flags or "").strip()
    if not flags:
        return []
    unusable = [_ERROR_FLAGS[c] for c in flags if c in _ERROR_FLAGS]
    unknown = sorted({c for c in flags if c not in _ERROR_FLAGS})
    what = " and ".join(unusable) + " no longer usable for billing" if unusable else ""
    if unknown:
        what += ("; " if what else "") + f"unknown flag(s) {''.join(unknown)!r}"
    return [(f"error flags EF={flags!r}: {what}; expected none", RULE_EF)]


def _context(doc: OcmfDocument, readings: Sequence[Reading]) -> list[Finding]:
    """T pagination means readings in a transaction (with TX); F, readings outside one."""
    page = _page(doc)
    with_tx = any(r.transaction is not None for r in readings)
    if page is None or not readings:
        return []
    if page[0] == "T" and not with_tx:
        return [
            Finding.invalid(
                f"PG {doc.pagination} is a transaction page but no reading has TX", RULE_PG
            )
        ]
    if page[0] == "F" and with_tx:
        return [
            Finding.invalid(
                f"PG {doc.pagination} is a fiscal page but readings have TX (only given in "
                "transaction reference)",
                RULE_TX,
            )
        ]
    return []


# --- the records of one signing component in one file ------------------------------------


@dataclass(frozen=True)
class _Entry:
    index: int
    number: int
    reading: Reading


def check_group(records: Sequence[tuple[int, OcmfDocument]]) -> dict[int, list[Finding]]:
    """Rules across the records (value index, record) of one signing component in one file.

    Pagination must count up by one per record in each context; the records of context T
    form transactions (a record starting with TX=B, or following an ended transaction, opens
    the next one), which must begin with B, end with E/L/R/A/P, keep each register's codes
    in order, its readings in time and its meter readings rising, and come from one meter.
    """
    found: dict[int, list[Finding]] = defaultdict(list)
    _continuity(records, found)
    for transaction in _transactions(records):
        _check_transaction(transaction, found)
    return dict(found)


def _continuity(
    records: Sequence[tuple[int, OcmfDocument]], found: dict[int, list[Finding]]
) -> None:
    pages: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for index, doc in records:
        page = _page(doc)
        if page is not None:
            pages[page[0]].append((page[1], index))
    for context, numbered in pages.items():
        numbered.sort()
        for (before, at), (number, index) in pairwise(numbered):
            if number == before:
                for i, other in ((at, index), (index, at)):
                    found[i].append(
                        Finding.invalid(
                            f"PG {context}{number} is also the page of value {other}; "
                            "expected each record its own page",
                            RULE_PG,
                        )
                    )
            elif number != before + 1:
                found[index].append(
                    Finding.invalid(
                        f"PG {context}{number} follows {context}{before} (value {at}): "
                        f"{number - before - 1} record(s) missing; expected {context}{before + 1}",
                        RULE_PROCESS,
                    )
                )


def _transactions(
    records: Sequence[tuple[int, OcmfDocument]],
) -> list[list[tuple[int, OcmfDocument]]]:
    ordered = sorted(
        (
            (page[1], index, doc)
            for index, doc in records
            if (page := _page(doc)) and page[0] == "T"
        ),
        key=lambda t: (t[0], t[1]),
    )
    out: list[list[tuple[int, OcmfDocument]]] = []
    for _, index, doc in ordered:
        codes = _codes([doc])
        if not out or codes[:1] == ["B"] or _ended(out[-1]):
            out.append([])
        out[-1].append((index, doc))
    return out


def _codes(docs: Iterable[OcmfDocument]) -> list[str]:
    return [r.transaction for d in docs for r in effective_readings(d) if r.transaction]


def _ended(transaction: Sequence[tuple[int, OcmfDocument]]) -> bool:
    codes = _codes(doc for _, doc in transaction)
    return bool(codes) and codes[-1] in END_CODES


def _check_transaction(
    transaction: Sequence[tuple[int, OcmfDocument]], found: dict[int, list[Finding]]
) -> None:
    entries = [
        _Entry(index, n, r)
        for index, doc in transaction
        for n, r in enumerate(effective_readings(doc), 1)
    ]
    coded = [e for e in entries if e.reading.transaction]
    if not coded:
        return
    first, last = coded[0], coded[-1]
    if first.reading.transaction != "B":
        found[first.index].append(
            Finding.invalid(
                f"transaction begins with TX={first.reading.transaction} (value {first.index}, "
                f"reading {first.number}); expected B, the begin of the transaction",
                RULE_PROCESS,
            )
        )
    if last.reading.transaction not in END_CODES:
        found[last.index].append(
            Finding.invalid(
                f"transaction is not ended: its last reading (value {last.index}, reading "
                f"{last.number}) has TX={last.reading.transaction}; expected one of "
                f"{', '.join(sorted(END_CODES))}",
                RULE_PROCESS,
            )
        )
    for register in _by_register(coded).values():
        _register_order(register, found)
        _register_progress(register, found)
    _same_source(transaction, found)


def _by_register(entries: Sequence[_Entry]) -> dict[str | None, list[_Entry]]:
    out: dict[str | None, list[_Entry]] = defaultdict(list)
    for entry in entries:
        out[entry.reading.obis].append(entry)
    return out


def _register_order(register: Sequence[_Entry], found: dict[int, list[Finding]]) -> None:
    """B only before any other code, nothing after an end code (per register, RI)."""
    previous: _Entry | None = None
    for entry in register:
        code = entry.reading.transaction
        if previous is not None:
            before = previous.reading.transaction
            broken = (before in END_CODES) or (code == "B" and before != "B")
            if broken:
                found[entry.index].append(
                    Finding.invalid(
                        f"value {entry.index}, reading {entry.number} (RI "
                        f"{entry.reading.obis}): TX={code} after TX={before}; expected B first, "
                        "then C, S, T or X, and an end code last",
                        RULE_TX,
                    )
                )
        previous = entry


def _register_progress(register: Sequence[_Entry], found: dict[int, list[Finding]]) -> None:
    """Time and meter reading never go back within a register of one transaction."""
    for before, entry in pairwise(register):
        t0, t1 = parse_time(before.reading.time), parse_time(entry.reading.time)
        where = f"value {entry.index}, reading {entry.number} (RI {entry.reading.obis})"
        if t0 is not None and t1 is not None and t1 < t0:
            found[entry.index].append(
                Finding.invalid(
                    f"{where}: TM {entry.reading.time} is before {before.reading.time}; "
                    "expected time not to go back",
                    RULE_TM,
                )
            )
        v0, v1 = _decimal(before.reading.value), _decimal(entry.reading.value)
        if v0 is not None and v1 is not None and v1 < v0:
            found[entry.index].append(
                Finding.invalid(
                    f"{where}: RV {entry.reading.value.strip() if entry.reading.value else ''} "
                    f"is below {v0}; expected the register not to decrease",
                    RULE_RV,
                )
            )


def _same_source(
    transaction: Sequence[tuple[int, OcmfDocument]], found: dict[int, list[Finding]]
) -> None:
    first_index, first = transaction[0]
    for index, doc in transaction[1:]:
        for key, attr in (("MS", "meter_serial"), ("GS", "gateway_serial")):
            expected, actual = getattr(first, attr), getattr(doc, attr)
            if actual != expected:
                found[index].append(
                    Finding.invalid(
                        f"{key} is {actual!r}, but {expected!r} in value {first_index} of the "
                        "same transaction; expected all records from the same source",
                        RULE_PROCESS,
                    )
                )
