"""Stopping an MQTT client's network thread after a disconnect never fails.

paho-mqtt's thread clears its own reference when it ends after a ``disconnect``; a
``loop_stop`` between its check of that reference and its ``join`` raised
``AttributeError: 'NoneType' object has no attribute 'join'`` (seen in CI, in
``metrocloud device run --mqtt`` as it closed). :func:`metrocloud.ingest.mqtt.stop_loop`
treats a thread already gone as stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from metrocloud.ingest.mqtt import stop_loop
from tests._mqtt import broker, require_mqtt


class _Racing(mqtt.Client):
    """A client whose network thread ends and clears itself right after ``loop_stop``
    checked it (what paho's own thread does after a disconnect, at the worst moment)."""

    reads: Iterator[threading.Thread] = iter(())

    @property  # type: ignore[override]
    def _thread(self) -> threading.Thread | None:
        return next(self.reads, None)

    @_thread.setter
    def _thread(self, _value: threading.Thread | None) -> None:
        """paho's own assignments are ignored: ``reads`` decides what loop_stop sees."""


def test_a_thread_that_ended_between_the_check_and_the_join_is_a_stopped_loop() -> None:
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    client = _Racing(CallbackAPIVersion.VERSION2)
    client.reads = iter([ended])  # the check sees the thread, the join sees None
    with pytest.raises(AttributeError):  # paho's race, reproduced
        client.loop_stop()
    client.reads = iter([ended])
    stop_loop(client)  # no AttributeError


def test_disconnect_then_stop_on_the_broker_many_times() -> None:
    require_mqtt()
    b = broker()
    for _ in range(20):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        b.configure(client)
        connected = threading.Event()
        client.on_connect = lambda *_a, done=connected: done.set()
        client.connect(b.host, b.port, keepalive=10)
        client.loop_start()
        assert connected.wait(10)
        client.disconnect()
        stop_loop(client)
        assert not client.is_connected()
