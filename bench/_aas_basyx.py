"""The baseline: the Eclipse BaSyx Python SDK's HTTP server in the benchmark's own venv.

``ensure_venv`` creates ``bench/.venv-basyx`` (gitignored) with ``python3 -m venv`` and
installs the pinned baseline into it if it is missing; ``BasyxServer`` runs
``_aas_basyx_server.py`` with that venv's interpreter on loopback.

BaSyx 1.2.1 serves the AAS Part 2 API at ``/api/v3.0``. Its paging is an offset: ``cursor``
is the 1-based index of the first item of a page, and the ``paging_metadata.cursor`` it
answers is ``cursor - 1 + limit``, one short of the next page's first item (a client that
follows it sees the last item of every page twice), so the listing pass computes its cursors
itself: ``1, 1 + limit, 1 + 2 * limit, ...`` until a short page. Every listing request
iterates the object store (shells and submodels) from its start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO

from _aas_node import free_port, wait_http

__all__ = ["BASYX_PREFIX", "BASYX_REQUIREMENTS", "BasyxServer", "ensure_venv"]

BASYX_PREFIX = "/api/v3.0"
#: 1.2.1 is the last PyPI release that ships ``basyx.aas.adapter.http.WSGIApp``
BASYX_REQUIREMENTS = ("basyx-python-sdk==1.2.1", "waitress==3.0.2")
_HERE = Path(__file__).resolve().parent
_RUNNER = _HERE / "_aas_basyx_server.py"


def _log(msg: str) -> None:
    print(f"[aas bench] {msg}", file=sys.stderr, flush=True)


def ensure_venv(venv: Path) -> Path:
    """The interpreter of ``venv``, created with the pinned baseline if it is missing."""
    python = venv / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import importlib.metadata as m, basyx.aas.adapter.http, waitress; "
        "assert m.version('basyx-python-sdk') == '1.2.1'",
    ]
    if python.exists() and subprocess.run(check, check=False, capture_output=True).returncode == 0:
        return python
    _log(f"creating {venv} with {', '.join(BASYX_REQUIREMENTS)}")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *BASYX_REQUIREMENTS],
        check=True,
        stdout=sys.stderr,
    )
    subprocess.run(check, check=True)
    return python


class BasyxServer:
    """``WSGIApp`` over a ``DictObjectStore`` loaded from one JSON environment, under waitress."""

    def __init__(self, python: Path, env_file: Path, log_file: Path, threads: int = 4) -> None:
        self.python = python
        self.env_file = env_file
        self.log_file = log_file
        self.threads = threads
        self.port = 0
        self.loaded: dict[str, float] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> dict[str, float]:
        """Start, wait until the environment is loaded and the server answers; its counts."""
        self.port = free_port()
        self._log = self.log_file.open("w")
        self._proc = subprocess.Popen(
            [str(self.python), str(_RUNNER), str(self.env_file), str(self.port), str(self.threads)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # blocks while the environment loads
        if not line:
            self._proc.wait()
            raise RuntimeError(
                f"BaSyx server exited with {self._proc.returncode} while loading "
                f"{self.env_file}: {self.log_file.read_text()[-2000:]}"
            )
        self.loaded = json.loads(line)
        wait_http(f"{self.url}{BASYX_PREFIX}/shells?limit=1", self._proc, "BaSyx server", 60)
        return self.loaded

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
