"""The public surface of metrocloud.trust, which the rest of the platform is written against."""

from __future__ import annotations

import importlib
import inspect

import metrocloud.trust as trust

INTENDED = {
    # canonical.py
    "canonical_json",
    "canonical_json_hash",
    # keys.py
    "KeyAlgorithm",
    "PublicKey",
    "describe_public_key",
    "PrivateKey",
    "KeyStore",
    # statements.py
    "STATEMENT_DOMAIN",
    "REQUEST_DOMAIN",
    "Statement",
    "Signature",
    "SignedStatement",
    "sign_statement",
    "utc_timestamp",
    "parse_utc_timestamp",
    "sign_request",
    "parse_request_signature",
    "verify_request",
    # credentials.py
    "IssuedToken",
    "issue_token",
    "parse_token",
    "check_secret",
    "TOKEN_REQUEST_DOMAIN",
    "token_request_message",
    "sign_token_request",
    "verify_token_request",
}

MODULES = {
    "metrocloud.trust.canonical": {"canonical_json", "canonical_json_hash"},
    "metrocloud.trust.keys": {
        "KeyAlgorithm",
        "PublicKey",
        "PrivateKey",
        "KeyStore",
        "describe_public_key",
    },
    "metrocloud.trust.statements": {
        "STATEMENT_DOMAIN",
        "REQUEST_DOMAIN",
        "Statement",
        "Signature",
        "SignedStatement",
        "sign_statement",
        "utc_timestamp",
        "parse_utc_timestamp",
        "sign_request",
        "parse_request_signature",
        "verify_request",
    },
    "metrocloud.trust.credentials": {
        "IssuedToken",
        "issue_token",
        "parse_token",
        "check_secret",
        "TOKEN_REQUEST_DOMAIN",
        "token_request_message",
        "sign_token_request",
        "verify_token_request",
    },
}


def test_package_all_is_exactly_the_intended_set() -> None:
    assert set(trust.__all__) == INTENDED
    assert len(trust.__all__) == len(INTENDED)  # no duplicates


def test_every_exported_name_resolves() -> None:
    for name in trust.__all__:
        assert getattr(trust, name) is not None, name


def test_modules_export_their_share_and_agree_with_the_package() -> None:
    for module_name, names in MODULES.items():
        module = importlib.import_module(module_name)
        assert set(module.__all__) == names, module_name
        for name in names:
            assert getattr(module, name) is getattr(trust, name)


def test_domain_prefixes() -> None:
    assert trust.STATEMENT_DOMAIN == b"metrocloud-statement-v1\x00"
    assert trust.REQUEST_DOMAIN == b"metrocloud-request-v1\x00"
    assert trust.TOKEN_REQUEST_DOMAIN == b"metrocloud-token-request-v1\x00"


def test_dataclasses_are_frozen_keyword_only() -> None:
    for cls in (trust.Statement, trust.Signature, trust.SignedStatement, trust.IssuedToken):
        params = getattr(cls, "__dataclass_params__")  # noqa: B009
        assert params.frozen, cls
        parameters = inspect.signature(cls).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), cls
