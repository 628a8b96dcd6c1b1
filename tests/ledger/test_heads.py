"""Signed tree heads: signed bytes, JSON form, verification, the client's consistency check."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.ledger import SignedTreeHead, check_consistency_between, sign_tree_head
from metrocloud.ledger.merkle import EMPTY_ROOT, root_from_leaves
from metrocloud.ledger.subtrees import assemble, consistency_proof_keys
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey

from ._support import all_nodes, leaf_hashes

ROOT = bytes(range(32))


def _head(
    key: PrivateKey, size: int = 7, root: bytes = ROOT, log_id: str = "log"
) -> SignedTreeHead:
    return sign_tree_head(key, log_id=log_id, tree_size=size, root_hash=root, timestamp=1234)


def test_signed_bytes_are_domain_separated_canonical_json(key: PrivateKey) -> None:
    head = _head(key)
    assert head.signed_bytes() == b"metrocloud-tree-head-v1\x00" + canonical_json(
        {"log_id": "log", "tree_size": 7, "root_hash": ROOT.hex(), "timestamp": 1234}
    )
    assert head.signed_bytes().endswith(
        b'{"log_id":"log","root_hash":"' + ROOT.hex().encode() + b'","timestamp":1234,'
        b'"tree_size":7}'
    )
    assert head.key_id == key.public_key.key_id
    head.verify(key.public_key)


def test_json_round_trip(key: PrivateKey) -> None:
    head = _head(key)
    data = head.to_json()
    assert data == {
        "log_id": "log",
        "tree_size": 7,
        "root_hash": ROOT.hex(),
        "timestamp": 1234,
        "key_id": key.public_key.key_id,
        "signature": base64.b64encode(head.signature).decode(),
    }
    assert SignedTreeHead.from_json(data) == head
    SignedTreeHead.from_json(data).verify(key.public_key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tree_size": -1}, "tree_size must be an integer >= 0"),
        ({"tree_size": "7"}, "tree_size must be an integer"),
        ({"tree_size": True}, "tree_size must be an integer"),
        ({"timestamp": 1.5}, "timestamp must be an integer"),
        ({"root_hash": "zz"}, "root_hash is not hex"),
        ({"root_hash": "00" * 31}, "root_hash must be 32 bytes"),
        ({"signature": "not base64!"}, "signature is not base64"),
        ({"log_id": ""}, "log_id must be a non-empty string"),
        ({"extra": 1}, "needs exactly"),
    ],
)
def test_from_json_rejects_malformed_heads(
    key: PrivateKey, change: dict[str, object], message: str
) -> None:
    data = {**_head(key).to_json(), **change}
    with pytest.raises(InvalidInput, match=message):
        SignedTreeHead.from_json(data)


def test_verify_rejects_other_keys_and_altered_fields(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    head = _head(key)
    with pytest.raises(VerificationError, match="names signing key"):
        head.verify(other_key.public_key)
    for change in (
        {"tree_size": 8},
        {"root_hash": EMPTY_ROOT},
        {"timestamp": 1235},
        {"log_id": "other"},
    ):
        forged = dataclasses.replace(head, **change)
        with pytest.raises(VerificationError, match="at size"):
            forged.verify(key.public_key)


def _log_heads(key: PrivateKey, n: int) -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    hashes = leaf_hashes(n)
    return hashes, all_nodes(hashes)


def test_check_consistency_between(key: PrivateKey, other_key: PrivateKey) -> None:
    hashes, nodes = _log_heads(key, 50)
    heads = {s: _head(key, s, root_from_leaves(hashes[:s])) for s in (0, 1, 13, 32, 50)}
    for old in heads.values():
        for new in heads.values():
            if old.tree_size > new.tree_size:
                with pytest.raises(VerificationError, match="shrank"):
                    check_consistency_between(old, new, [], key.public_key)
                continue
            proof = (
                assemble(consistency_proof_keys(old.tree_size, new.tree_size), nodes)
                if old.tree_size
                else []
            )
            check_consistency_between(old, new, proof, key.public_key)
    proof = assemble(consistency_proof_keys(13, 50), nodes)
    with pytest.raises(VerificationError, match="names signing key"):
        check_consistency_between(heads[13], heads[50], proof, other_key.public_key)
    foreign = _head(key, 50, heads[50].root_hash, log_id="another-log")
    with pytest.raises(VerificationError, match="different logs"):
        check_consistency_between(heads[13], foreign, proof, key.public_key)
    with pytest.raises(VerificationError, match=r"not append-only between sizes 13 and 50"):
        check_consistency_between(heads[13], heads[50], proof[:-1], key.public_key)
    forked = _head(key, 50, root_from_leaves([*hashes[:20], *leaf_hashes(30)]))
    with pytest.raises(VerificationError, match=r"§2\.1\.4\.2"):
        check_consistency_between(heads[13], forked, proof, key.public_key)
