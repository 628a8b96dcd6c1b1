"""The signed verification result: canonical bytes, sign/verify round trip, tamper evidence."""

from __future__ import annotations

import copy
import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.services.verification import (
    CHECK_NAMES,
    RESULT_DOMAIN,
    Check,
    Finding,
    Outcome,
    SignedResult,
    VerificationResult,
    sign_result,
    verify_result,
)
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

KEYS = [PrivateKey.generate(KeyAlgorithm.ED25519), PrivateKey.generate(KeyAlgorithm.ECDSA_P256)]

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda s: s.strip() != "")
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    _text,
)
_evidence = st.dictionaries(
    _text,
    st.recursive(
        _json_leaf,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
_finding = st.builds(Finding, code=_text, message=_text, rule=_text)


@st.composite
def results(draw: st.DrawFn) -> VerificationResult:
    checks = []
    for number, name in enumerate(CHECK_NAMES, start=1):
        outcome = draw(st.sampled_from(list(Outcome)))
        findings = (
            tuple(draw(st.lists(_finding, min_size=1, max_size=2)))
            if outcome is Outcome.FAIL
            else ()
        )
        checks.append(
            Check(
                number=number,
                name=name,
                outcome=outcome,
                evidence=draw(_evidence),
                findings=findings,
            )
        )
    failing = any(c.outcome is Outcome.FAIL for c in checks)
    override = draw(st.one_of(st.none(), _text))
    passed = draw(st.booleans()) if override is not None else not failing
    ms = draw(st.integers(min_value=0, max_value=999))
    return VerificationResult(
        node_id=draw(_text),
        instrument_id=draw(_text),
        serial=draw(_text),
        category=draw(st.sampled_from(["MI-001", "MI-003", "DE-EV"])),
        authority_id=draw(_text),
        evaluated_at=f"2026-12-0{draw(st.integers(1, 9))}T10:00:00.{ms:03d}Z",
        outcome=Outcome.PASS if passed else Outcome.FAIL,
        verified_until=draw(st.dates(min_value=date(2027, 1, 1))) if passed else None,
        period={"years": draw(st.integers(1, 16)), "source": draw(_text)} if passed else None,
        checks=tuple(checks),
        override=override,
    )


def _wire(signed: SignedResult) -> Any:
    """What travels: canonical bytes, parsed back."""
    return json.loads(canonical_json(signed.to_json()))


@given(results(), st.sampled_from(KEYS))
def test_sign_and_verify_round_trip(result: VerificationResult, key: PrivateKey) -> None:
    signed = sign_result(result, key)
    again = SignedResult.from_json(_wire(signed))
    assert again.result == result
    assert again.result.signed_bytes() == result.signed_bytes()
    assert result.signed_bytes() == RESULT_DOMAIN + canonical_json(result.to_json())
    verify_result(again, key.public_key)
    other = KEYS[1] if key is KEYS[0] else KEYS[0]
    with pytest.raises(VerificationError):
        verify_result(again, other.public_key)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        out = [path] if path else []
        for k, v in value.items():
            out += _leaves(v, (*path, k))
        return out
    if isinstance(value, list):
        out = [path]
        for i, v in enumerate(value):
            out += _leaves(v, (*path, i))
        return out
    return [path]


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0 if abs(value) < 1e15 else value / 2
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    if isinstance(value, list):
        return [*value, "x"]
    return {**value, "added": 1}


@given(results(), st.sampled_from(KEYS), st.data())
def test_any_change_of_a_field_fails(
    result: VerificationResult, key: PrivateKey, data: st.DataObject
) -> None:
    wire = _wire(sign_result(result, key))
    path = data.draw(st.sampled_from(_leaves(wire["result"])))
    tampered = copy.deepcopy(wire)
    target = tampered["result"]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = _changed(target[path[-1]])
    assert tampered != wire
    try:
        parsed = SignedResult.from_json(tampered)
    except InvalidInput:
        return  # refused as malformed: also a failure to pass it off
    with pytest.raises(VerificationError):
        verify_result(parsed, key.public_key)


def test_a_result_signature_is_no_other_signature() -> None:
    """The domain prefix: the same key's signature over the bare canonical JSON (as a
    request or statement signature would be made) does not verify as a result signature."""
    from metrocloud.trust.statements import REQUEST_DOMAIN, Signature

    result = VerificationResult(
        node_id="node-DE-1",
        instrument_id="ins-DE-1",
        serial="S1",
        category="MI-003",
        authority_id="pty-DE-1",
        evaluated_at="2026-12-01T10:00:00.000Z",
        outcome=Outcome.FAIL,
        verified_until=None,
        period=None,
        checks=tuple(
            Check(
                number=i,
                name=n,
                outcome=Outcome.FAIL if i == 1 else Outcome.PASS,
                findings=(Finding(code="c", message="m", rule="r"),) if i == 1 else (),
            )
            for i, n in enumerate(CHECK_NAMES, start=1)
        ),
    )
    key = KEYS[0]
    body = canonical_json(result.to_json())
    for message in (body, REQUEST_DOMAIN + body):
        signed = SignedResult(
            result=result,
            signature=Signature(key_id=key.key_id, alg=key.algorithm, sig=key.sign(message)),
        )
        with pytest.raises(VerificationError):
            verify_result(signed, key.public_key)
