"""Legally relevant software: its separation from the rest, and its identification.

WELMEC Guide 7.2 asks that the legally relevant software be identified by a name, a version
and a checksum computed *from the software itself* (P2/U2), and, where an instrument has
other software too, that the two parts be separated (extension S: S1 realisation of the
separation, S3 a protective interface between them). Here a software image is a set of
named modules (bytes) split into two disjoint mappings:

* ``legally_relevant``: everything that determines measurement results, their signature,
  storage and the audit trail. The checksum covers exactly these modules, so the
  identification changes with any change of them.
* ``other``: everything else (user interface, communication helpers). It is outside the
  checksum: updating it needs no new identification, and the device's public interface
  (:class:`~metrocloud.device.device.Device`) gives it no way to write legally relevant
  state except through logged operations (S3).

Checksum algorithm (documented so a notified body can recompute it): SHA-256 over the
modules sorted by the UTF-8 bytes of their names, each contributing

    uint32 big-endian byte length of the name || name (UTF-8)
    || uint64 big-endian byte length of the content || content

The length prefixes make the encoding injective: no two different module sets give the
same byte stream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from metrocloud.domain.errors import InvalidInput
from metrocloud.domain.types import ChecksumAlgorithm, SoftwareIdentification
from metrocloud.trust.canonical import canonical_json

__all__ = [
    "CHECKSUM_ALGORITHM",
    "IMAGE_FORMAT",
    "REFERENCE_SOFTWARE_NAME",
    "SoftwareImage",
    "identify",
    "reference_software",
    "software_checksum",
]

#: the algorithm the device computes its software identification with
CHECKSUM_ALGORITHM = ChecksumAlgorithm.SHA256
#: name of the reference device's legally relevant software
REFERENCE_SOFTWARE_NAME = "metrocloud-reference-meter"
#: the format tag of :meth:`SoftwareImage.to_json`
IMAGE_FORMAT = "metrocloud software image v1"

_RULE = "WELMEC 7.2 P2/U2 (software identification)"
_MODULE_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")

#: the reference device's modules, relative to the metrocloud package directory
_REFERENCE_LEGALLY_RELEVANT = (
    "formats/batches.py",
    "_fs.py",
    "device/device.py",
    "device/eventlog.py",
    "device/register.py",
    "device/signer.py",
    "device/software.py",
    "device/update.py",
)
_REFERENCE_OTHER = ("device/__init__.py",)


def software_checksum(modules: Mapping[str, bytes]) -> str:
    """Lowercase hex SHA-256 of ``modules`` in the documented order and framing."""
    checked = _check_modules(modules, "legally relevant")
    if not checked:
        raise InvalidInput("legally relevant software needs at least one module", rule=_RULE)
    digest = hashlib.sha256()
    for name_bytes, content in sorted((name.encode("utf-8"), data) for name, data in checked):
        digest.update(len(name_bytes).to_bytes(4, "big"))
        digest.update(name_bytes)
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.hexdigest()


def identify(name: str, version: str, modules: Mapping[str, bytes]) -> SoftwareIdentification:
    """The software identification (name, version, sha256, checksum) of ``modules``."""
    return SoftwareIdentification(
        name=name,
        version=version,
        algorithm=CHECKSUM_ALGORITHM,
        checksum=software_checksum(modules),
    )


@dataclass(frozen=True, slots=True, eq=True)
class SoftwareImage:
    """Installed (or deliverable) software: legally relevant modules and the others.

    :attr:`identification` is computed from ``legally_relevant`` on construction, never
    taken from a claim (WELMEC 7.2 P2/U2); a module may not be in both parts (S1).
    """

    name: str
    version: str
    legally_relevant: Mapping[str, bytes]
    other: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    identification: SoftwareIdentification = field(init=False, compare=False)

    def __post_init__(self) -> None:
        relevant = dict(_check_modules(self.legally_relevant, "legally relevant"))
        other = dict(_check_modules(self.other, "other"))
        both = sorted(relevant.keys() & other.keys())
        if both:
            raise InvalidInput(
                f"module(s) {', '.join(map(repr, both[:5]))} are both legally relevant and "
                "not; the parts must be disjoint",
                rule="WELMEC 7.2 S1 (realisation of software separation)",
            )
        object.__setattr__(self, "legally_relevant", MappingProxyType(relevant))
        object.__setattr__(self, "other", MappingProxyType(other))
        object.__setattr__(self, "identification", identify(self.name, self.version, relevant))

    @property
    def checksum(self) -> str:
        return self.identification.checksum

    def to_json(self) -> bytes:
        """Canonical JSON with the modules' bytes in standard base64 (for the state dir)."""
        return canonical_json(
            {
                "format": IMAGE_FORMAT,
                "name": self.name,
                "version": self.version,
                "legally_relevant": _encode_modules(self.legally_relevant),
                "other": _encode_modules(self.other),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> SoftwareImage:
        """Inverse of :meth:`to_json`; the identification is recomputed from the modules."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"software image is not JSON: {exc}", rule=IMAGE_FORMAT) from None
        expected = {"format", "name", "version", "legally_relevant", "other"}
        if type(raw) is not dict or raw.keys() != expected or raw["format"] != IMAGE_FORMAT:
            raise InvalidInput(
                f"software image must be an object with exactly {', '.join(sorted(expected))} "
                f"and format {IMAGE_FORMAT!r}",
                rule=IMAGE_FORMAT,
            )
        if type(raw["name"]) is not str or type(raw["version"]) is not str:
            raise InvalidInput("software image name and version must be text", rule=IMAGE_FORMAT)
        return cls(
            name=raw["name"],
            version=raw["version"],
            legally_relevant=_decode_modules(raw["legally_relevant"]),
            other=_decode_modules(raw["other"]),
        )


def reference_software(version: str = "1.0.0") -> SoftwareImage:
    """The reference device's own software: its Python modules, read from this install.

    The legally relevant part is the code that measures, signs, stores and logs (the batch
    codec and the device modules); the package's ``__init__`` (re-exports only) is the
    other part. Its checksum changes whenever that code changes.
    """
    root = Path(__file__).resolve().parents[1]
    return SoftwareImage(
        name=REFERENCE_SOFTWARE_NAME,
        version=version,
        legally_relevant={
            f"metrocloud/{p}": (root / p).read_bytes() for p in _REFERENCE_LEGALLY_RELEVANT
        },
        other={f"metrocloud/{p}": (root / p).read_bytes() for p in _REFERENCE_OTHER},
    )


def _check_modules(modules: Mapping[str, bytes], part: str) -> list[tuple[str, bytes]]:
    if not isinstance(modules, Mapping):
        raise InvalidInput(
            f"{part} software modules must be a mapping of name to bytes, "
            f"found {type(modules).__name__}",
            rule=_RULE,
        )
    checked = []
    for name, content in modules.items():
        if not isinstance(name, str) or _MODULE_NAME.fullmatch(name) is None:
            raise InvalidInput(
                f"{part} module name {name!r} must be 1-200 characters without control characters",
                rule=_RULE,
            )
        if not isinstance(content, bytes):
            raise InvalidInput(
                f"{part} module {name!r} must be bytes, found {type(content).__name__}",
                rule=_RULE,
            )
        checked.append((name, content))
    return checked


def _encode_modules(modules: Mapping[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(data).decode("ascii") for name, data in modules.items()}


def _decode_modules(raw: Any) -> dict[str, bytes]:
    if type(raw) is not dict:
        raise InvalidInput("software image modules must be an object", rule=IMAGE_FORMAT)
    modules = {}
    for name, text in raw.items():
        try:
            modules[name] = base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise InvalidInput(
                f"software image module {name!r} is not base64", rule=IMAGE_FORMAT
            ) from None
    return modules
