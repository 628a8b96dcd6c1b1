"""Rate limits for the public endpoints that do work on behalf of anyone (no login).

A token bucket per client address: a client may send ``burst`` requests at once and then
``per_minute`` requests a minute on average; over the limit, the answer is 429 with
``Retry-After`` (whole seconds until a token is back).

The table of buckets is bounded: a bucket that has filled up again is the same as no
bucket, so idle clients are dropped as the table is used (oldest first), and when more than
``max_clients`` addresses are active at once, the least recently seen is dropped (that
client starts again with a full bucket: under such a flood the limit per address is
approximate, never the memory). All state sits behind one lock: it is safe from the event
loop and from worker threads alike.

The client address is ``request.client.host``, the peer of the connection. Behind a
reverse proxy every request comes from the proxy; the proxy (or the server's trusted
forwarded-header handling, e.g. uvicorn ``--forwarded-allow-ips``) must then set the real
address. ``X-Forwarded-For`` is never read here: any client could forge it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

__all__ = [
    "DEFAULT_BURST",
    "MAX_CLIENTS",
    "TokenBucketLimiter",
    "client_address",
    "limiter_for",
    "retry_after",
]

#: requests a client may send at once (capped at the rate per minute)
DEFAULT_BURST = 20
#: most client addresses tracked at once
MAX_CLIENTS = 10_000


@dataclass
class _Bucket:
    tokens: float
    seen: float


class TokenBucketLimiter:
    """Token buckets keyed by client; thread-safe, with a bounded number of clients."""

    def __init__(
        self,
        per_minute: int,
        burst: int = DEFAULT_BURST,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1 or burst < 1 or max_clients < 1:
            raise ValueError("per_minute, burst and max_clients must be at least 1")
        self.per_minute = per_minute
        self.burst = burst
        self.max_clients = max_clients
        self._rate = per_minute / 60.0  # tokens per second
        self._refill = burst / self._rate  # seconds from empty to full
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def acquire(self, client: str) -> float | None:
        """Take one token for ``client``: None when allowed, else seconds until one is back."""
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            bucket = self._buckets.pop(client, None)
            if bucket is None:
                bucket = _Bucket(float(self.burst), now)
            else:
                elapsed = max(0.0, now - bucket.seen)
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self._rate)
                bucket.seen = now
            self._buckets[client] = bucket  # most recently seen last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self._rate

    def _forget_idle(self, now: float) -> None:
        """Drop buckets (oldest first) that are full again: they limit nothing any more."""
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.seen < self._refill:
                return
            self._buckets.popitem(last=False)


def retry_after(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def client_address(request: Request) -> str:
    """The peer address of the connection (see the module docstring about proxies)."""
    return request.client.host if request.client is not None else "unknown"


_CREATE = threading.Lock()


def limiter_for(request: Request, name: str, per_minute: int) -> TokenBucketLimiter | None:
    """The application's limiter ``name`` at ``per_minute`` (None: 0 turns the limit off).

    Kept on the application, so every app (and every test client) counts on its own; a
    changed rate replaces the limiter.
    """
    if per_minute <= 0:
        return None
    state = request.app.state
    with _CREATE:
        limiters: dict[str, TokenBucketLimiter] | None = getattr(state, "rate_limiters", None)
        if limiters is None:
            limiters = {}
            state.rate_limiters = limiters
        limiter = limiters.get(name)
        if limiter is None or limiter.per_minute != per_minute:
            limiter = TokenBucketLimiter(per_minute, min(DEFAULT_BURST, per_minute))
            limiters[name] = limiter
        return limiter
