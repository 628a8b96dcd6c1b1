"""The lake's own errors: a lake whose state cannot be trusted, an engine that cannot run."""

from __future__ import annotations

from metrocloud.domain.errors import MetrocloudError

__all__ = ["EngineUnavailable", "LakeCorrupt"]


class LakeCorrupt(MetrocloudError):
    """The manifest (or a file it lists) is unreadable, tampered with or missing.

    Never answered with an empty lake: a lake that cannot prove its state refuses to open.
    """

    code = "lake-corrupt"


class EngineUnavailable(MetrocloudError):
    """A query engine that cannot run here (pyspark or a Java runtime is missing, or the
    Spark master cannot be reached); the message names what to install or which engine to
    use instead."""

    code = "engine-unavailable"
