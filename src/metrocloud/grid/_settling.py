"""What a delivery's answer means for each message sent: pure functions, no I/O.

:func:`cut` picks the messages of one request (a count and a byte budget, at least one
message, in order); :func:`settle` reads the receiver's per-message results and says which
outbox rows are delivered, which are set aside and which one waits for a retry. Both keep
the per-peer order: nothing after a message that waits is touched, and a message the answer
does not mention (the receiver stopped before it) stays pending. They are kept apart from
:mod:`metrocloud.grid.delivery` so the rules can be property-tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "Settlement", "cut", "settle"]

#: the results that mean "the receiver holds this message now"
DONE = frozenset({"applied", "duplicate"})


def cut(sizes: Sequence[int], *, count: int, max_bytes: int) -> int:
    """How many of the first messages (payload ``sizes`` in bytes, in order) go in one
    request: at most ``count``, and only those whose sizes add up to at most ``max_bytes``
    - except the first, which always goes (a message larger than the budget goes alone)."""
    total = 0
    taken = 0
    for size in sizes[: max(1, count)]:
        total += size
        if taken and total > max_bytes:
            break
        taken += 1
    return taken


@dataclass(frozen=True, kw_only=True, slots=True)
class Settlement:
    """Row ids of the messages sent, by what becomes of them."""

    delivered: tuple[int, ...] = ()
    #: set aside for good, with the receiver's reason
    refused: tuple[tuple[int, str], ...] = ()
    #: the first message to wait and be sent again (with the reason); nothing after it moves
    retry: tuple[int, str] | None = None

    @property
    def complete(self) -> bool:
        """Did every message sent get a final answer (delivered or set aside)?"""
        return self.retry is None


def settle(sent: Sequence[tuple[int, str]], answer: Any) -> tuple[Settlement, int]:
    """Read ``answer`` (``{"results": [{message_id, status, detail?}, ...]}``) for the
    messages ``sent`` (row id, message id, in order). Returns the settlement and how many
    of ``sent`` it covers (the rest were not reached and stay pending, untouched).

    A result for another message id, a malformed or missing one ends the reading; an
    unknown status counts as ``retry`` (a newer receiver's answer is never taken for a
    delivery it did not confirm)."""
    results = answer.get("results") if isinstance(answer, dict) else None
    by_id: dict[Any, dict[str, Any]] = {}
    for r in results if isinstance(results, list) else []:
        if isinstance(r, dict) and isinstance(r.get("message_id"), str):
            by_id.setdefault(r["message_id"], r)
    delivered: list[int] = []
    refused: list[tuple[int, str]] = []
    covered = 0
    for row_id, message_id in sent:
        r = by_id.get(message_id)
        if r is None:  # not reached: the receiver stopped before it
            break
        covered += 1
        status = r.get("status")
        if status in DONE:
            delivered.append(row_id)
            continue
        detail = str(r.get("detail", status))[:2000]
        if status == "refused":
            refused.append((row_id, detail))
            continue
        return (
            Settlement(delivered=tuple(delivered), refused=tuple(refused), retry=(row_id, detail)),
            covered,
        )
    return Settlement(delivered=tuple(delivered), refused=tuple(refused)), covered
