"""The MQTT broker for tests (Mosquitto): mandatory when CI=true, else skipped with the reason.

Every test uses its own topic prefix (the broker URL's path, ``mqtt://HOST:PORT/PREFIX``)
and its own client ids, so tests running in parallel on one broker never see each other's
messages; :func:`purge_session` removes a persistent session a test left at the broker.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from metrocloud.ingest.mqtt import BrokerUrl, parse_broker_url, stop_loop

MQTT_URL = os.environ.get("METROCLOUD_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def broker() -> BrokerUrl:
    return parse_broker_url(MQTT_URL)


@cache
def mqtt_unreachable() -> str | None:
    """None if the broker accepts an MQTT 5 connection, else why not."""
    try:
        b = broker()
    except Exception as exc:
        return f"METROCLOUD_TEST_MQTT_URL is invalid: {exc}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    b.configure(client)
    try:
        client.connect(b.host, b.port, keepalive=10)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    answered = threading.Event()
    client.on_connect = lambda *_a: answered.set()
    client.loop_start()
    try:
        if not answered.wait(5):
            return "no CONNACK within 5 s"
    finally:
        client.disconnect()
        stop_loop(client)
    return None


def require_mqtt() -> None:
    reason = mqtt_unreachable()
    if reason is None:
        return
    message = f"MQTT broker at {MQTT_URL} is unreachable ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; MQTT tests are mandatory when CI=true")
    pytest.skip(f"{message}; skipped outside CI only (CI != 'true')")


def unique_url(base: str | None = None) -> str:
    """The test broker's URL with a fresh topic prefix (``.../test-<uuid>``)."""
    b = broker() if base is None else parse_broker_url(base)
    prefix = "/".join(p for p in (b.prefix, f"test-{uuid.uuid4().hex[:12]}") if p)
    return str(BrokerUrl(b.host, b.port, b.tls, b.username, b.password, prefix))


def client(client_id: str = "", *, url: str | None = None) -> mqtt.Client:
    """A connected MQTT 5 client with its network loop running (clean session)."""
    b = parse_broker_url(url or MQTT_URL)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    b.configure(c)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect(b.host, b.port, keepalive=30, clean_start=True)
    c.loop_start()
    assert connected.wait(10), f"no CONNACK from {b}"
    return c


def purge_session(client_id: str, url: str | None = None) -> None:
    """End the persistent session ``client_id`` holds at the broker (tests clean up)."""
    b = parse_broker_url(url or MQTT_URL)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    b.configure(c)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        c.connect(b.host, b.port, keepalive=10, clean_start=True, properties=props)
        c.loop_start()
        c.disconnect()
        stop_loop(c)
    except OSError:
        pass


class Listener:
    """Collects the messages of a topic filter (QoS 1) from a background client."""

    def __init__(self, topic: str, *, url: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = client(f"listener-{uuid.uuid4().hex[:12]}", url=url)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        # a clean session forgets its subscription: subscribe again after any reconnect
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, options=SubscribeOptions(qos=1))
        self.client.subscribe(topic, options=SubscribeOptions(qos=1))
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def json(self) -> list[tuple[str, dict[str, Any]]]:
        with self._cond:
            return [(t, json.loads(p)) for t, p in self.messages]

    def wait_for(self, done: Callable[[list[tuple[str, bytes]]], bool], timeout: float) -> bool:
        """Wait until ``done(messages)`` holds; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: done(self.messages), timeout)

    def wait_count(self, n: int, timeout: float = 30) -> list[tuple[str, dict[str, Any]]]:
        assert self.wait_for(lambda ms: len(ms) >= n, timeout), (
            f"{len(self.messages)} of {n} messages arrived: {self.messages[-5:]}"
        )
        return self.json()

    def close(self) -> None:
        self.client.disconnect()
        stop_loop(self.client)


def publish(c: mqtt.Client, topic: str, payload: bytes, *, timeout: float = 30) -> None:
    """Publish with QoS 1 and wait for the broker's PUBACK."""
    info = c.publish(topic, payload, qos=1)
    info.wait_for_publish(timeout)
    assert info.is_published(), f"broker did not acknowledge {topic}"


class TcpProxy:
    """A loopback TCP forwarder to the broker whose connections a test can cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        #: every byte the clients sent to the broker through the proxy, in order
        self.sent = bytearray()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            with self._lock:
                self._conns += [down, up]
            for a, b, record in ((down, up, self.sent), (up, down, None)):
                threading.Thread(target=self._pipe, args=(a, b, record), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    with self._lock:
                        record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection through the proxy (the clients see a network failure)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()


@contextmanager
def proxy() -> Iterator[TcpProxy]:
    b = broker()
    p = TcpProxy((b.host, b.port))
    try:
        yield p
    finally:
        p.close()


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds, with
    ``explain()`` (what is still missing, say) in the message."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(0.05)
