"""Read-ahead for shell listings: the next page rendered while the client reads this one.

A client walking ``/shells`` by cursor (an AAS harvester, a registry synchronizer) asks for
page k+1 right after page k. Rendering a shell it has not been asked for before (building
the aas-core3.0 object and its JSON) is most of a cold page's cost, and the server's core is
idle while the client receives and parses page k. So when a page rendered shells afresh (or
was itself rendered ahead: the walk goes on) and has a next page, :meth:`ReadAhead.offer`
hands that next page to one background thread, which reads
its rows (the same keyset query for the same caller) and renders them into the shell memo
(:mod:`metrocloud.twin.shells`). The request for page k+1 then waits for that job, if it is
still running, instead of rendering the same shells a second time beside it, and finds them
rendered.

Nothing leaves this module: a rendered shell reaches a client only through the request
path, which authorizes, logs and reads the rows again; the memo is keyed by the fields a
shell is made of, so it is never stale. At most one page is read ahead at a time; an offer
made while the thread is busy is dropped (under concurrent load a page is rendered by its own
request as before). Pages served from the memo offer nothing, so repeated reads of the same
pages cost no extra query.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ReadAhead"]

log = logging.getLogger(__name__)

#: how long a request waits for the read-ahead of its own page before rendering itself
WAIT_S = 2.0
#: pages rendered ahead that are remembered until asked for (walks that stopped are forgotten)
_FINISHED = 64


class ReadAhead:
    """One background thread rendering at most one announced page at a time."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Any, Callable[[], None]]] = queue.Queue()
        self._running: dict[Any, threading.Event] = {}
        #: pages rendered ahead and not yet asked for (oldest first, at most _FINISHED)
        self._finished: dict[Any, None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.done = 0  # pages rendered ahead (tests, logs)

    def offer(self, key: Any, render: Callable[[], None]) -> bool:
        """Render ``render()`` in the background under ``key`` unless busy; True if taken."""
        with self._lock:
            if self._running:  # one page at a time (this one, or another)
                return False
            self._running[key] = threading.Event()
            self._jobs.put_nowait((key, render))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="aas-read-ahead", daemon=True
                )
                self._thread.start()
        return True

    def wait(self, key: Any, timeout: float = WAIT_S) -> bool:
        """If the page ``key`` is being rendered ahead, wait for it (at most ``timeout``).

        True if it was rendered ahead (or still is): the walk goes on, so the caller offers
        the page after it."""
        with self._lock:
            event = self._running.get(key)
            if event is None:
                if key not in self._finished:
                    return False
                del self._finished[key]
                return True
        event.wait(timeout)
        with self._lock:
            self._finished.pop(key, None)
        return True

    def _work(self) -> None:
        while True:
            key, render = self._jobs.get()
            try:
                render()
                self.done += 1
            except Exception:  # a read-ahead is only a hint: the request renders itself
                log.debug("AAS read-ahead of %r failed", key, exc_info=True)
            finally:
                with self._lock:
                    self._running.pop(key).set()
                    self._finished[key] = None
                    while len(self._finished) > _FINISHED:
                        del self._finished[next(iter(self._finished))]
