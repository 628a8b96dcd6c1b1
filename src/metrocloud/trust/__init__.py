"""Trust primitives of metrocloud: canonical JSON, keys, signed statements, credentials.

Layer rule: this package imports only the standard library, ``cryptography``, ``rfc8785``,
``pyhpke`` (in :mod:`metrocloud.trust._hpke` only) and :mod:`metrocloud.domain.errors`.
Library exceptions never leave it; they become :class:`~metrocloud.domain.errors.InvalidInput` or
:class:`~metrocloud.domain.errors.VerificationError` carrying evidence.
"""

from metrocloud.trust.canonical import canonical_json, canonical_json_hash
from metrocloud.trust.credentials import (
    TOKEN_REQUEST_DOMAIN,
    IssuedToken,
    check_secret,
    issue_token,
    parse_token,
    sign_token_request,
    token_request_message,
    verify_token_request,
)
from metrocloud.trust.keys import (
    KeyAlgorithm,
    KeyStore,
    PrivateKey,
    PublicKey,
    describe_public_key,
)
from metrocloud.trust.statements import (
    REQUEST_DOMAIN,
    STATEMENT_DOMAIN,
    Signature,
    SignedStatement,
    Statement,
    parse_request_signature,
    parse_utc_timestamp,
    sign_request,
    sign_statement,
    utc_timestamp,
    verify_request,
)

__all__ = [
    "REQUEST_DOMAIN",
    "STATEMENT_DOMAIN",
    "TOKEN_REQUEST_DOMAIN",
    "IssuedToken",
    "KeyAlgorithm",
    "KeyStore",
    "PrivateKey",
    "PublicKey",
    "Signature",
    "SignedStatement",
    "Statement",
    "canonical_json",
    "canonical_json_hash",
    "check_secret",
    "describe_public_key",
    "issue_token",
    "parse_request_signature",
    "parse_token",
    "parse_utc_timestamp",
    "sign_request",
    "sign_statement",
    "sign_token_request",
    "token_request_message",
    "utc_timestamp",
    "verify_request",
    "verify_token_request",
]
