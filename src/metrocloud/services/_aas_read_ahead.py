"""Read-ahead for shell listings: the next pages rendered while the client reads this one.

A client walking ``/shells`` by cursor (an AAS harvester, a registry synchronizer) asks for
page k+1 right after page k. Rendering a shell it has not been asked for before (building
the aas-core3.0 object and its JSON) is most of a cold page's cost. So when a page rendered
shells afresh (or was itself rendered ahead: the walk goes on) and has a next page,
:meth:`ReadAhead.offer` hands that page to one background thread, which reads its rows (the
same keyset query for the same caller) and renders them into the shell memo
(:mod:`metrocloud.twin.shells`), in the render process where there is one (a second core:
:mod:`metrocloud.twin._render_process`), then goes on with the page after it, staying at
most :data:`DEPTH` pages ahead of the walk's requests. The request for a page being rendered
ahead waits for it instead of rendering the same shells a second time beside it, and finds
them rendered; its asking lets the thread go one page further.

Nothing leaves this module: a rendered shell reaches a client only through the request
path, which authorizes, logs and reads the rows again; the memo is keyed by the fields a
shell is made of, so it is never stale. One walk (node, caller, page size) is read ahead at a
time: an offer for another walk while the thread renders is dropped (under concurrent load a
page is rendered by its own request as before), and one made while it is idle takes the
thread over (what was rendered ahead stays in the memo). Pages served from the memo offer
nothing, so repeated reads of the same pages cost no extra query.
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
#: pages rendered ahead of the walk's latest request, at most
DEPTH = 3

#: reads the page at a cursor and renders it into the memo; answers the next page's cursor
#: (or None) and, where the rendering goes on elsewhere, what finishes it (or None: done)
Render = Callable[[str], "tuple[str | None, Callable[[], None] | None]"]


class ReadAhead:
    """One background thread rendering the next pages of one walk, at most ``depth`` ahead."""

    def __init__(self, depth: int = DEPTH) -> None:
        self.depth = depth
        self._cond = threading.Condition(threading.Lock())
        self._walk: Any = None
        #: cursor -> set when rendered: the walk's pages rendered, being rendered or queued
        #: ahead and not asked for yet
        self._pages: dict[str, threading.Event] = {}
        self._front: str | None = None  # the walk's next page to queue (None: none)
        self._queued: str | None = None  # the page the thread renders next
        self._render: Render | None = None
        self.busy = False  # a page is being rendered (read without the lock: tests, logs)
        self._thread: threading.Thread | None = None
        #: pages being rendered elsewhere, in order: (cursor, event, what finishes it)
        self._finishing: queue.SimpleQueue[tuple[str, threading.Event, Callable[[], None]]] = (
            queue.SimpleQueue()
        )
        self._unfinished = 0  # pages handed to the finisher and not finished yet
        self.done = 0  # pages rendered ahead (tests, logs)

    def offer(self, walk: Any, cursor: str, render: Render) -> bool:
        """The page at ``cursor`` of ``walk`` is likely asked for next: render it (and the pages
        after it) ahead, unless the thread is busy with another walk. True if taken."""
        with self._cond:
            if walk != self._walk or (cursor not in self._pages and cursor != self._front):
                if self.busy or self._queued is not None:  # another walk or place in this one
                    return False
                self._walk, self._pages, self._front = walk, {}, cursor
            self._render = render
            self._schedule()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="aas-read-ahead", daemon=True
                )
                self._thread.start()
                threading.Thread(
                    target=self._finish, name="aas-read-ahead-finish", daemon=True
                ).start()
        return True

    def idle(self) -> bool:
        """Nothing queued, being rendered or being finished (tests, logs)."""
        with self._cond:
            return not self.busy and self._queued is None and self._unfinished == 0

    def _schedule(self) -> None:
        """Queue the walk's next page if there is room ahead (under the lock).

        A page is registered the moment it is queued, so that its request, however soon it
        comes, waits for it rather than rendering it a second time."""
        if (
            self.busy
            or self._queued is not None
            or self._front is None
            or len(self._pages) >= self.depth
        ):
            return
        self._queued = self._front
        self._pages[self._front] = threading.Event()
        self._cond.notify_all()

    def wait(self, walk: Any, cursor: str | None, timeout: float = WAIT_S) -> bool:
        """If the page at ``cursor`` of ``walk`` was or is being rendered ahead, wait for it (at
        most ``timeout``). True if so: the walk goes on, so the caller offers the page after
        it. Asking for a page lets the read-ahead go one page further."""
        with self._cond:
            if walk != self._walk or cursor is None or cursor not in self._pages:
                return False
            event = self._pages[cursor]
        event.wait(timeout)
        with self._cond:
            if walk == self._walk:
                self._pages.pop(cursor, None)
                self._schedule()
        return True

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._queued is None:
                    self._cond.wait()
                walk, cursor, render = self._walk, self._queued, self._render
                event = self._pages[cursor]
                self._queued, self.busy = None, True
            nxt: str | None = None
            finish: Callable[[], None] | None = None
            ok = False
            try:
                assert render is not None
                nxt, finish = render(cursor)
                ok = True
            except Exception:  # a read-ahead is only a hint: the request renders itself
                log.debug("AAS read-ahead of %r failed", cursor, exc_info=True)
            finally:
                with self._cond:
                    if finish is None:
                        self.done += ok
                        event.set()
                    else:  # rendered elsewhere: finished in order by the finisher thread
                        self._unfinished += 1
                        self._finishing.put((cursor, event, finish))
                    self.busy = False
                    if walk == self._walk and self._front == cursor:
                        self._front = nxt
                    self._schedule()

    def _finish(self) -> None:
        while True:
            cursor, event, finish = self._finishing.get()
            ok = False
            try:
                finish()
                ok = True
            except Exception:  # a lost hint, as above
                log.debug("AAS read-ahead of %r failed", cursor, exc_info=True)
            finally:
                with self._cond:
                    self._unfinished -= 1
                    self.done += ok
                event.set()
