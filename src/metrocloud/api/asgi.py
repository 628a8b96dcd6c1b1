"""The processes of ``metrocloud serve --workers N``: the ASGI application factory for the
worker processes, and the node's lake writer in a process of its own.

Each process opens the node from the environment (``METROCLOUD_*``, see ``Settings``), which
the CLI sets from its options before starting them. Writers in different processes queue on
the database (PostgreSQL row lock, SQLite ``BEGIN IMMEDIATE`` behind the node's write turns).

The lake writer (:class:`metrocloud.services.measurements.LakeService`: the flusher that moves
the intake log into Parquet, the streaming monitor, lake maintenance, and the MQTT
subscription, which goes with the lake's writer lock) runs in :func:`lake_writer_process`,
started before the workers, so that it takes the lake's writer lock first and the workers
are left to answer requests: the flusher's decoding and the monitor no longer take the
interpreter lock of a process that serves the intake. Every worker still runs a lake service
that waits for the lock: if the lake writer's process ends, a worker takes the lock over
within seconds (nothing is lost meanwhile; accepted batches wait in the intake log). The
lake writer ends with the server: when asked to (SIGTERM, SIGINT) after its current
segment, and on its own when the process that started it is gone.
"""

from __future__ import annotations

import logging
import logging.config
import os
import signal
import threading
from multiprocessing.synchronize import Event
from typing import Any

from fastapi import FastAPI

from metrocloud.api.app import create_app
from metrocloud.services import measurements
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings

__all__ = ["app_from_environment", "lake_writer_process"]

log = logging.getLogger(__name__)
#: how often the lake writer checks that the server that started it is still there
_PARENT_POLL_S = 0.5
#: how long the lake writer waits for the lake's writer lock before it says it is ready
_LOCK_WAIT_S = 20.0


def app_from_environment() -> FastAPI:
    return create_app(Node.open(Settings(), create=False), background=True)


def lake_writer_process(
    ready: Event | None, parent_pid: int, log_config: dict[str, Any] | None = None
) -> None:
    """The node's lake writer (and MQTT subscriber) in this process, until SIGTERM or SIGINT,
    or until ``parent_pid`` is no longer this process's parent; ``ready`` is set once it holds
    the lake's writer lock (or after :data:`_LOCK_WAIT_S` without it: a worker has it)."""
    if log_config is not None:
        logging.config.dictConfig(log_config)
    stop = threading.Event()

    def _ask_to_stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _ask_to_stop)
    signal.signal(signal.SIGINT, _ask_to_stop)
    node = Node.open(Settings(), create=False)
    try:
        lake = measurements.start_lake(node)
        if node.settings.mqtt:
            measurements.start_mqtt(node, node.settings.mqtt)
        waited = 0.0
        while lake.flusher is None and waited < _LOCK_WAIT_S and not stop.is_set():
            stop.wait(0.05)
            waited += 0.05
        if lake.flusher is not None:
            log.info("lake writer: in its own process (pid %d)", os.getpid())
        if ready is not None:
            ready.set()
        while not stop.wait(_PARENT_POLL_S):
            if os.getppid() != parent_pid:  # the server is gone (killed): so is its writer
                log.warning("lake writer: the server process %d is gone; stopping", parent_pid)
                break
    finally:
        measurements.stop_mqtt(node)
        measurements.stop_lake(node)
        node.close()
