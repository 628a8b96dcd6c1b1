"""How a ``metrocloud`` process ends once its command has answered.

A command's verdict is its output and its exit status; nothing after them may change either.
CPython's finalization runs the destructors of native libraries after the last byte is out,
and Apache Arrow's C++ thread pools (and the jemalloc arena threads bundled with pyarrow) can
abort the process there: ``terminate called without an active exception``, status -6, for a
run that already printed "VALID" (apache/arrow#34314; seen intermittently on a loaded CI
machine by ``metrocloud evidence verify``). So the command line ends the process itself,
doing first everything a normal exit does that matters to a caller:

1. wait for the non-daemon threads (what ``threading`` does at shutdown);
2. run the ``atexit`` hooks (logging's flush among them), in their usual order;
3. flush ``stdout`` and ``stderr``; a failed flush of stdout turns success into status 120,
   as CPython does;
4. ``os._exit`` with the command's status, skipping only the native teardown.

An exception that escapes a command is left to the interpreter (traceback, status 1).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

__all__ = ["exit_status", "run_and_end"]

#: CPython's status when flushing stdout fails at exit
FLUSH_FAILED = 120


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would give: None is 0, an int itself, anything else is
    printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with contextlib.suppress(OSError, ValueError):
        print(code, file=sys.stderr)
    return 1


def _join_threads() -> None:
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()


def _flush(stream: object) -> bool:
    flush = getattr(stream, "flush", None)
    if flush is None:
        return True
    try:
        flush()
    except (OSError, ValueError):
        return False
    return True


def run_and_end(command: Callable[[], object]) -> NoReturn:
    """Run ``command`` (the typer app), then end the process with its status as above."""
    try:
        command()
        status = 0
    except SystemExit as stop:
        status = exit_status(stop.code)
    _join_threads()
    atexit._run_exitfuncs()
    if not _flush(sys.stdout) and status == 0:
        status = FLUSH_FAILED
    _flush(sys.stderr)
    os._exit(status)
