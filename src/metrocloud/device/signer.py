"""The batching signer: counter and hash chain of a device key, persisted before release.

Every batch a device key signs carries the next ``counter`` and, as ``prev``, the digest of
the key's previous batch (see :mod:`metrocloud.formats.batches`). The signer keeps both in a
state file that is written atomically (fsync, rename) *before* a signed batch is handed
out. A restarted device therefore continues after the last counter it ever released and
never signs two different batches with one counter; a crash after persisting but before
transmitting only leaves a gap, which the receiver sees (WELMEC 7.2 T1: completeness, T8:
interruption of transmission).

The state file also carries an opaque ``cursor`` the caller supplies with each batch (the
reference device stores its register position there), so the position of the measurement
and the counter that covered it are committed in one atomic write.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from metrocloud._fs import write_atomically
from metrocloud.domain.errors import Conflict, InvalidInput, RuleViolation
from metrocloud.formats.batches import GENESIS_PREV, SignedBatch, encode_batch
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = ["STATE_FORMAT", "BatchSigner", "SignerUnusable"]

#: format tag of the signer's state file
STATE_FORMAT = "metrocloud batch signer state v1"
_STATE_FIELDS = frozenset({"format", "instrument", "key", "counter", "prev", "cursor"})


class SignerUnusable(RuleViolation):
    """Persisting the signer state failed; the signer refuses to sign until reopened."""

    code = "signer-unusable"


class BatchSigner:
    """Signs batches of one instrument with one device key, continuing a persisted chain.

    Ed25519 and ECDSA P-256 keys are both accepted (the algorithm is the key's). Thread-safe:
    concurrent :meth:`sign` calls get consecutive counters.
    """

    def __init__(
        self,
        key: PrivateKey,
        *,
        instrument: str,
        state_path: Path | None = None,
        counter: int = 0,
        prev: str = GENESIS_PREV,
        cursor: Mapping[str, Any] | None = None,
    ) -> None:
        """Prefer :meth:`open`, which restores the persisted state."""
        self._key = key
        self._instrument = instrument
        self._state_path = state_path
        self._counter = counter
        self._prev = prev
        self._cursor: Mapping[str, Any] = MappingProxyType(dict(cursor or {}))
        self._lock = threading.Lock()
        self._unusable = False

    @classmethod
    def open(cls, key: PrivateKey, *, instrument: str, state_path: Path) -> BatchSigner:
        """Restore the counter, ``prev`` and cursor from ``state_path`` (fresh if missing).

        Raises :class:`Conflict` if the state belongs to another key or instrument: a
        counter is per device key and must not be continued by a different one.
        """
        state_path = Path(state_path)
        if not state_path.exists():
            return cls(key, instrument=instrument, state_path=state_path)
        state = _read_state(state_path)
        if state["key"] != key.key_id or state["instrument"] != instrument:
            raise Conflict(
                f"signer state {state_path} belongs to key {state['key']} of instrument "
                f"{state['instrument']}, not to key {key.key_id} of instrument {instrument}",
                rule="metrocloud signed batch v1 (counter per device key)",
            )
        return cls(
            key,
            instrument=instrument,
            state_path=state_path,
            counter=state["counter"],
            prev=state["prev"],
            cursor=state["cursor"],
        )

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    @property
    def instrument(self) -> str:
        return self._instrument

    @property
    def counter(self) -> int:
        """The counter of the last batch released (0 before the first)."""
        return self._counter

    @property
    def prev(self) -> str:
        """The ``prev`` the next batch will carry (digest of the last one, or 64 zeros)."""
        return self._prev

    @property
    def cursor(self) -> Mapping[str, Any]:
        """The cursor persisted with the last batch (empty before the first)."""
        return self._cursor

    def sign(
        self,
        *,
        software: str,
        quantity: str,
        unit: str,
        t: Sequence[int],
        value: Sequence[int | float],
        status: Sequence[int],
        cursor: Mapping[str, Any] | None = None,
    ) -> SignedBatch:
        """Sign the next batch; the new state (and ``cursor``) is durable before it returns."""
        with self._lock:
            if self._unusable:
                raise SignerUnusable(
                    "a previous state write failed; reopen the signer from its state file so "
                    "no counter is used twice",
                    rule="metrocloud signed batch v1 (counter never reused)",
                )
            counter = self._counter + 1
            batch = encode_batch(
                self._key,
                instrument=self._instrument,
                counter=counter,
                prev=self._prev,
                software=software,
                quantity=quantity,
                unit=unit,
                t=t,
                value=value,
                status=status,
            )
            new_cursor = dict(self._cursor if cursor is None else cursor)
            if self._state_path is not None:
                state = {
                    "format": STATE_FORMAT,
                    "instrument": self._instrument,
                    "key": self._key.key_id,
                    "counter": counter,
                    "prev": batch.digest,
                    "cursor": new_cursor,
                }
                data = canonical_json(state)
                try:
                    write_atomically(self._state_path, data)
                except BaseException:
                    self._unusable = True
                    raise
            self._counter = counter
            self._prev = batch.digest
            self._cursor = MappingProxyType(new_cursor)
            return batch

    def sign_one(
        self,
        *,
        software: str,
        quantity: str,
        unit: str,
        t: int,
        value: int | float,
        status: int = 0,
        cursor: Mapping[str, Any] | None = None,
    ) -> SignedBatch:
        """Sign a single reading (a batch of one)."""
        return self.sign(
            software=software,
            quantity=quantity,
            unit=unit,
            t=[t],
            value=[value],
            status=[status],
            cursor=cursor,
        )

    def __repr__(self) -> str:
        return (
            f"BatchSigner(instrument={self._instrument!r}, key_id={self._key.key_id}, "
            f"counter={self._counter})"
        )


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"signer state {path} is not JSON: {exc}", rule=STATE_FORMAT) from None
    if (
        type(state) is not dict
        or state.keys() != _STATE_FIELDS
        or state["format"] != STATE_FORMAT
        or type(state["counter"]) is not int
        or state["counter"] < 0
        or type(state["prev"]) is not str
        or len(state["prev"]) != 64
        or type(state["cursor"]) is not dict
    ):
        raise InvalidInput(
            f"signer state {path} is not a {STATE_FORMAT!r} object with fields "
            f"{', '.join(sorted(_STATE_FIELDS))}",
            rule=STATE_FORMAT,
        )
    return state
