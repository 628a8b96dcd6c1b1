"""The ``metrocloud`` command line (typer + rich).

``_common`` holds the app, the consoles and the shared options; each module beside it adds
its commands to the app when imported here.
"""

from __future__ import annotations

from metrocloud.cli import (
    _main,  # noqa: F401  (registers the node's commands)
    compliance,  # noqa: F401  (compliance report)
    evidence,  # noqa: F401  (evidence export, verify, timeline)
    exchange,  # noqa: F401  (exchange keygen, send, list, fetch, ack, receipts)
    grid,  # noqa: F401  (grid init-anchor, admit, identity, join, peers, status, sync)
    lake,  # noqa: F401  (lake stats, compact, retain, vacuum)
    monitoring,  # noqa: F401  (monitor, maintenance)
    surveillance,  # noqa: F401  (surveillance risk, plan, decide, notify, notices)
    verification,  # noqa: F401  (verification run)
)
from metrocloud.cli._common import app, err, out
from metrocloud.cli._exit import run_and_end

__all__ = ["app", "err", "main", "out"]


def main() -> None:
    """The ``metrocloud`` entry point: run the command, then end the process without the
    native teardown that can abort after the answer (``_exit``)."""
    run_and_end(lambda: app(prog_name="metrocloud"))
