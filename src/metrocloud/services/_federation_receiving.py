"""Receiving a peer's outbox messages: in order, each once, many in one transaction.

``POST /api/v1/grid/messages`` carries up to :data:`MAX_MESSAGES` messages of one sender
(docs/grid.md#deliveries). Each is applied once: its ``grid_inbox`` row is written in the
transaction that applies it. Two ways to apply:

* **one by one** (:func:`_apply_one`): the handler registered with ``on_message`` runs in a
  transaction of its own; an exception refuses the message (``retry`` for what may pass,
  ``refused`` for good) and rolls back only it;
* **in batches**, for kinds that registered a :class:`BatchHandler` (replication): a run of
  consecutive messages of that kind is first *prepared* outside any write transaction (for
  replication: every signature checked, so the CPU is not spent holding the write lock),
  and what fails there is refused on its own, with its reason. The rest is applied in a few
  transactions (:data:`STATEMENTS_PER_TRANSACTION`), with one log append, one signed tree
  head and one bulk inbox insert each. Should such a transaction fail all the same (a rule
  only the projector checks, a collision, a concurrent delivery), it is rolled back and its
  messages are applied one by one, so each gets its own exact answer: batching changes the
  cost, never the outcome.

Order: a message that may pass later (``retry``) ends the delivery, the later messages wait
behind it. A message refused for good ends it too in version 1 of the format; in version 2
the receiver goes on (the sender sets the refused one aside and would send the next ones
anyway), so one bad message does not cost a round trip.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from metrocloud.domain.errors import InvalidInput, MetrocloudError, NotFound
from metrocloud.grid.errors import PeerUnavailable
from metrocloud.grid.inbox import (
    Refusal,
    Remembered,
    already_applied,
    applied_answers,
    remember_message,
    remember_messages,
)
from metrocloud.grid.peers import Peer
from metrocloud.services.node import Node
from metrocloud.store.database import StorageUnavailable

__all__ = [
    "MAX_MESSAGES",
    "STATEMENTS_PER_TRANSACTION",
    "VERSIONS",
    "BatchHandler",
    "MessageHandler",
    "on_message_batch",
    "receive",
]

log = logging.getLogger("metrocloud.grid")

#: ``handler(node, conn, sender, payload) -> result``: runs in the transaction that records
#: the message as applied; raise to refuse it (NotFound: "retry later")
MessageHandler = Callable[[Node, Connection, Peer, Mapping[str, Any]], Mapping[str, Any] | None]

MAX_MESSAGES = 1000
#: the delivery formats understood (docs/grid.md#deliveries); a body without ``version`` is 1
VERSIONS = (1, 2)
#: about how many items one batch transaction applies (a message counts its items)
STATEMENTS_PER_TRANSACTION = 500
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
#: a message refused for one of these may be applied later: retry it
_RETRY = (NotFound, PeerUnavailable, StorageUnavailable, OperationalError)


@dataclass(frozen=True, kw_only=True)
class BatchHandler:
    """How many messages of one kind are applied together.

    ``prepare(node, sender, payloads)`` runs outside any write transaction and returns, per
    payload, either what ``apply`` takes or a :class:`~metrocloud.grid.inbox.Refusal`;
    ``apply(node, conn, sender, prepared)`` runs in one write transaction and returns per
    prepared payload the result the one-by-one handler would have returned. Raising in
    ``apply`` is no refusal: the messages are then applied one by one.
    """

    prepare: Callable[[Node, Peer, Sequence[Mapping[str, Any]]], Sequence[Any]]
    apply: Callable[[Node, Connection, Peer, Sequence[Any]], Sequence[Mapping[str, Any]]]
    #: items a payload stands for (how much of a transaction it fills)
    weight: Callable[[Any], int] = lambda _prepared: 1


_BATCHES: dict[str, BatchHandler] = {}


def on_message_batch(kind: str, handler: BatchHandler) -> None:
    """Apply runs of messages of ``kind`` with ``handler`` (the kind's one-by-one handler,
    registered with ``on_message``, remains the fallback)."""
    existing = _BATCHES.get(kind)
    if existing is not None and existing is not handler:
        raise InvalidInput(f"message kind {kind!r} has a batch handler already")
    _BATCHES[kind] = handler


@dataclass(frozen=True, slots=True)
class _Msg:
    position: int  # in the run
    message_id: str
    kind: str
    payload: Mapping[str, Any]


def _outcome(mid: str, status: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"message_id": mid, "status": status}
    if detail is not None:
        out["detail"] = detail
    out.update(extra)
    return out


def _stops(outcome: Mapping[str, Any], version: int) -> bool:
    """Does ``outcome`` end the delivery (the later messages wait)?"""
    status = outcome["status"]
    return status == "retry" or (status == "refused" and version == 1)


def _parse(body: Any) -> tuple[int, list[Any]]:
    version = body.get("version", 1) if isinstance(body, dict) else 1
    messages = body.get("messages") if isinstance(body, dict) else None
    if version not in VERSIONS or isinstance(version, bool):
        raise InvalidInput(
            f"a message delivery of version {version!r}; this node reads versions {VERSIONS}",
            rule="docs/grid.md#deliveries",
        )
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise InvalidInput(
            f"a message delivery is {{'messages': [1 to {MAX_MESSAGES} messages]}}",
            rule="docs/grid.md#deliveries",
        )
    return int(version), messages


def _check(m: Any, handlers: Mapping[str, MessageHandler]) -> _Msg | dict[str, Any]:
    """The message, or the refusal of a malformed one or of a kind nobody handles."""
    mid, kind = (m.get("message_id"), m.get("kind")) if isinstance(m, dict) else (None, None)
    payload = m.get("payload") if isinstance(m, dict) else None
    if not isinstance(mid, str) or not _MESSAGE_ID.match(mid) or not isinstance(payload, dict):
        return _outcome(str(mid)[:64], "refused", "malformed message")
    if not isinstance(kind, str) or kind not in handlers:
        return _outcome(mid, "refused", f"this node handles no messages of {kind!r}")
    return _Msg(0, mid, kind, payload)


def _apply_one(node: Node, sender: Peer, m: _Msg, handler: MessageHandler) -> dict[str, Any]:
    """Apply one message in a transaction of its own; its outcome."""
    try:
        with node.db.write() as conn:
            prior = already_applied(conn, sender.node_id, m.message_id)
            if prior is None:
                result = dict(handler(node, conn, sender, m.payload) or {})
                remember_message(
                    conn,
                    sender.node_id,
                    m.message_id,
                    kind=m.kind,
                    response=result,
                    at=node.timestamp(),
                )
    except IntegrityError as exc:
        # applied meanwhile by a concurrent delivery of the same message, or a record
        # that collides with one this node holds (for good: set it aside)
        with node.db.read() as conn:
            prior = already_applied(conn, sender.node_id, m.message_id)
        if prior is not None:
            return _outcome(m.message_id, "duplicate", result=prior)
        return _outcome(m.message_id, "refused", f"collides with a record here: {exc.orig}")
    except _RETRY as exc:
        return _outcome(m.message_id, "retry", f"{type(exc).__name__}: {exc}")
    except MetrocloudError as exc:
        log.warning(
            "grid: refused message %s (%s) of %s: %s", m.message_id, m.kind, sender.node_id, exc
        )
        return _outcome(m.message_id, "refused", str(exc))
    if prior is not None:
        return _outcome(m.message_id, "duplicate", result=prior)
    return _outcome(m.message_id, "applied", result=result)


def _chunks(ready: list[tuple[_Msg, Any]], weight: Callable[[Any], int]) -> list[list[Any]]:
    chunks: list[list[tuple[_Msg, Any]]] = []
    filled = STATEMENTS_PER_TRANSACTION
    for pair in ready:
        w = max(1, weight(pair[1]))
        if filled + w > STATEMENTS_PER_TRANSACTION and (not chunks or chunks[-1]):
            chunks.append([])
            filled = 0
        chunks[-1].append(pair)
        filled += w
    return chunks


def _apply_run(
    node: Node,
    sender: Peer,
    run: list[_Msg],
    batch: BatchHandler,
    handler: MessageHandler,
    version: int,
) -> list[dict[str, Any]]:
    """Apply ``run`` (consecutive messages of one kind) in batches; the outcomes in order,
    up to the first that ends the delivery."""
    out: dict[int, dict[str, Any]] = {}
    with node.db.read() as conn:
        prior = applied_answers(conn, sender.node_id, [m.message_id for m in run])
    todo = []
    for m in run:
        if m.message_id in prior:
            out[m.position] = _outcome(m.message_id, "duplicate", result=prior[m.message_id])
        else:
            todo.append(m)
    ready: list[tuple[_Msg, Any]] = []
    try:
        prepared = list(batch.prepare(node, sender, [m.payload for m in todo]))
    except MetrocloudError as exc:  # no batch then: each message on its own says why
        log.info("grid: preparing %d messages of %s failed (%s)", len(todo), sender.node_id, exc)
        prepared = [None] * len(todo)
    for m, p in zip(todo, prepared, strict=True):
        if isinstance(p, Refusal):
            log.warning(
                "grid: refused message %s (%s) of %s: %s",
                m.message_id,
                m.kind,
                sender.node_id,
                p.reason,
            )
            out[m.position] = _outcome(m.message_id, "refused", p.reason)
            if version == 1:
                break
        else:
            ready.append((m, p))
    for chunk in _chunks(ready, batch.weight):
        if any(p is None for _, p in chunk) or not _apply_chunk(node, sender, chunk, batch, out):
            stopped = False
            for m, _ in chunk:
                out[m.position] = _apply_one(node, sender, m, handler)
                if _stops(out[m.position], version):
                    stopped = True
                    break
            if stopped:
                break
    results = []
    for m in run:
        o = out.get(m.position)
        if o is None:  # not reached
            break
        results.append(o)
        if _stops(o, version):
            break
    return results


def _apply_chunk(
    node: Node,
    sender: Peer,
    chunk: list[tuple[_Msg, Any]],
    batch: BatchHandler,
    out: dict[int, dict[str, Any]],
) -> bool:
    """Apply ``chunk`` in one transaction; False (nothing applied) if it did not go."""
    try:
        with node.db.write() as conn:
            answers = [dict(a) for a in batch.apply(node, conn, sender, [p for _, p in chunk])]
            remember_messages(
                conn,
                sender.node_id,
                [
                    Remembered(message_id=m.message_id, kind=m.kind, response=a)
                    for (m, _), a in zip(chunk, answers, strict=True)
                ],
                at=node.timestamp(),
            )
    except (MetrocloudError, SQLAlchemyError) as exc:
        log.info(
            "grid: %d messages of %s did not apply in one transaction (%s: %s); one by one",
            len(chunk),
            sender.node_id,
            type(exc).__name__,
            exc,
        )
        return False
    for (m, _), a in zip(chunk, answers, strict=True):
        out[m.position] = _outcome(m.message_id, "applied", result=a)
    return True


def receive(
    node: Node, sender: Peer, body: Any, handlers: Mapping[str, MessageHandler]
) -> dict[str, Any]:
    """Apply ``sender``'s delivery ``body`` in order, each message once (module doc)."""
    version, messages = _parse(body)
    results: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        first = _check(messages[i], handlers)
        if isinstance(first, dict):
            results.append(first)
            if _stops(first, version):
                break
            i += 1
            continue
        batch = _BATCHES.get(first.kind)
        if batch is None:
            outcome = _apply_one(node, sender, first, handlers[first.kind])
            results.append(outcome)
            if _stops(outcome, version):
                break
            i += 1
            continue
        run = [first]
        while i + len(run) < len(messages):
            nxt = _check(messages[i + len(run)], handlers)
            if isinstance(nxt, dict) or nxt.kind != first.kind:
                break
            run.append(_Msg(len(run), nxt.message_id, nxt.kind, nxt.payload))
        outcomes = _apply_run(node, sender, run, batch, handlers[first.kind], version)
        results += outcomes
        if len(outcomes) < len(run) or (outcomes and _stops(outcomes[-1], version)):
            break
        i += len(run)
    answer: dict[str, Any] = {"results": results}
    if version > 1:
        answer["version"] = version
    return answer
