"""The AAS Part 2 HTTP API v3.0 (IDTA-01002-3-0) of the node, read-only, under /aas/api/v3.0.

Profiles: AssetAdministrationShellRepository and SubmodelRepository, read (SSP-002), with
submodel elements by idShortPath and the ``$value`` / ``$metadata`` / ``$reference`` /
``$path`` modifiers; the registry's shell descriptors (read); the discovery look-up
``/lookup/shells``; ``/serialization`` (AASX, JSON, XML) and ``/description``.

The same bearer tokens, role rules and access log as /api/v1 (:mod:`metrocloud.services.aas`);
errors are AAS ``Result`` bodies; writes answer 405 naming the /api/v1 endpoint to use.
"""

from fastapi import APIRouter

from metrocloud.api.aas import registry, serialization, shells, submodels, writes
from metrocloud.api.aas._errors import install_error_format
from metrocloud.api.aas._params import AAS_PREFIX

__all__ = ["AAS_PREFIX", "install_error_format", "router"]

router = APIRouter(include_in_schema=False)
router.include_router(shells.router)
router.include_router(submodels.router)  # /submodels and /submodels/$...: before /{id}
for _prefix in (
    "/submodels/{submodelIdentifier}",
    "/shells/{aasIdentifier}/submodels/{submodelIdentifier}",
):
    router.include_router(submodels.one, prefix=_prefix)
router.include_router(registry.router)
router.include_router(serialization.router)
router.include_router(writes.router)
