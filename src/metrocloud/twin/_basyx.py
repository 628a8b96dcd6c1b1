"""The adapter to basyx-python-sdk, used for AASX packaging only.

An aas-core3.0 environment goes over JSON (its jsonization, basyx's strict deserializer) into
a basyx object store that ``AASXWriter`` writes as one part. Parts are JSON: basyx 2.2 writes
XML parts in the AAS v3.1 namespace (``https://admin-shell.io/aas/3/1``), which v3.0 readers
and the IDTA test engines refuse, while its JSON of our v3.0 objects is v3.0 JSON. basyx's
exceptions stop here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

from aas_core3 import types as aas

from metrocloud.twin.serialize import AasError, to_json_bytes

__all__ = ["PackageWriter"]


class PackageWriter:
    """An open AASX package: write environments as parts, then close."""

    def __init__(self, file: Path | BinaryIO) -> None:
        from basyx.aas.adapter import aasx

        target: Any = str(file) if isinstance(file, Path) else file
        self._writer = aasx.AASXWriter(target, failsafe=False)
        self._files = aasx.DictSupplementaryFileContainer()  # type: ignore[no-untyped-call]

    def write_part(self, part_name: str, env: aas.Environment) -> None:
        from basyx.aas.adapter.json import read_aas_json_file
        from basyx.aas.model import AASConstraintViolation

        try:
            store = read_aas_json_file(io.BytesIO(to_json_bytes(env)), failsafe=False)
            self._writer.write_all_aas_objects(part_name, store, self._files, write_json=True)
        except (AASConstraintViolation, ValueError, KeyError, TypeError) as exc:
            raise AasError(
                f"basyx-python-sdk refused AASX part {part_name}: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        self._writer.close()  # type: ignore[no-untyped-call]
