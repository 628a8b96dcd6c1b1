"""Signed JSON objects: a party's signature over ``domain + canonical_json(payload)``.

The wire form of a signature is ``{"key_id": <64 hex>, "alg": <algorithm>, "sig": <base64>}``
(the same as in statements). Each use has its own domain prefix, so a signature made for one
purpose (an encryption-key binding, a document header, a receipt) is never valid for another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust._b64 import b64decode_strict, b64encode
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey
from metrocloud.trust.statements import Signature

__all__ = ["parse_signature", "sign_object", "verify_object"]


def sign_object(domain: bytes, payload: Mapping[str, Any], key: PrivateKey) -> dict[str, str]:
    """``key``'s signature over ``domain + JCS(payload)`` in its wire form."""
    sig = key.sign(domain + canonical_json(payload))
    return {"key_id": key.key_id, "alg": key.algorithm.value, "sig": b64encode(sig)}


def parse_signature(value: object, *, what: str) -> Signature:
    """The wire form parsed strictly; :class:`InvalidInput` if it is not exactly one."""
    if not isinstance(value, Mapping) or set(value) != {"key_id", "alg", "sig"}:
        keys = sorted(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
        raise InvalidInput(f"{what} must be an object with exactly key_id, alg, sig; got {keys}")
    for name in ("key_id", "alg", "sig"):
        if not isinstance(value[name], str):
            raise InvalidInput(f"{what}.{name} must be a string")
    return Signature(
        key_id=value["key_id"],
        alg=value["alg"],
        sig=b64decode_strict(value["sig"], what=f"{what}.sig"),
    )


def verify_object(
    domain: bytes,
    payload: Mapping[str, Any],
    signature: object,
    key: PublicKey,
    *,
    what: str,
    rule: str,
) -> Signature:
    """Check that ``signature`` (wire form) is ``key``'s over ``domain + JCS(payload)``.

    Every failure, a malformed signature included, is a :class:`VerificationError` naming
    ``what`` was signed and the ``rule``.
    """
    try:
        parsed = parse_signature(signature, what=f"{what} signature")
    except InvalidInput as exc:
        raise VerificationError(str(exc), rule=rule) from None
    if parsed.key_id != key.key_id:
        raise VerificationError(
            f"{what} is signed with key {parsed.key_id}, expected the registered key {key.key_id}",
            rule=rule,
        )
    if parsed.alg is not key.algorithm:
        raise VerificationError(
            f"{what} signature claims alg {parsed.alg.value}, the key is {key.algorithm.value}",
            rule=rule,
        )
    try:
        key.verify(parsed.sig, domain + canonical_json(payload))
    except VerificationError as exc:
        raise VerificationError(f"{what}: {exc}", rule=rule) from None
    return parsed
