"""The one error family of metrocloud.

Every error metrocloud raises on purpose derives from :class:`MetrocloudError`. Faces (API,
CLI) translate them in exactly one place each: the API into RFC 9457 problem+json, the CLI
into one line on stderr and a non-zero exit.

Messages carry evidence: what was expected, what was found, and the rule enforced.
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidInput",
    "MetrocloudError",
    "NotFound",
    "RuleViolation",
    "Unauthenticated",
    "VerificationError",
]


class MetrocloudError(Exception):
    """Base of every error metrocloud raises on purpose."""

    #: short machine-readable slug, used as the problem type suffix
    code: str = "error"

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: the clause enforced (MID annex point, RFC section, platform rule id)
        self.rule = rule

    def __str__(self) -> str:
        return self.message


class DomainError(MetrocloudError):
    """A request that is well-formed but the law or the platform's rules do not allow."""

    code = "domain-error"


class RuleViolation(DomainError):
    """An illegal state transition or a broken legal rule; ``rule`` names the rule."""

    code = "rule-violation"


class NotFound(MetrocloudError):
    """The named record does not exist (or is not visible to the caller)."""

    code = "not-found"


class Conflict(MetrocloudError):
    """The request collides with a record that exists already (duplicate serial, ...)."""

    code = "conflict"


class InvalidInput(MetrocloudError):
    """Misuse: the input is malformed or out of range."""

    code = "invalid-input"


class VerificationError(MetrocloudError):
    """A signature, proof, chain or record does not hold."""

    code = "verification-failed"


class Unauthenticated(MetrocloudError):
    """No valid credential was presented."""

    code = "unauthenticated"


class Forbidden(MetrocloudError):
    """The authenticated party lacks the right for this action."""

    code = "forbidden"
