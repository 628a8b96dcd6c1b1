"""The grid's errors: a peer that cannot be reached, a node request that does not verify."""

from __future__ import annotations

from metrocloud.domain.errors import MetrocloudError, Unauthenticated

__all__ = ["NodeUnauthenticated", "PeerRefused", "PeerUnavailable"]


class PeerUnavailable(MetrocloudError):
    """Another node did not answer (down, unreachable, timed out, or answered 5xx).

    Transient: the outbox retries; a synchronous look-up answers 502 with this message.
    """

    code = "peer-unavailable"


class PeerRefused(MetrocloudError):
    """Another node answered, and refused (4xx): retrying the same request will not help."""

    code = "peer-refused"

    def __init__(self, message: str, *, status: int, rule: str | None = None) -> None:
        super().__init__(message, rule=rule)
        self.status = status


class NodeUnauthenticated(Unauthenticated):
    """A node-to-node request without a valid node signature (401)."""

    code = "node-unauthenticated"
