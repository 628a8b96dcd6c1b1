"""Identifiers: time-ordered, globally unique, naming their home country.

``ins-DE-01JDQ3Z5K8M2N4P6R8T0V2X4Y6`` is ``<kind>-<home country>-<ULID>``: 48 bits of
milliseconds and 80 random bits in Crockford base32, so ids sort by creation time (keyset
pagination walks them in order) and never collide across the grid's nodes.
"""

from __future__ import annotations

import base64
import os
import re
import time

from metrocloud.domain.errors import InvalidInput

__all__ = ["ID_PATTERN", "KINDS", "new_id", "new_ids", "parse_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# xch: exchanged document (services/exchange), alt: alert (services/alerts)
KINDS = frozenset({"pty", "cer", "ins", "evt", "doc", "grt", "xch", "alt"})
ID_PATTERN = re.compile(r"^(pty|cer|ins|evt|doc|grt|xch|alt)-([A-Z]{2})-([0-9A-HJKMNP-TV-Z]{26})$")


_B32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def _ms_part(ms: int) -> str:
    """48 bits of milliseconds as 10 Crockford characters (the first two bits zero)."""
    out = []
    for _ in range(10):
        out.append(_CROCKFORD[ms & 31])
        ms >>= 5
    return "".join(reversed(out))


def _rand_part(value: int) -> str:
    """80 bits as exactly 16 Crockford characters."""
    return base64.b32encode(value.to_bytes(10, "big")).translate(_B32).decode()


def new_id(kind: str, country: str) -> str:
    return new_ids(kind, country, 1)[0]


def new_ids(kind: str, country: str, count: int) -> list[str]:
    """``count`` fresh ids; within one call they increase strictly."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown id kind {kind!r}")
    ms = time.time_ns() // 1_000_000
    start = int.from_bytes(os.urandom(10), "big") >> 16  # leave room to count upwards
    prefix = f"{kind}-{country}-{_ms_part(ms)}"
    return [prefix + _rand_part(start + i) for i in range(count)]


def parse_id(value: str, kind: str | None = None) -> tuple[str, str]:
    """(kind, country) of a well-formed id, else :class:`InvalidInput`."""
    m = ID_PATTERN.match(value)
    if not m or (kind is not None and m.group(1) != kind):
        want = f"a {kind} id" if kind else "an id"
        raise InvalidInput(
            f"expected {want} like '{kind or 'ins'}-DE-<26 ULID characters>', got {value!r}"
        )
    return m.group(1), m.group(2)
