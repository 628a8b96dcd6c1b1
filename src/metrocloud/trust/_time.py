"""The one timestamp format of metrocloud: RFC 3339 UTC, millisecond precision, trailing Z."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from metrocloud.domain.errors import InvalidInput

__all__ = ["parse_utc_timestamp", "utc_timestamp"]

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_FORMAT_HINT = "YYYY-MM-DDTHH:MM:SS.mmmZ (RFC 3339 §5.6, UTC, millisecond precision)"


def utc_timestamp(dt: datetime | None = None) -> str:
    """Format ``dt`` (default: now) as ``2026-11-24T10:00:00.123Z``.

    ``dt`` must be timezone-aware; it is converted to UTC and truncated (not rounded) to
    milliseconds, so a timestamp never lies in the future of the instant it describes.
    """
    if dt is None:
        dt = datetime.now(UTC)
    elif dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidInput(
            f"naive datetime {dt.isoformat()} has no timezone; expected an aware datetime",
            rule="RFC 3339 §4.3",
        )
    dt = dt.astimezone(UTC)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def parse_utc_timestamp(text: str, *, what: str = "timestamp") -> datetime:
    """Parse the format produced by :func:`utc_timestamp` (and nothing else)."""
    if not isinstance(text, str) or _TIMESTAMP.fullmatch(text) is None:
        raise InvalidInput(
            f"{what} {text!r} is not in the form {_FORMAT_HINT}", rule="RFC 3339 §5.6"
        )
    try:
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not a valid calendar date and time", rule="RFC 3339 §5.7"
        ) from None
    return parsed.replace(tzinfo=UTC)
