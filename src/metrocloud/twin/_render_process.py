"""Shells rendered in a helper process: the read-ahead's second core.

Rendering a shell (building its aas-core3.0 object and writing its JSON) is pure Python: in
a thread beside the requests it holds the interpreter lock they need, so a read-ahead thread
only overlaps the server's idle time, never its work. :class:`RenderProcess` hands the
rendering to one helper process (started with ``spawn``: the server's threads are not
forked) that renders the shells of a page from their fields (the same pure functions as the
memo, :func:`metrocloud.twin.shells.render_instrument` and
:func:`~metrocloud.twin.shells.render_type`) and answers their JSON bytes; the caller puts
them into the memo (:func:`metrocloud.twin.shells.prime`). Only those plain fields cross the
process boundary: no row, no connection, no key, no caller.

The helper is a convenience, never a dependency: until it has started (it imports the
metamodel library, about a second), after it died, or on a machine with one core,
:meth:`RenderProcess.render` answers ``None`` and the caller renders in its own thread as
before. It is a daemon process: it ends with the server (and when the server's end of the
pipe closes, if the server was killed).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["RenderProcess", "cores"]

log = logging.getLogger(__name__)

#: how long a caller waits for the helper's answer before it renders the page itself
_ANSWER_S = 10.0
Fields = tuple[str, ...]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _serve(conn: Connection) -> None:
    """The helper's loop: (number, instrument fields, type fields) in, their JSON bytes out."""
    from metrocloud.twin.shells import render_instrument, render_type

    conn.send("ready")
    while True:
        try:
            number, instruments, types = conn.recv()
        except (EOFError, OSError):  # the server closed its end or died
            return
        try:
            answer: Any = (
                [render_instrument(*f) for f in instruments],
                [render_type(*f) for f in types],
            )
        except Exception as exc:  # reported to the caller, who renders the page itself
            answer = exc.__class__.__name__
        conn.send((number, answer))


#: a submitted page: (the helper's generation, its number)
Ticket = tuple[int, int]


class RenderProcess:
    """One helper process rendering pages of shells, in the order they were submitted.

    :meth:`submit` hands a page over without waiting; :meth:`result` waits for its JSON. One
    thread may submit while another collects (the read-ahead reads the next page's rows while
    the helper renders this one); pages are rendered one after the other."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = cores() > 1 if enabled is None else enabled
        self._lock = threading.Lock()  # the helper's life and the sending side
        self._receiving = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = False
        self._generation = 0
        self._sent = 0
        self.rendered = 0  # shells rendered by the helper (tests, logs)

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(theirs,), name="aas-render", daemon=True)
        proc.start()
        theirs.close()
        self._proc, self._conn, self._ready = proc, ours, False
        self._generation += 1

    def _usable(self) -> bool:
        """Start the helper if need be; True once it said it is ready (never blocks)."""
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                log.warning("the AAS render process ended (exit code %s)", self._proc.exitcode)
                self._close()
            self._start()
        if not self._ready:
            assert self._conn is not None
            if self._conn.poll() and self._conn.recv() == "ready":
                self._ready = True
        return self._ready

    def submit(self, instruments: list[Fields], types: list[Fields]) -> Ticket | None:
        """Hand these shells to the helper; None: render them yourself (no helper ready)."""
        if not self.enabled or not (instruments or types):
            return None
        with self._lock:
            try:
                if not self._usable():
                    return None
                assert self._conn is not None
                self._sent += 1
                self._conn.send((self._sent, instruments, types))
            except (EOFError, OSError) as exc:
                log.warning("the AAS render process failed (%s); restarting it", exc)
                self._close()
                return None
            return self._generation, self._sent

    def result(self, ticket: Ticket) -> tuple[list[bytes], list[bytes]] | None:
        """The JSON of a submitted page (instruments, types), or None: render it yourself."""
        generation, number = ticket
        with self._receiving:
            conn = self._conn
            if generation != self._generation or conn is None:
                return None  # that helper is gone
            try:
                while True:  # answers come in order: skip those nobody collected
                    if not conn.poll(_ANSWER_S):
                        raise TimeoutError(f"no answer within {_ANSWER_S} s")
                    got, answer = conn.recv()
                    if got >= number:
                        break
            except (EOFError, OSError, TimeoutError) as exc:
                log.warning("the AAS render process failed (%s); restarting it", exc)
                with self._lock:
                    if generation == self._generation:
                        self._close()
                return None
        if got != number or isinstance(answer, str):
            log.warning("the AAS render process could not render a page (%s)", answer)
            return None
        instruments, types = answer
        self.rendered += len(instruments) + len(types)
        return instruments, types

    def render(
        self, instruments: list[Fields], types: list[Fields]
    ) -> tuple[list[bytes], list[bytes]] | None:
        """:meth:`submit` and :meth:`result` in one: the JSON of these shells, or None."""
        ticket = self.submit(instruments, types)
        return None if ticket is None else self.result(ticket)

    def close(self) -> None:
        """Stop the helper (a later :meth:`submit` starts a new one)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._proc, self._conn, self._ready = None, None, False
