"""The lake's own error: a lake whose on-disk state cannot be trusted."""

from __future__ import annotations

from metrocloud.domain.errors import MetrocloudError

__all__ = ["LakeCorrupt"]


class LakeCorrupt(MetrocloudError):
    """The manifest (or a file it lists) is unreadable, tampered with or missing.

    Never answered with an empty lake: a lake that cannot prove its state refuses to open.
    """

    code = "lake-corrupt"
