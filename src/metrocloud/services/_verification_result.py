"""The verification result: its canonical form, its signature by the authority, strict parsing.

A result is a JSON object (RFC 8785 canonical bytes are what is signed)::

    {"format": "metrocloud verification result v1",
     "node_id": "node-DE-...", "instrument_id": "ins-DE-...", "serial": "...",
     "category": "MI-003", "authority_id": "pty-DE-...",
     "evaluated_at": "2026-12-07T10:00:00.000Z",
     "outcome": "pass" | "fail",
     "verified_until": "2034-12-31" | null,
     "period": {"years": 8, "source": "MessEV Anlage 7: ..."} | null,
     "checks": [{"number": 1, "name": "certificate", "outcome": "pass", "evidence": {...},
                 "findings": []}, ...],
     "override": null | "why the authority's verdict differs from the node's"}

The authority signs ``RESULT_DOMAIN + canonical_json(result)`` with its own key; the domain
prefix keeps a result signature from ever passing as a statement, request or device
signature. The signed result travels as ``{"result": {...}, "signature": {"key_id": <hex>,
"alg": "ed25519" | "ecdsa-p256-sha256", "sig": <standard base64>}}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey
from metrocloud.trust.statements import Signature, parse_utc_timestamp

__all__ = [
    "CHECK_NAMES",
    "RESULT_DOMAIN",
    "RESULT_FORMAT",
    "Check",
    "Finding",
    "Outcome",
    "SignedResult",
    "VerificationResult",
    "sign_result",
    "verify_result",
]

#: prefix of the bytes an authority's result signature covers
RESULT_DOMAIN: Final = b"metrocloud-verification-result-v1\x00"
RESULT_FORMAT: Final = "metrocloud verification result v1"
#: the checklist, in order: number -> name
CHECK_NAMES: Final = ("certificate", "software", "event-log", "reference-readings")
_RULE = RESULT_FORMAT + " (docs/verification.md)"
_KEYS = frozenset(
    {
        "format",
        "node_id",
        "instrument_id",
        "serial",
        "category",
        "authority_id",
        "evaluated_at",
        "outcome",
        "verified_until",
        "period",
        "checks",
        "override",
    }
)
_CHECK_KEYS = frozenset({"number", "name", "outcome", "evidence", "findings"})
_FINDING_KEYS = frozenset({"code", "message", "rule"})
_SIGNED_KEYS = frozenset({"result", "signature"})
_SIGNATURE_KEYS = frozenset({"key_id", "alg", "sig"})
_MAX_TEXT = 2000


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """One reason a check failed: a stable ``code``, the evidence in words, the rule."""

    code: str
    message: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "rule": self.rule}


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One numbered check of the checklist."""

    number: int
    name: str
    outcome: Outcome
    evidence: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "outcome": self.outcome.value,
            "evidence": dict(self.evidence),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class VerificationResult:
    """The outcome of remote verification of one instrument at ``evaluated_at``."""

    node_id: str
    instrument_id: str
    serial: str
    category: str
    authority_id: str
    evaluated_at: str
    outcome: Outcome
    verified_until: date | None
    period: Mapping[str, Any] | None
    checks: tuple[Check, ...]
    override: str | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def reasons(self) -> tuple[Finding, ...]:
        """Every finding of every failing check, in checklist order."""
        return tuple(f for c in self.checks if c.outcome is Outcome.FAIL for f in c.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "node_id": self.node_id,
            "instrument_id": self.instrument_id,
            "serial": self.serial,
            "category": self.category,
            "authority_id": self.authority_id,
            "evaluated_at": self.evaluated_at,
            "outcome": self.outcome.value,
            "verified_until": self.verified_until.isoformat() if self.verified_until else None,
            "period": dict(self.period) if self.period is not None else None,
            "checks": [c.to_json() for c in self.checks],
            "override": self.override,
        }

    def signed_bytes(self) -> bytes:
        """``RESULT_DOMAIN`` + the RFC 8785 canonical JSON of :meth:`to_json`."""
        return RESULT_DOMAIN + canonical_json(self.to_json())

    def verdict(self) -> dict[str, Any]:
        """What the node's own evaluation must agree with: everything but the evidence
        numbers, the finding texts and the override (docs/verification.md, "Recording")."""
        out = self.to_json()
        out.pop("override")
        out["checks"] = [
            {
                "number": c.number,
                "name": c.name,
                "outcome": c.outcome.value,
                "findings": [f.code for f in c.findings],
            }
            for c in self.checks
        ]
        return out

    @classmethod
    def from_json(cls, raw: Any) -> VerificationResult:
        """Parse strictly (exact fields and types, a consistent checklist);
        :class:`InvalidInput` names the first problem."""
        obj = _object(raw, _KEYS, "result")
        if obj["format"] != RESULT_FORMAT:
            raise InvalidInput(
                f"result format must be {RESULT_FORMAT!r}, found {obj['format']!r}", rule=_RULE
            )
        for name in ("node_id", "instrument_id", "serial", "category", "authority_id"):
            _text(obj[name], f"result {name}")
        parse_utc_timestamp(_text(obj["evaluated_at"], "result evaluated_at"), what="evaluated_at")
        outcome = _outcome(obj["outcome"], "result outcome", (Outcome.PASS, Outcome.FAIL))
        until = obj["verified_until"]
        if until is not None:
            try:
                until = date.fromisoformat(_text(until, "result verified_until"))
            except ValueError:
                raise InvalidInput(
                    f"result verified_until must be an ISO date, found {until!r}", rule=_RULE
                ) from None
        if (outcome is Outcome.PASS) != (until is not None):
            raise InvalidInput(
                "result verified_until is given exactly when the outcome is pass", rule=_RULE
            )
        period = obj["period"]
        if period is not None and type(period) is not dict:
            raise InvalidInput("result period must be an object or null", rule=_RULE)
        checks = _checks(obj["checks"])
        override = obj["override"]
        if override is not None:
            _text(override, "result override")
        failing = any(c.outcome is Outcome.FAIL for c in checks)
        if override is None and failing != (outcome is Outcome.FAIL):
            raise InvalidInput(
                f"result outcome {outcome.value} contradicts its checklist "
                f"({'a check fails' if failing else 'no check fails'}); an authority that "
                "decides otherwise says why in override",
                rule=_RULE,
            )
        canonical_json(period)
        return cls(
            node_id=obj["node_id"],
            instrument_id=obj["instrument_id"],
            serial=obj["serial"],
            category=obj["category"],
            authority_id=obj["authority_id"],
            evaluated_at=obj["evaluated_at"],
            outcome=outcome,
            verified_until=until,
            period=MappingProxyType(period) if period is not None else None,
            checks=checks,
            override=override,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedResult:
    """A result and the authority's signature over its canonical bytes."""

    result: VerificationResult
    signature: Signature

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result.to_json(),
            "signature": {
                "key_id": self.signature.key_id,
                "alg": self.signature.alg.value,
                "sig": base64.b64encode(self.signature.sig).decode("ascii"),
            },
        }

    @classmethod
    def from_json(cls, raw: Any) -> SignedResult:
        obj = _object(raw, _SIGNED_KEYS, "signed result")
        sig = _object(obj["signature"], _SIGNATURE_KEYS, "signature")
        return cls(
            result=VerificationResult.from_json(obj["result"]),
            signature=Signature(
                key_id=sig["key_id"],
                alg=sig["alg"],
                sig=_b64decode(sig["sig"]),
            ),
        )


def sign_result(result: VerificationResult, key: PrivateKey) -> SignedResult:
    """The authority's signature over ``result`` (done where its key is; never at the node)."""
    sig = key.sign(result.signed_bytes())
    return SignedResult(
        result=result, signature=Signature(key_id=key.key_id, alg=key.algorithm, sig=sig)
    )


def verify_result(signed: SignedResult, key: PublicKey) -> None:
    """:class:`VerificationError` unless ``key`` signed exactly ``signed.result``."""
    s = signed.signature
    if s.key_id != key.key_id:
        raise VerificationError(
            f"result for {signed.result.instrument_id} is signed with key {s.key_id}, the "
            f"authority's registered key is {key.key_id}",
            rule=_RULE,
        )
    if s.alg is not key.algorithm:
        raise VerificationError(
            f"result signature claims alg {s.alg.value}, the key is {key.algorithm.value}",
            rule=_RULE,
        )
    try:
        key.verify(s.sig, signed.result.signed_bytes())
    except VerificationError as exc:
        raise VerificationError(
            f"result for {signed.result.instrument_id}: {exc} (the result was altered or "
            "signed by another key)",
            rule=exc.rule,
        ) from None


# -- strict parsing helpers ----------------------------------------------------------------


def _object(raw: Any, keys: frozenset[str], what: str) -> dict[str, Any]:
    if type(raw) is not dict or raw.keys() != keys:
        found = sorted(raw) if type(raw) is dict else type(raw).__name__
        raise InvalidInput(
            f"{what} must have exactly the fields {', '.join(sorted(keys))}; found {found}",
            rule=_RULE,
        )
    return raw


def _b64decode(text: Any) -> bytes:
    """Standard padded base64 (RFC 4648 §4) in its one canonical form."""
    try:
        data = base64.b64decode(text, validate=True) if type(text) is str else b""
    except (binascii.Error, ValueError):
        data = b""
    if not data or base64.b64encode(data).decode("ascii") != text:
        raise InvalidInput(
            "signature sig must be standard padded base64 (RFC 4648 §4)", rule="RFC 4648 §4"
        )
    return data


def _text(value: Any, what: str) -> str:
    if type(value) is not str or not value.strip() or len(value) > _MAX_TEXT:
        raise InvalidInput(f"{what} must be non-empty text of at most {_MAX_TEXT} characters")
    return value


def _outcome(value: Any, what: str, allowed: Sequence[Outcome]) -> Outcome:
    names = [o.value for o in allowed]
    if type(value) is not str or value not in names:
        raise InvalidInput(f"{what} must be one of {', '.join(names)}, found {value!r}", rule=_RULE)
    return Outcome(value)


def _checks(raw: Any) -> tuple[Check, ...]:
    if type(raw) is not list or len(raw) != len(CHECK_NAMES):
        raise InvalidInput(
            f"result checks must be a list of the {len(CHECK_NAMES)} checks "
            f"({', '.join(CHECK_NAMES)})",
            rule=_RULE,
        )
    out = []
    for index, item in enumerate(raw):
        c = _object(item, _CHECK_KEYS, f"check {index + 1}")
        number, name = index + 1, CHECK_NAMES[index]
        if c["number"] != number or type(c["number"]) is not int or c["name"] != name:
            raise InvalidInput(
                f"check {index + 1} must be number {number} named {name!r}, found "
                f"{c['number']!r} {c['name']!r}",
                rule=_RULE,
            )
        outcome = _outcome(c["outcome"], f"check {number} outcome", tuple(Outcome))
        if type(c["evidence"]) is not dict:
            raise InvalidInput(f"check {number} evidence must be an object", rule=_RULE)
        if type(c["findings"]) is not list:
            raise InvalidInput(f"check {number} findings must be a list", rule=_RULE)
        findings = []
        for f in c["findings"]:
            fo = _object(f, _FINDING_KEYS, f"check {number} finding")
            findings.append(
                Finding(
                    code=_text(fo["code"], "finding code"),
                    message=_text(fo["message"], "finding message"),
                    rule=_text(fo["rule"], "finding rule"),
                )
            )
        if (outcome is Outcome.FAIL) != bool(findings):
            raise InvalidInput(f"check {number} has findings exactly when it fails", rule=_RULE)
        canonical_json(c["evidence"])
        out.append(
            Check(
                number=number,
                name=name,
                outcome=outcome,
                evidence=MappingProxyType(c["evidence"]),
                findings=tuple(findings),
            )
        )
    return tuple(out)
