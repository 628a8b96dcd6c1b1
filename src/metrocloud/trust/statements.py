"""Signed statements, the entries of a node's transparency log, and signed API requests.

Envelope (its RFC 8785 canonical bytes are the ledger entry)::

    {"payload": {"kind": ..., "signer": ..., "issued_at": ..., "body": {...}, ...extra},
     "signatures": [{"key_id": "<hex>", "alg": "ed25519", "sig": "<base64>"}]}

Every signature is over ``STATEMENT_DOMAIN + canonical_json(payload)``. Request signatures
are over ``REQUEST_DOMAIN + canonical_json(body)``. The distinct domain prefixes make a
signature of one kind useless as a signature of another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.trust._b64 import b64decode_strict, b64encode
from metrocloud.trust._envelope import CORE_KEYS, KEY_ID, parse_envelope
from metrocloud.trust._time import parse_utc_timestamp, utc_timestamp
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey, PublicKey

__all__ = [
    "REQUEST_DOMAIN",
    "STATEMENT_DOMAIN",
    "Signature",
    "SignedStatement",
    "Statement",
    "parse_request_signature",
    "parse_utc_timestamp",
    "sign_request",
    "sign_statement",
    "utc_timestamp",
    "verify_request",
]

STATEMENT_DOMAIN = b"metrocloud-statement-v1\x00"
REQUEST_DOMAIN = b"metrocloud-request-v1\x00"
_RULE = "metrocloud signed statement v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class Statement:
    """What a party asserts: ``kind`` of statement, who, when, and the ``body``.

    ``extra`` holds additional payload fields (``credential``, ``request_signature``, ...);
    it may not reuse the core names kind, signer, issued_at, body.
    """

    kind: str
    signer: str
    issued_at: str
    body: Mapping[str, Any]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("kind", "signer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"statement {name} must be a non-empty string, found {value!r}")
        parse_utc_timestamp(self.issued_at, what="statement issued_at")
        if not isinstance(self.body, Mapping):
            raise InvalidInput(
                f"statement body must be a mapping (JSON object), found {type(self.body).__name__}"
            )
        if not isinstance(self.extra, Mapping):
            raise InvalidInput(
                f"statement extra must be a mapping, found {type(self.extra).__name__}"
            )
        clashes = sorted(key for key in self.extra if key in CORE_KEYS)
        if clashes:
            raise InvalidInput(
                f"statement extra may not override core payload fields {', '.join(clashes)}; "
                f"core fields are {', '.join(CORE_KEYS)}",
                rule=_RULE,
            )

    def payload(self) -> dict[str, Any]:
        """The signed payload: the four core fields plus ``extra``."""
        payload = dict(self.extra)
        payload.update(
            kind=self.kind, signer=self.signer, issued_at=self.issued_at, body=dict(self.body)
        )
        return payload


@dataclass(frozen=True, kw_only=True, slots=True)
class Signature:
    """One signature: which key (``key_id``), which algorithm, the signature bytes."""

    key_id: str
    alg: KeyAlgorithm
    sig: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or KEY_ID.fullmatch(self.key_id) is None:
            raise InvalidInput(
                f"key_id {self.key_id!r} is not 64 lowercase hex characters "
                "(SHA-256 of the DER SubjectPublicKeyInfo)"
            )
        if not isinstance(self.alg, KeyAlgorithm):
            object.__setattr__(self, "alg", _algorithm(self.alg))
        if not isinstance(self.sig, bytes) or not self.sig:
            raise InvalidInput("signature bytes must be non-empty bytes")


@dataclass(frozen=True, kw_only=True, slots=True)
class SignedStatement:
    """A statement and one or more signatures over its payload."""

    statement: Statement
    signatures: tuple[Signature, ...]
    #: canonical payload bytes when already computed (by :func:`sign_statement`); a cache
    payload_bytes: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.signatures, tuple):
            object.__setattr__(self, "signatures", tuple(self.signatures))
        if not self.signatures:
            raise InvalidInput("a signed statement needs at least one signature", rule=_RULE)
        key_ids = [signature.key_id for signature in self.signatures]
        duplicates = sorted({key_id for key_id in key_ids if key_ids.count(key_id) > 1})
        if duplicates:
            raise InvalidInput(
                f"key {', '.join(duplicates)} signs the statement more than once", rule=_RULE
            )

    def to_bytes(self) -> bytes:
        """The RFC 8785 canonical JSON of the envelope (the ledger entry).

        The envelope's keys sort as ``payload`` < ``signatures`` and a canonical value nests
        unchanged, so the envelope is assembled from the canonical payload bytes without
        canonicalizing the (possibly large) payload a second time.
        """
        payload = self.payload_bytes
        if payload is None:
            payload = canonical_json(self.statement.payload())
        signatures = canonical_json(
            [
                {"key_id": s.key_id, "alg": s.alg.value, "sig": b64encode(s.sig)}
                for s in self.signatures
            ]
        )
        return b'{"payload":' + payload + b',"signatures":' + signatures + b"}"

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedStatement:
        """Parse an envelope strictly; every failure is a :class:`VerificationError`.

        Beyond shape and types, the input must be exactly the canonical bytes
        :meth:`to_bytes` would produce, so one statement has exactly one byte form.
        Signatures are *not* checked here; call :meth:`verify`.
        """
        payload, raw_signatures = parse_envelope(data)
        try:
            extra = {key: value for key, value in payload.items() if key not in CORE_KEYS}
            statement = Statement(
                kind=payload["kind"],
                signer=payload["signer"],
                issued_at=payload["issued_at"],
                body=payload["body"],
                extra=extra,
            )
            signatures = tuple(
                Signature(
                    key_id=entry["key_id"],
                    alg=entry["alg"],
                    sig=b64decode_strict(entry["sig"], what=f"signatures[{index}].sig"),
                )
                for index, entry in enumerate(raw_signatures)
            )
            signed = cls(statement=statement, signatures=signatures)
            canonical = signed.to_bytes()
        except MetrocloudError as exc:
            raise VerificationError(f"invalid statement envelope: {exc}", rule=exc.rule) from None
        if canonical != bytes(data):
            raise VerificationError(
                "statement is not in canonical form (RFC 8785)", rule="RFC 8785 §3.2"
            )
        return signed

    def verify(self, resolve: Callable[[str], PublicKey]) -> None:
        """Check every signature; ``resolve`` maps a key id to the key (or raises)."""
        message = STATEMENT_DOMAIN + canonical_json(self.statement.payload())
        for signature in self.signatures:
            key = resolve(signature.key_id)
            _check_key(key, signature)
            try:
                key.verify(signature.sig, message)
            except VerificationError as exc:
                raise VerificationError(
                    f"statement {self.statement.kind!r} by {self.statement.signer!r}: {exc}",
                    rule=exc.rule,
                ) from None

    def signed_by(self, key_id: str) -> bool:
        return any(signature.key_id == key_id for signature in self.signatures)


def sign_statement(statement: Statement, *keys: PrivateKey) -> SignedStatement:
    """Sign ``statement`` with each of ``keys`` (at least one), in the order given."""
    if not keys:
        raise InvalidInput("sign_statement needs at least one key", rule=_RULE)
    payload = canonical_json(statement.payload())
    message = STATEMENT_DOMAIN + payload
    signatures = tuple(
        Signature(key_id=key.key_id, alg=key.algorithm, sig=key.sign(message)) for key in keys
    )
    return SignedStatement(statement=statement, signatures=signatures, payload_bytes=payload)


def sign_request(body: object, key: PrivateKey) -> str:
    """Sign a request body; returns the header value ``keyid=<hex>;alg=<alg>;sig=<b64>``."""
    sig = key.sign(REQUEST_DOMAIN + canonical_json(body))
    return f"keyid={key.key_id};alg={key.algorithm.value};sig={b64encode(sig)}"


_HEADER_FIELDS = ("keyid", "alg", "sig")
_HEADER_FORM = "keyid=<64 hex>;alg=<ed25519|ecdsa-p256-sha256>;sig=<base64>"


def parse_request_signature(header: str) -> Signature:
    """Parse a request signature header value; :class:`InvalidInput` if malformed."""
    if not isinstance(header, str):
        raise InvalidInput(f"request signature must be a string of the form {_HEADER_FORM}")
    fields: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if not sep:
            problem = f"part {part.strip()[:40]!r} is not name=value"
        elif name not in _HEADER_FIELDS:
            problem = f"parameter {name[:40]!r} is not expected"
        elif name in fields:
            problem = f"parameter {name!r} is repeated"
        else:
            fields[name] = value
            continue
        raise InvalidInput(f"malformed request signature: {problem}; expected {_HEADER_FORM}")
    missing = [name for name in _HEADER_FIELDS if name not in fields]
    if missing:
        raise InvalidInput(
            f"malformed request signature: missing {', '.join(missing)}; expected {_HEADER_FORM}"
        )
    return Signature(
        key_id=fields["keyid"],
        alg=_algorithm(fields["alg"]),
        sig=b64decode_strict(fields["sig"], what="request signature sig"),
    )


def verify_request(body: object, header: str, key: PublicKey) -> Signature:
    """Check that ``header`` is ``key``'s signature over ``body``; return the signature."""
    signature = parse_request_signature(header)
    if signature.key_id != key.key_id:
        raise VerificationError(
            f"request signed with key {signature.key_id}, party's key is {key.key_id}"
        )
    _check_key(key, signature)
    key.verify(signature.sig, REQUEST_DOMAIN + canonical_json(body))
    return signature


def _algorithm(value: object) -> KeyAlgorithm:
    if isinstance(value, str) and value in _ALGORITHMS:
        return KeyAlgorithm(value)
    raise InvalidInput(
        f"signature algorithm {value!r} is not supported; expected one of "
        f"{', '.join(sorted(_ALGORITHMS))}"
    )


_ALGORITHMS = frozenset(algorithm.value for algorithm in KeyAlgorithm)


def _check_key(key: PublicKey, signature: Signature) -> None:
    if key.key_id != signature.key_id:
        raise VerificationError(
            f"key resolver returned key {key.key_id} for key id {signature.key_id}"
        )
    if key.algorithm is not signature.alg:
        raise VerificationError(
            f"signature by key {signature.key_id} claims alg {signature.alg.value}, "
            f"but the key is {key.algorithm.value}"
        )
