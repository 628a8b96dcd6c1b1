"""Each package exports exactly what it means to, and every exported name resolves."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import metrocloud

PACKAGES = {
    "metrocloud": {"MetrocloudError", "__version__"},
    "metrocloud.store": {"Database", "StorageUnavailable", "project", "sqlite_url"},
    "metrocloud.services": {"Node", "NodeNotInitialized", "Recorded", "Settings"},
    "metrocloud.api": {"API_PREFIX", "create_app"},
}


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == PACKAGES[name]
    for attr in module.__all__:
        assert getattr(module, attr) is not None


def _modules() -> list[str]:
    out = []
    for info in pkgutil.walk_packages(metrocloud.__path__, "metrocloud."):
        if ".migrations" in info.name:
            continue
        out.append(info.name)
    return sorted(out)


@pytest.mark.parametrize("name", _modules())
def test_every_module_declares_all_and_it_resolves(name: str) -> None:
    module = importlib.import_module(name)
    if name.endswith((".cli", ".routes")) or ".routes." in name or ".cli." in name:
        return  # faces: the typer app (and its command modules) and the routers
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_errors_are_one_family() -> None:
    from metrocloud.domain import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), metrocloud.MetrocloudError)
