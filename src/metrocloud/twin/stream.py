"""Environments written object by object, for exports too large to hold in memory.

The libraries serialize every shell, submodel and concept description; this module writes
only the environment container around them (``{"assetAdministrationShells": [...], ...}``
or ``<environment><assetAdministrationShells>...``), so memory stays at one object however
many are written. An AASX package is written part by part: each part is one environment
of a chunk of shells (basyx writes a part from an in-memory store, so a chunk is the unit
held in memory).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from aas_core3 import types as aas
from aas_core3 import xmlization

from metrocloud.domain.errors import InvalidInput
from metrocloud.twin.serialize import XML_DECLARATION, AasFormat, to_json_bytes

__all__ = ["AasxStream", "EnvironmentStream"]

# environment sections, in the order the XML schema prescribes (JSON keeps the same order)
_SECTIONS: tuple[tuple[type, str, str], ...] = (
    (aas.AssetAdministrationShell, "assetAdministrationShells", "assetAdministrationShell"),
    (aas.Submodel, "submodels", "submodel"),
    (aas.ConceptDescription, "conceptDescriptions", "conceptDescription"),
)


class EnvironmentStream:
    """One AAS environment in JSON or XML, written to ``out`` object by object.

    Objects must come section by section: every shell before any submodel, every submodel
    before any concept description. A section with no objects is left out (the schemas
    forbid empty arrays). :meth:`close` finishes the document (it does not close ``out``).
    """

    def __init__(self, out: BinaryIO, fmt: AasFormat) -> None:
        if fmt is AasFormat.AASX:
            raise InvalidInput("an AASX package is written with AasxStream, not EnvironmentStream")
        self._out = out
        self._json = fmt is AasFormat.JSON
        self._section = -1  # index into _SECTIONS of the open section
        self._first = True  # no object written in the open section yet
        self._any = False  # any section opened at all
        self.count = 0
        out.write(b"{" if self._json else (XML_DECLARATION + _XML_OPEN).encode())

    def write(
        self, obj: aas.AssetAdministrationShell | aas.Submodel | aas.ConceptDescription
    ) -> None:
        index = next((i for i, (t, _, _) in enumerate(_SECTIONS) if isinstance(obj, t)), None)
        if index is None:
            raise InvalidInput(f"an environment holds no {type(obj).__name__} at its top level")
        if index < self._section:
            raise InvalidInput(
                f"{_SECTIONS[index][1]} must all come before {_SECTIONS[self._section][1]}"
            )
        if index != self._section:
            self._close_section()
            self._open_section(index)
        out = self._out
        if self._json:
            if not self._first:
                out.write(b",")
            out.write(to_json_bytes(obj))
        else:
            # every element names the AAS namespace; the redundant declaration is valid XML
            out.write(xmlization.to_str(obj).encode())
        self._first = False
        self.count += 1

    def _open_section(self, index: int) -> None:
        name = _SECTIONS[index][1]
        if self._json:
            self._out.write((',"' if self._any else '"').encode() + name.encode() + b'":[')
        else:
            self._out.write(f"<{name}>".encode())
        self._section, self._first, self._any = index, True, True

    def _close_section(self) -> None:
        if self._section < 0:
            return
        self._out.write(b"]" if self._json else f"</{_SECTIONS[self._section][1]}>".encode())

    def close(self) -> None:
        self._close_section()
        self._section = len(_SECTIONS)
        self._out.write(b"}" if self._json else b"</environment>\n")

    def __enter__(self) -> EnvironmentStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()


_XML_OPEN = '<environment xmlns="https://admin-shell.io/aas/3/0">'


class AasxStream:
    """An AASX package written part by part (each part one environment, in JSON).

    The first part is ``/aasx/data.json`` (the name basyx gives a single part), the next
    ``/aasx/data-2.json`` and so on; every part is an aas-spec part of the package origin
    (AAS Part 5). Why JSON and not XML: see :mod:`metrocloud.twin._basyx`.
    """

    def __init__(self, file: Path | BinaryIO) -> None:
        from metrocloud.twin._basyx import PackageWriter

        self._package = PackageWriter(file)
        self.parts = 0

    def write_part(self, env: aas.Environment) -> None:
        self.parts += 1
        name = "/aasx/data.json" if self.parts == 1 else f"/aasx/data-{self.parts}.json"
        self._package.write_part(name, env)

    def close(self) -> None:
        self._package.close()

    def __enter__(self) -> AasxStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
