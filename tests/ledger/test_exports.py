"""The public surface of metrocloud.ledger and the module rules of the package."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import metrocloud.ledger as ledger

PUBLIC = {
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
}

ALLOWED_IMPORTS = (
    "metrocloud.domain.errors",
    "metrocloud.trust",
    "metrocloud.ledger",
    "sqlalchemy",
)


def _modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(ledger.__path__, "metrocloud.ledger.")]


def test_package_exports() -> None:
    assert set(ledger.__all__) == PUBLIC
    assert sorted(ledger.__all__) == list(ledger.__all__)
    for name in ledger.__all__:
        assert getattr(ledger, name) is not None


def test_schema_metadata_holds_the_four_tables() -> None:
    from metrocloud.ledger.schema import metadata

    assert ledger.metadata is metadata
    assert set(metadata.tables) == {
        "ledger_entries",
        "ledger_nodes",
        "ledger_heads",
        "ledger_state",
    }


def test_every_module_declares_all_and_exports_what_it_defines() -> None:
    assert set(_modules()) >= {
        f"metrocloud.ledger.{m}"
        for m in ("merkle", "subtrees", "schema", "storage", "heads", "log", "audit")
    }
    for name in _modules():
        module = importlib.import_module(name)
        exported = module.__all__
        assert exported, name
        for symbol in exported:
            assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"


def test_layer_rule_imports() -> None:
    """ledger imports only the stdlib, sqlalchemy, domain.errors and trust."""
    root = Path(ledger.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ("metrocloud", "sqlalchemy"):
                    assert name.startswith(ALLOWED_IMPORTS), f"{path.name} imports {name}"
                else:
                    assert top in sys.stdlib_module_names, f"{path.name} imports {name}"
