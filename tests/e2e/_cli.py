"""Running the real ``metrocloud`` command line as a subprocess, for the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

__all__ = ["cli_command", "cli_env", "free_port", "run_cli", "wait_healthy"]

#: variables that would make a child process open another node than the one under test
_NODE_SELECTORS = (
    "METROCLOUD_DB",
    "METROCLOUD_DB_SCHEMA",
    "METROCLOUD_DATA_DIR",
    "METROCLOUD_COUNTRY",
    "METROCLOUD_HOST",
    "METROCLOUD_PORT",
)


def cli_env(schema: str | None = None) -> dict[str, str]:
    """The environment of a child ``metrocloud``: ours, minus node selectors, plus ``schema``."""
    env = {k: v for k, v in os.environ.items() if k not in _NODE_SELECTORS}
    env["COLUMNS"] = "240"  # rich wraps nothing we assert on
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if schema:
        env["METROCLOUD_DB_SCHEMA"] = schema
    return env


def cli_command(*args: str, data_dir: Path, db: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "metrocloud.cli", *args, "--data-dir", str(data_dir)]
    if db:
        cmd += ["--db", db]
    return cmd


def run_cli(
    *args: str,
    data_dir: Path,
    db: str | None = None,
    schema: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run ``metrocloud ARGS --data-dir D [--db URL]`` to completion; output captured."""
    return subprocess.run(
        cli_command(*args, data_dir=data_dir, db=db),
        env=cli_env(schema),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> bool:
    """Poll ``/api/v1/health``: True once it answers, False if the process exited (a port
    clash); fails the test after 60 s with the tail of the server's log."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            answer = httpx.get(f"{base_url}/api/v1/health", timeout=2, trust_env=False)
            if answer.status_code == 200:
                return True
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(
        f"metrocloud serve did not answer {base_url}/api/v1/health within 60 s:\n"
        f"{log.read_text(errors='replace')[-4000:]}"
    )
