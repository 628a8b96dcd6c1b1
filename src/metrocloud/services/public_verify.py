"""A consumer checks a signed OCMF meter reading: no login, public facts only.

The record is verified with the public key that comes with the request (or with the
Transparenzsoftware value), or else with the device keys registered on this node for the
meter serial the record names (OCMF ``MS``). The answer adds what is public about that
meter here: the instrument's nameplate data and its certificate's status (nameplate and
certificate data are public; docs/concepts.md). Nothing about operator, location, events
or software is looked at or returned, and nothing is written (no access log: public facts).

Registered device keys are Ed25519 or ECDSA P-256 (:mod:`metrocloud.trust.keys`), so a meter
signing on another curve cannot match a registered key yet: that answer is ``error`` with a
reason saying so.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select

from metrocloud.domain.categories import InstrumentCategory
from metrocloud.domain.certificates import CertificateStatus, effective_status
from metrocloud.domain.errors import Conflict, InvalidInput
from metrocloud.domain.instruments import validate_serial
from metrocloud.formats.ocmf import (
    RULE_KEY,
    RULE_VERIFY,
    SUPPORTED_ALGORITHMS,
    Finding,
    OcmfDocument,
    Verdict,
    VerdictStatus,
    effective_readings,
    parse_ocmf,
    verify_ocmf,
)
from metrocloud.formats.transparenz import read_container
from metrocloud.services.node import Node
from metrocloud.store.schema import certificates, device_keys, instruments
from metrocloud.trust.keys import KeyAlgorithm

__all__ = ["KeySource", "check_reading"]

KeySource = Literal["request", "registry"]
#: more instruments than this under one serial are not even looked at
_MAX_CANDIDATES = 50
#: the OCMF curve a registered device key algorithm is on (Ed25519 is no OCMF algorithm)
_OCMF_CURVE = {KeyAlgorithm.ECDSA_P256.value: "secp256r1"}
_RULE_XML = "Transparenzsoftware container: one <value> per request"
#: the curves OCMF verification supports, by name (SA is ``ECDSA-<curve>-<hash>``)
_CURVES = frozenset(a.split("-")[1] for a in SUPPORTED_ALGORITHMS)


@dataclass(frozen=True)
class _Meter:
    id: str
    serial: str
    category: str
    certificate_id: str
    certificate_status: CertificateStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "serial": self.serial,
            "category": self.category,
            "certificate_id": self.certificate_id,
            "certificate_status": self.certificate_status.value,
            "certificate_valid": self.certificate_status is CertificateStatus.VALID,
        }


@dataclass(frozen=True)
class _Key:
    key_id: str
    algorithm: str
    der: bytes


def check_reading(
    node: Node, *, ocmf: str | None = None, xml: str | None = None, public_key: str | None = None
) -> dict[str, Any]:
    """Verify one OCMF record (``ocmf`` text, or ``xml``: a container holding one value).

    Answers ``{verdict, reason, algorithm, meter_serial, readings, key_source, instrument}``.
    Raises :class:`InvalidInput` when the input is not one OCMF record and
    :class:`Conflict` when its meter serial names several instruments here and none is
    EV charging equipment (``DE-EV``) alone.
    """
    text, carried_key = _record_text(ocmf, xml)
    try:
        doc = parse_ocmf(text)
    except InvalidInput as exc:
        raise InvalidInput(f"ocmf: {exc.message}", rule=exc.rule) from None
    meter, keys = _lookup(node, doc.meter_serial)
    given = public_key if public_key and public_key.strip() else carried_key
    source: KeySource | None
    if given:
        verdict, source = verify_ocmf(doc, given), "request"
    elif meter is None:
        verdict, source = _without_key(doc, _unregistered(doc)), None
    else:
        verdict, source = _with_registered_keys(doc, meter, keys), "registry"
    return {
        "verdict": verdict.status,
        "reason": verdict.reason,
        "algorithm": verdict.algorithm,
        "meter_serial": doc.meter_serial,
        "readings": [r.to_dict() for r in effective_readings(doc)],
        "key_source": source,
        "instrument": meter.to_dict() if meter else None,
    }


# --- input ----------------------------------------------------------------------------------


def _record_text(ocmf: str | None, xml: str | None) -> tuple[str, str | None]:
    """The OCMF text, and the public key the container value carries (if any)."""
    if (ocmf is None) == (xml is None):
        raise InvalidInput("give exactly one of 'ocmf' (an OCMF string) and 'xml' (a container)")
    if ocmf is not None:
        return ocmf, None
    assert xml is not None
    values = read_container(xml.encode("utf-8"), "xml")
    if len(values) != 1:
        raise InvalidInput(
            f"xml: the container holds {len(values)} values; this endpoint checks one record: "
            f"send a container with one <value> or the OCMF string [{_RULE_XML}]",
            rule=_RULE_XML,
        )
    value = values[0]
    fmt = (value.data_format or "").strip()
    if value.problem is not None:
        raise InvalidInput(f"xml: {value.problem}", rule=_RULE_XML)
    if fmt and fmt.upper() != "OCMF":
        raise InvalidInput(f"xml: signedData format is {fmt!r}, not OCMF", rule=_RULE_XML)
    if not (value.signed_data or "").strip():
        raise InvalidInput("xml: the value has no signed data (<signedData>)", rule=_RULE_XML)
    key = value.public_key.strip() if value.public_key else None
    return value.signed_data or "", key or None


# --- the registry ---------------------------------------------------------------------------


def _lookup(node: Node, serial: str | None) -> tuple[_Meter | None, list[_Key]]:
    """The instrument registered under ``serial`` and its device keys not revoked."""
    if not serial:
        return None, []
    try:  # what the registry cannot hold is not looked for (nor sent to the database: NUL ...)
        validate_serial(serial)
    except InvalidInput:
        return None, []
    i, c = instruments.c, certificates.c
    with node.db.read() as conn:
        rows = conn.execute(
            select(i.id, i.serial, i.category, i.certificate_id, c.status, c.valid_until)
            .join(certificates, c.id == i.certificate_id)
            .where(i.serial == serial)
            .order_by(i.id)
            .limit(_MAX_CANDIDATES + 1)
        ).all()
        row = _pick(serial, rows)
        if row is None:
            return None, []
        keys = [
            _Key(k.key_id, k.algorithm, base64.b64decode(k.public_key))
            for k in conn.execute(
                select(device_keys.c.key_id, device_keys.c.algorithm, device_keys.c.public_key)
                .where(device_keys.c.instrument_id == row.id, device_keys.c.revoked_leaf.is_(None))
                .order_by(device_keys.c.key_id)
            )
        ]
    status = effective_status(row.status, row.valid_until, node.now().date())
    return _Meter(row.id, row.serial, row.category, row.certificate_id, status), keys


def _pick(serial: str, rows: Sequence[Any]) -> Any:
    """One instrument: the only one, or the only EV charging meter among several."""
    if len(rows) <= 1:
        return rows[0] if rows else None
    ev = [r for r in rows if r.category == InstrumentCategory.DE_EV.value]
    if len(ev) == 1:
        return ev[0]
    count = f"{len(rows)}" if len(rows) <= _MAX_CANDIDATES else f"more than {_MAX_CANDIDATES}"
    raise Conflict(
        f"meter serial {serial!r} is ambiguous: {count} instruments of different manufacturers "
        f"are registered under it on this node and {len(ev) or 'none'} of them "
        f"{'is' if len(ev) == 1 else 'are'} EV charging equipment ({InstrumentCategory.DE_EV}); "
        "the record does not tell which meter signed it"
    )


# --- verdicts ---------------------------------------------------------------------------------


def _unregistered(doc: OcmfDocument) -> str:
    if not doc.meter_serial:
        return (
            "no public key given, and the record names no meter serial (MS) to look up a "
            "registered device key by"
        )
    return (
        f"no public key given, and meter serial {doc.meter_serial!r} (MS) is not registered "
        "on this node"
    )


def _without_key(doc: OcmfDocument, why: str) -> Verdict:
    """The verdict without a usable key: ``why`` first, then the rules of the record."""
    unkeyed = verify_ocmf(doc, None)
    rules = [f for f in unkeyed.findings if f.rule != RULE_KEY]
    return _verdict([Finding.error(why, RULE_KEY), *rules], unkeyed.algorithm)


def _with_registered_keys(doc: OcmfDocument, meter: _Meter, keys: list[_Key]) -> Verdict:
    """Valid when one registered key verifies the record; otherwise why none does."""
    if not keys:
        return _without_key(doc, f"instrument {meter.id} has no registered device key in force")
    algorithm = verify_ocmf(doc, None).algorithm or ""
    parts = algorithm.split("-")
    curve = parts[1] if len(parts) == 3 and parts[1] in _CURVES else None
    if curve is None:  # SA itself is not supported: the verifier says so
        return verify_ocmf(doc, keys[0].der)
    fitting = [k for k in keys if _OCMF_CURVE.get(k.algorithm) == curve]
    if not fitting:
        held = ", ".join(sorted({k.algorithm for k in keys}))
        return _without_key(
            doc,
            f"no registered device key of instrument {meter.id} fits SA {algorithm}: its keys "
            f"are {held}, and device keys on {curve} cannot be registered yet "
            "(send the meter's public key with the request)",
        )
    verdicts = [verify_ocmf(doc, k.der) for k in fitting]
    holding = next((v for v in verdicts if v.signature_valid), None)
    if holding is not None:
        return holding
    ids = ", ".join(k.key_id[:16] for k in fitting)
    which = (
        f"the registered device key {ids}"
        if len(fitting) == 1
        else f"any of the {len(fitting)} registered device keys ({ids})"
    )
    failed = Finding.invalid(
        f"signature does not verify: {algorithm} over the payload section "
        f"({len(doc.payload)} bytes) with {which} of instrument {meter.id}; expected a valid "
        "signature by the meter's registered key",
        RULE_VERIFY,
    )
    first = verdicts[0]
    return _verdict(
        [failed if f.rule == RULE_VERIFY else f for f in first.findings], first.algorithm
    )


def _verdict(findings: Sequence[Finding], algorithm: str | None) -> Verdict:
    kinds = {f.kind for f in findings}
    status: VerdictStatus = "error" if "error" in kinds else "invalid" if kinds else "valid"
    return Verdict(status, tuple(findings), algorithm)
