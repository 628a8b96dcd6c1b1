"""How a ``metrocloud`` process ends (cli/_exit.py): the command's status and every byte of
its output survive, atexit hooks and non-daemon threads still run, and the native teardown
that aborted ``evidence verify`` after its verdict (apache/arrow#34314) is never reached.

Each case runs in a fresh interpreter, because the subject is the end of a process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = textwrap.dedent(
    """
    import atexit, os, sys, threading, time
    from metrocloud.cli._exit import run_and_end
    """
)
# block-buffered stdout, as for any caller that does not ask for unbuffered output
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _run(body: str, *, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        env=ENV,
    )


@pytest.mark.parametrize(
    ("ending", "status", "stderr"),
    [
        ("return None", 0, ""),
        ("sys.exit()", 0, ""),
        ("sys.exit(0)", 0, ""),
        ("sys.exit(1)", 1, ""),
        ("sys.exit(2)", 2, ""),
        ("sys.exit('cannot read bundle.zip')", 1, "cannot read bundle.zip\n"),
    ],
)
def test_the_commands_status_is_the_process_status(ending: str, status: int, stderr: str) -> None:
    done = _run(
        f"""
        def command():
            print("answer")
            {ending}
        run_and_end(command)
        """
    )
    assert (done.returncode, done.stdout, done.stderr) == (status, "answer\n", stderr)


def test_typer_exit_codes_pass_through() -> None:
    done = _run(
        """
        import typer
        app = typer.Typer()
        @app.command()
        def verify(ok: bool = False) -> None:
            print("checked")
            raise typer.Exit(0 if ok else 1)
        run_and_end(lambda: app(["--ok"]))
        """
    )
    assert (done.returncode, done.stdout) == (0, "checked\n")
    refused = _run(
        """
        import typer
        app = typer.Typer()
        @app.command()
        def verify(path: str) -> None:
            print(path)
        run_and_end(lambda: app([]))
        """
    )
    assert refused.returncode == 2 and "Missing argument" in refused.stderr


def test_buffered_output_to_a_pipe_is_complete() -> None:
    # 4 MiB through block-buffered stdout, never flushed by the command itself
    done = _run(
        """
        def command():
            for i in range(65536):
                sys.stdout.write(f"{i:063d}\\n")
        run_and_end(command)
        """
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 65536
    assert lines[-1] == f"{65535:063d}" and lines[0] == "0" * 63


def test_atexit_hooks_and_non_daemon_threads_run_before_the_end(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    done = _run(
        f"""
        marks = open({str(marks)!r}, "a")
        def late_writer():
            time.sleep(0.3)
            marks.write("thread\\n"); marks.flush()
        def command():
            atexit.register(lambda: (marks.write("atexit\\n"), marks.flush()))
            threading.Thread(target=late_writer).start()
        run_and_end(command)
        """
    )
    assert done.returncode == 0, done.stderr
    # CPython's order: threads joined first, then the hooks
    assert marks.read_text() == "thread\natexit\n"


def _with_reader_gone(body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` with its stdout a pipe whose reader has left (``| head -0``)."""
    child = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert child.stdout is not None
    child.stdout.close()
    _, stderr = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, "", stderr)


def test_output_that_cannot_be_written_is_not_reported_as_success() -> None:
    done = _with_reader_gone(
        """
        def command():
            time.sleep(0.5)  # the reader is gone by now
            sys.stdout.write("VALID")  # buffered: fails only when flushed at the end
        run_and_end(command)
        """
    )
    assert done.returncode == 120, done.stderr


def test_a_failure_status_survives_a_failed_flush() -> None:
    done = _with_reader_gone(
        """
        def command():
            time.sleep(0.5)
            sys.stdout.write("NOT valid")
            sys.exit(1)
        run_and_end(command)
        """
    )
    assert done.returncode == 1, done.stderr


ABORT_AT_TEARDOWN = textwrap.dedent(
    """
    import ctypes
    libc = ctypes.CDLL(None)
    # what Arrow's thread pool does when it is destroyed with a worker alive: abort, from a
    # C++ static destructor (registered with __cxa_atexit, run after Python's finalization)
    libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)
    """
)


def test_native_teardown_is_not_reached() -> None:
    normal = _run(ABORT_AT_TEARDOWN + "print('VALID')\n")
    assert normal.stdout == "VALID\n" and normal.returncode == -6  # the failure, reproduced
    ended = _run(ABORT_AT_TEARDOWN + "run_and_end(lambda: print('VALID'))\n")
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, "VALID\n", "")


def test_the_entry_point_ends_without_native_teardown() -> None:
    done = _run(
        ABORT_AT_TEARDOWN
        + textwrap.dedent(
            """
            from metrocloud.cli import main
            sys.argv = ["metrocloud", "sampling", "plan", "--lot-size", "500", "--json"]
            main()
            """
        )
    )
    assert done.returncode == 0, done.stderr
    assert '"scheme": "mid-f"' in done.stdout and done.stderr == ""
