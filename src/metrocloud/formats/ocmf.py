"""OCMF, the Open Charge Metering Format: parse, verify, and judge whole files.

OCMF (S.A.F.E. e.V., revision 1.2; https://github.com/SAFE-eV/OCMF-Open-Charge-Metering-Format)
carries the meter readings of an EV charging point that matter under German calibration law
as ``OCMF|{payload}|{signature}``: a JSON payload (Tables 1-7) and a JSON signature section
(Table 8) holding an ECDSA signature over the payload bytes exactly as they stand.

- :func:`parse_ocmf` turns text into an :class:`OcmfDocument` (raw payload bytes kept).
- :func:`verify_ocmf` checks one record against a public key and the rules a single record
  must keep, and returns a :class:`Verdict`: ``valid``, ``invalid`` (a check failed) or
  ``error`` (it cannot be checked: no key, unsupported algorithm, malformed key).
- :func:`verify_file` reads a Transparenzsoftware XML container or a bare OCMF record and
  returns one :class:`VerdictRecord` per value, adding the rules across the records of one
  signing component (continuous pagination, transactions from begin to end, one meter).

Supported: ECDSA on secp192k1, secp192r1, secp256k1, secp256r1, brainpoolP256r1, secp384r1
and brainpoolP384r1 (Table 22) with SHA-256 (SHA-384 and SHA-512 when SA names them).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from metrocloud.domain.errors import InvalidInput
from metrocloud.formats._ocmf_crypto import (
    CURVES,
    DEFAULT_ALGORITHM,
    Algorithm,
    PublicKey,
    decode_binary_text,
    decode_signature,
    load_key,
    parse_algorithm,
    parse_public_key,
    verify_signature,
)
from metrocloud.formats._ocmf_model import (
    RULE_FORMAT,
    OcmfDocument,
    OcmfSignature,
    Reading,
    effective_readings,
    parse_ocmf,
    serialize_ocmf,
)
from metrocloud.formats._ocmf_rules import Finding, check_document, check_group
from metrocloud.formats.transparenz import MAX_BYTES, RULE_XML, ContainerValue, read_container

__all__ = [
    "DEFAULT_ALGORITHM",
    "SUPPORTED_ALGORITHMS",
    "Finding",
    "OcmfDocument",
    "OcmfSignature",
    "Reading",
    "Verdict",
    "VerdictRecord",
    "VerdictStatus",
    "effective_readings",
    "parse_ocmf",
    "read_values",
    "serialize_ocmf",
    "verify_file",
    "verify_ocmf",
    "verify_values",
]

VerdictStatus = Literal["valid", "invalid", "error"]
#: the SA values verified, as OCMF 1.2 Table 22 names them (SHA-384/512 variants accepted too)
SUPPORTED_ALGORITHMS = tuple(f"ECDSA-{c.name}-SHA256" for c in CURVES)

RULE_VERIFY = "OCMF 1.2 §Signing and Verification Process (ECDSA over the payload section)"
RULE_KEY = "OCMF 1.2 §Relation of Serial Numbers, Charge Point and Public Key"
RULE_SM = "OCMF 1.2 Table 8 (SM)"
_DER_MIME = "application/x-der"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one record: status, the reasons (none when valid), the algorithm."""

    status: VerdictStatus
    findings: tuple[Finding, ...]
    algorithm: str | None
    #: whether the signature itself holds (a record can be signed and still break a rule)
    signature_valid: bool = False

    @property
    def reason(self) -> str | None:
        """All reasons in one line, None when valid."""
        return "; ".join(str(f) for f in self.findings) or None

    def require_valid(self) -> None:
        """Raise VerificationError (invalid) or InvalidInput (error) unless valid."""
        deciding = [f for f in self.findings if f.kind == self.status]
        if self.status == "valid" or not deciding:
            return
        first = deciding[0].to_error()
        raise type(first)(self.reason or first.message, rule=first.rule)


@dataclass(frozen=True)
class VerdictRecord:
    """The verdict on one value of a file, as reported by ``metrocloud ocmf verify``."""

    file: str
    index: int
    verdict: VerdictStatus
    reason: str | None
    algorithm: str | None
    meter_serial: str | None
    readings: tuple[Reading, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """Exactly: file, index, verdict, reason, algorithm, meter_serial, readings."""
        return {
            "file": self.file,
            "index": self.index,
            "verdict": self.verdict,
            "reason": self.reason,
            "algorithm": self.algorithm,
            "meter_serial": self.meter_serial,
            "readings": [r.to_dict() for r in self.readings],
        }


def verify_ocmf(doc: OcmfDocument, public_key: str | bytes | None) -> Verdict:
    """Verify one record with ``public_key`` (DER SPKI bytes, or hex/base64 text).

    The signature is checked over ``doc.payload`` with the algorithm SA names (default
    ECDSA-secp256r1-SHA256); then the rules of a single record (pagination format, meter
    status, error flags, reading codes ...). Never raises: every problem is a finding.
    """
    findings, key = _check_signature(doc, public_key)
    verdict = _verdict([*findings, *check_document(doc)], _algorithm(doc))
    return replace(verdict, signature_valid=key is not None)


def verify_values(
    values: Sequence[ContainerValue], name: str, public_key: str | bytes | None = None
) -> list[VerdictRecord]:
    """One record per value; ``public_key`` serves the values that carry none.

    Records whose signature holds are grouped by public key (one signing component) and
    checked together: pagination continuity, transactions from B to an end code, one meter.
    """
    checked = [_check_value(value, public_key) for value in values]
    groups: dict[tuple[str, bytes], list[tuple[int, OcmfDocument]]] = defaultdict(list)
    for c in checked:
        if c.doc is not None and c.key is not None:
            groups[(c.key.label, c.key.point)].append((c.index, c.doc))
    across: dict[int, list[Finding]] = defaultdict(list)
    for records in groups.values():
        for index, found in check_group(records).items():
            across[index].extend(found)
    return [_record(name, c, across.get(c.index, [])) for c in checked]


def verify_file(
    path: str | os.PathLike[str], public_key: str | bytes | None = None
) -> list[VerdictRecord]:
    """Verify every value of a Transparenzsoftware XML file or a file holding one OCMF record.

    Raises :class:`InvalidInput` when the file cannot be read, is too large, is not
    well-formed XML (naming line and column) or is neither such a container nor OCMF.
    """
    name = os.fspath(path)
    return verify_values(read_values(_read(name), name), name, public_key)


# --- one record ---------------------------------------------------------------------------


def _algorithm(doc: OcmfDocument) -> str:
    try:
        return parse_algorithm(doc.signature.algorithm).identifier
    except InvalidInput:
        return (doc.signature.algorithm or "").strip()


def _verdict(findings: Sequence[Finding], algorithm: str | None) -> Verdict:
    kinds = {f.kind for f in findings}
    status: VerdictStatus = "error" if "error" in kinds else "invalid" if kinds else "valid"
    return Verdict(status, tuple(findings), algorithm)


def _check_signature(
    doc: OcmfDocument, public_key: str | bytes | None, key_encoding: str | None = None
) -> tuple[list[Finding], PublicKey | None]:
    """Findings about the signature, and the key when the signature holds."""
    if not public_key:
        return [
            Finding.error("no public key: the value carries none and none was given", RULE_KEY)
        ], None
    try:
        algorithm = parse_algorithm(doc.signature.algorithm)
        _check_mime(doc.signature)
        raw = (
            public_key
            if isinstance(public_key, bytes)
            else decode_binary_text(public_key, key_encoding, "public key")
        )
        key = parse_public_key(raw, algorithm.curve)
        if key.curve == algorithm.curve:
            load_key(key, algorithm.curve)
    except InvalidInput as exc:
        return [Finding.of(exc, "error")], None
    if key.curve != algorithm.curve:
        return [_mismatch(key, algorithm)], None
    try:
        rs = decode_signature(doc.signature.data, doc.signature.encoding, algorithm.curve)
        holds = verify_signature(key, algorithm, rs, doc.payload)
    except InvalidInput as exc:
        return [Finding.of(exc, "invalid")], None
    if not holds:
        return [
            Finding.invalid(
                f"signature does not verify: {algorithm.identifier} over the payload section "
                f"({len(doc.payload)} bytes) with the given public key; expected a valid "
                "signature by that key",
                RULE_VERIFY,
            )
        ], None
    return [], key


def _check_mime(signature: OcmfSignature) -> None:
    mime = (signature.mime_type or _DER_MIME).strip()
    if mime != _DER_MIME:
        raise InvalidInput(
            f"SM is {mime!r}; only {_DER_MIME!r} is defined [{RULE_SM}]", rule=RULE_SM
        )


def _mismatch(key: PublicKey, algorithm: Algorithm) -> Finding:
    what = {"ec": f"an EC key on {key.label}", "rsa": "an RSA key"}.get(key.kind, key.label)
    return Finding.invalid(
        f"public key is {what}, but SA {algorithm.identifier} needs a key on "
        f"{algorithm.curve.name}",
        "OCMF 1.2 Table 22 (signature algorithms) and Table 23 (public key types)",
    )


# --- the values of a file -----------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    index: int
    findings: tuple[Finding, ...]
    doc: OcmfDocument | None = None
    #: the key when the signature holds: the record takes part in the checks across records
    key: PublicKey | None = None


def _check_value(value: ContainerValue, default_key: str | bytes | None) -> _Checked:
    problem = _not_ocmf(value)
    if problem is not None:
        return _Checked(value.index, (Finding.error(problem, RULE_FORMAT),))
    try:
        doc = parse_ocmf(value.signed_data or "")
    except InvalidInput as exc:
        return _Checked(value.index, (Finding.of(exc, "error"),))
    key_text = value.public_key if value.public_key is not None else default_key
    encoding = value.key_encoding if value.public_key is not None else None
    findings, key = _check_signature(doc, key_text, encoding)
    return _Checked(value.index, (*findings, *check_document(doc)), doc, key)


def _not_ocmf(value: ContainerValue) -> str | None:
    """Why the value is not an OCMF record, or None when it looks like one."""
    fmt = (value.data_format or "").strip()
    text = (value.signed_data or "").strip()
    if fmt and fmt.upper() != "OCMF":
        return f"not OCMF: {fmt} format" + _sniff(text, prefix=", ")
    if value.problem is not None:
        return value.problem
    if not text:
        where = "<signedData> is empty" if value.signed_data is not None else "no <signedData>"
        return f"no signed data: {where}"
    if text.startswith("OCMF|"):
        return None
    if fmt:
        return f'format="{fmt}" but the data does not start with "OCMF|"' + _sniff(text, ", ")
    return "not OCMF" + _sniff(text, prefix=": ")


def _sniff(text: str, prefix: str) -> str:
    compact = "".join(text[:64].split()).lower()
    if compact.startswith("1b1b1b1b"):
        return f"{prefix}SML data (hex), e.g. an EDL40 signed meter value"
    if compact.startswith("<?xml") or "<signedmetervalue" in compact:
        return f"{prefix}signedMeterValue XML (EDL format)"
    if not compact:
        return ""
    shown = text[:24] + ("..." if len(text) > 24 else "")
    return f"{prefix}data starts with {shown!r}"


def _record(name: str, checked: _Checked, across: Sequence[Finding]) -> VerdictRecord:
    doc = checked.doc
    verdict = _verdict([*checked.findings, *across], _algorithm(doc) if doc else None)
    return VerdictRecord(
        file=name,
        index=checked.index,
        verdict=verdict.status,
        reason=verdict.reason,
        algorithm=verdict.algorithm,
        meter_serial=doc.meter_serial if doc else None,
        readings=effective_readings(doc) if doc else (),
    )


def _read(name: str) -> bytes:
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise InvalidInput(
            f"{name}: larger than the {MAX_BYTES} bytes accepted [{RULE_XML}]", rule=RULE_XML
        )
    return data


def read_values(data: bytes, name: str) -> list[ContainerValue]:
    """The values of a file's bytes: an XML container, or one bare OCMF record.

    Raises :class:`InvalidInput` (naming ``name``) when the data is neither."""
    head = data.removeprefix(_BOM).lstrip()
    if head.startswith(b"OCMF|"):
        try:
            return [ContainerValue(0, head.decode("utf-8"))]
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{name}: OCMF record is not UTF-8 (invalid byte at {exc.start}) [{RULE_FORMAT}]",
                rule=RULE_FORMAT,
            ) from None
    if head.startswith(b"<") or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return read_container(data, name)
    shown = head[:16].decode("utf-8", "replace")
    raise InvalidInput(
        f"{name}: neither a Transparenzsoftware XML container nor an OCMF record: starts with "
        f"{shown!r}; expected '<' or 'OCMF|' [{RULE_FORMAT}]",
        rule=RULE_FORMAT,
    )
