"""The ledger: an RFC 9162 (Certificate Transparency v2) Merkle transparency log.

Every legally relevant statement of the platform is appended to it; clients check inclusion
(RFC 9162 §2.1.3) and consistency (§2.1.4) proofs against signed tree heads.

* :mod:`~metrocloud.ledger.merkle` — RFC 9162 hashing, MTH and proof verification (pure);
* :mod:`~metrocloud.ledger.subtrees` — proofs from stored perfect-subtree hashes (pure);
* :mod:`~metrocloud.ledger.heads` — signed tree heads and the client's consistency check;
* :mod:`~metrocloud.ledger.schema` — the tables (``metadata`` for the migrations);
* :mod:`~metrocloud.ledger.log` — :class:`TransparencyLog`, the durable log;
* :mod:`~metrocloud.ledger.audit` — :class:`LedgerReport` of a full storage audit.
"""

from __future__ import annotations

from metrocloud.ledger.audit import LedgerReport
from metrocloud.ledger.heads import SignedTreeHead, check_consistency_between, sign_tree_head
from metrocloud.ledger.log import TransparencyLog
from metrocloud.ledger.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from metrocloud.ledger.schema import create_schema, metadata
from metrocloud.ledger.subtrees import consistency_proof_keys, inclusion_path_keys

__all__ = [
    "EMPTY_ROOT",
    "LedgerReport",
    "SignedTreeHead",
    "TransparencyLog",
    "check_consistency_between",
    "consistency_proof_keys",
    "create_schema",
    "inclusion_path_keys",
    "leaf_hash",
    "metadata",
    "node_hash",
    "root_from_leaves",
    "sign_tree_head",
    "verify_consistency",
    "verify_inclusion",
]
