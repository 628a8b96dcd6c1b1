"""Layer rule: trust imports only the standard library, cryptography, rfc8785, pyhpke, domain.errors
and the durable-file helpers of ``metrocloud._fs`` (themselves standard library only)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import metrocloud.trust

PACKAGE = Path(metrocloud.trust.__file__).parent
ALLOWED_THIRD_PARTY = {"cryptography", "pyhpke", "rfc8785"}  # pyhpke: trust/_hpke.py only
ALLOWED_METROCLOUD = {"metrocloud.domain.errors", "metrocloud._fs"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            if node.module == "metrocloud.trust":
                found.update(f"metrocloud.trust.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def test_trust_imports_only_allowed_modules() -> None:
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
                continue
            if module in ALLOWED_METROCLOUD or module.startswith("metrocloud.trust."):
                continue
            offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_the_shared_file_helpers_import_only_the_standard_library() -> None:
    path = PACKAGE.parent / "_fs.py"
    assert {m for m in _imports(path) if m.split(".")[0] not in sys.stdlib_module_names} == set()


def test_every_module_declares_all() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        assert "__all__" in names, path.name


def test_pyhpke_is_confined_to_its_adapter() -> None:
    """One module adapts the HPKE library; its exceptions never leave it (STYLE.md 2)."""
    users = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if any(m.split(".")[0] == "pyhpke" for m in _imports(path))
    )
    assert users == ["_hpke.py"]
