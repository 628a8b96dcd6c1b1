"""The container of an evidence bundle: a canonical, uncompressed ("stored") ZIP archive.

Any ZIP tool lists and extracts it (APPNOTE.TXT 6.3.10 of PKWARE), yet every byte of it is a
function of the members' names and contents alone:

* members in the order given, each a local file header, the name and the data (no data
  descriptor, no encryption, compression method 0 "stored", no extra fields);
* version needed 2.0 and version made by 2.0 (MS-DOS), general purpose flags 0, the DOS time
  00:00:00 of 1980-01-01 (``0x0000``, ``0x0021``), CRC-32 and both sizes in the headers;
* one central directory in the same order (internal and external attributes 0, no comment),
  then the end of central directory record with no archive comment.

:func:`unpack` walks the archive strictly from byte 0 and requires the input to be exactly
what :func:`pack` makes of the members it found, so padding, prefixes, comments, timestamps,
attributes or a second directory cannot hide anywhere. No ZIP64: at most 65,535 members and
4 GiB, which an evidence bundle of one instrument never approaches.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence

from metrocloud.domain.errors import InvalidInput, VerificationError

__all__ = [
    "CONTAINER_RULE",
    "MAX_MEMBERS",
    "check_canonical",
    "check_name",
    "pack",
    "read",
    "unpack",
]

CONTAINER_RULE = "metrocloud evidence bundle v1 container (docs/forensics.md; APPNOTE.TXT 4.3)"
MAX_MEMBERS = 0xFFFF
_MAX_SIZE = 0xFFFFFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_END = struct.Struct("<IHHHHIIH")  # 22 bytes
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_END_SIG = 0x06054B50
_VERSION = 20  # 2.0; host system 0 (MS-DOS) in "version made by"
_DOS_TIME = 0x0000
_DOS_DATE = 0x0021  # 1980-01-01
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")
_MAX_NAME = 200


def check_name(name: str) -> str:
    """A member name: lowercase ASCII path segments, no ``..``, at most 200 characters."""
    if (
        not isinstance(name, str)
        or len(name) > _MAX_NAME
        or _NAME.fullmatch(name) is None
        or ".." in name
    ):
        raise InvalidInput(
            f"member name {name!r:.80} is not a bundle member name: lowercase a-z, 0-9, '.', "
            f"'_', '-' in '/'-separated segments, no '..', at most {_MAX_NAME} characters",
            rule=CONTAINER_RULE,
        )
    return name


def pack(members: Sequence[tuple[str, bytes]]) -> bytes:
    """The canonical archive of ``(name, data)`` members, in the order given."""
    if len(members) > MAX_MEMBERS:
        raise InvalidInput(
            f"a bundle holds at most {MAX_MEMBERS} members, got {len(members)}",
            rule=CONTAINER_RULE,
        )
    names = [check_name(name) for name, _ in members]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"member name(s) {dup} appear twice", rule=CONTAINER_RULE)
    out = bytearray()
    central = bytearray()
    for name, data in members:
        raw = name.encode("ascii")
        crc = zlib.crc32(data)
        offset = len(out)
        if len(data) > _MAX_SIZE or offset > _MAX_SIZE:
            raise InvalidInput(
                f"member {name} ends beyond 4 GiB: the v1 container has no ZIP64",
                rule=CONTAINER_RULE,
            )
        size = len(data)
        out += _LOCAL.pack(
            _LOCAL_SIG, _VERSION, 0, 0, _DOS_TIME, _DOS_DATE, crc, size, size, len(raw), 0
        )
        out += raw
        out += data
        central += _CENTRAL.pack(
            _CENTRAL_SIG,
            _VERSION,
            _VERSION,
            0,
            0,
            _DOS_TIME,
            _DOS_DATE,
            crc,
            size,
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += raw
    start = len(out)
    if start > _MAX_SIZE:
        raise InvalidInput(
            "bundle exceeds 4 GiB: the v1 container has no ZIP64", rule=CONTAINER_RULE
        )
    n = len(members)
    out += central
    out += _END.pack(_END_SIG, 0, 0, n, n, len(central), start, 0)
    return bytes(out)


def _fail(message: str) -> VerificationError:
    return VerificationError(f"{message} ({CONTAINER_RULE})", rule=CONTAINER_RULE)


def read(data: bytes) -> list[tuple[str, bytes]]:
    """The members of an archive as its local entries say, read from byte 0 in order.

    Stops at the first bytes that are not a local file header (the central directory in a
    well-formed archive); :func:`check_canonical` then decides whether the rest is right.
    """
    members: list[tuple[str, bytes]] = []
    pos = 0
    view = memoryview(data)
    while len(data) - pos >= 4 and struct.unpack_from("<I", data, pos)[0] == _LOCAL_SIG:
        if len(data) - pos < _LOCAL.size:
            raise _fail(f"local file header at offset {pos} is truncated")
        fields = _LOCAL.unpack_from(data, pos)
        size, name_len, extra_len = fields[8], fields[9], fields[10]
        start = pos + _LOCAL.size + name_len + extra_len
        if start + size > len(data):
            raise _fail(
                f"member at offset {pos} claims {size} bytes, only {len(data) - start} follow"
            )
        raw_name = bytes(view[pos + _LOCAL.size : pos + _LOCAL.size + name_len])
        try:
            name = check_name(raw_name.decode("ascii"))
        except (UnicodeDecodeError, InvalidInput):
            raise _fail(f"member at offset {pos} has the name {raw_name!r:.80}") from None
        members.append((name, bytes(view[start : start + size])))
        if len(members) > MAX_MEMBERS:
            raise _fail(f"more than {MAX_MEMBERS} members")
        pos = start + size
    if not members:
        raise _fail("not a bundle: no ZIP local file header at offset 0")
    return members


def check_canonical(data: bytes, members: Sequence[tuple[str, bytes]]) -> None:
    """Require ``data == pack(members)``; the error names the first differing byte."""
    try:
        expected = pack(members)
    except InvalidInput as exc:
        raise _fail(f"members cannot form a canonical bundle: {exc.message}") from None
    if expected != data:
        at = _first_difference(expected, data)
        raise _fail(
            f"container is not canonical: byte {at} differs from the canonical encoding of "
            f"its {len(members)} members (canonical length {len(expected)}, got {len(data)})"
        )


def unpack(data: bytes) -> list[tuple[str, bytes]]:
    """The members of a canonical archive, in order; :class:`VerificationError` otherwise.

    :func:`read`, then :func:`check_canonical`: any byte other than the ones :func:`pack`
    makes of the members found fails, with the offset of the first that differs.
    """
    members = read(data)
    check_canonical(data, members)
    return members


def _first_difference(a: bytes, b: bytes, chunk: int = 4096) -> int:
    """Offset of the first byte where ``a`` and ``b`` differ (the shorter length if none)."""
    n = min(len(a), len(b))
    for base in range(0, n, chunk):
        stop = min(base + chunk, n)
        if a[base:stop] != b[base:stop]:
            return next(i for i in range(base, stop) if a[i] != b[i])
    return n
