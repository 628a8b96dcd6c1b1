"""Signed batches over MQTT: the node's subscriber (paho-mqtt 2.x, MQTT 5).

Topic scheme (``<root>`` is ``metrocloud/v1/<CC>``, ``<CC>`` the node's member state; a
broker URL with a path, ``mqtt://HOST:PORT/PREFIX``, puts every topic under ``PREFIX/``)::

    <root>/batches/<instrument_id>    devices publish, QoS 1: one or more wire lines
                                      ("metrocloud signed batch v1"), newline-separated
    <root>/outcomes/<instrument_id>   the node publishes, QoS 1: one JSON outcome per line,
                                      in line order: {"status": "accepted" | "duplicate" |
                                      "rejected", "reason"?, "detail"?, "instrument"?,
                                      "counter"?, "readings", "flags"?}

The node subscribes ``<root>/batches/+`` with QoS 1. The topic only routes: it decides
nothing. Every line goes through the intake's checks on its own (a batch is proven by its
device's signature, not by where it was published), and every message is submitted, an
unparseable payload included (quarantined as ``malformed``): nothing is dropped silently.
The outcomes go to the ``outcomes`` topic of the instrument named by the message's topic.

Durability ("acknowledged means durable"):

* the client acknowledges by hand (``manual_ack``): a message's PUBACK is sent only after
  the submission holding its lines returned, i.e. after the intake committed them, and
  after the broker took every outcome published for it (their own PUBACKs: paho holds QoS 1
  publishes back while its in-flight window is full, and an acknowledgement sent ahead of
  them would leave a node killed meanwhile with a stored batch whose answer nobody ever
  gets; acknowledged later, the batch is redelivered and answered ``duplicate``);
* the session is persistent: a fixed client id per node, ``clean_start=False`` and a
  session expiry interval, so the broker keeps the subscription and queues QoS 1 messages
  while the node is down, and redelivers those it sent but never saw acknowledged; a
  redelivered batch the node had already stored is answered ``duplicate``;
* after a reconnect, messages received on the earlier connection are still submitted but
  not acknowledged (their packet ids belong to that connection): the broker redelivers
  them and the redelivery is acknowledged.

A worker thread collects messages into submissions (up to ``max_lines`` lines or
``max_wait_s`` after the first message), so a burst is decided and committed in few
transactions. paho's network thread reconnects with exponential backoff. :meth:`stop`
stops taking messages, finishes the ones already received, and disconnects (the session
stays: what is published meanwhile waits at the broker).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from metrocloud.domain.errors import InvalidInput
from metrocloud.ingest.intake import Outcome

__all__ = [
    "DEFAULT_PORT",
    "TOPIC_ROOT",
    "TRANSPORT",
    "BrokerUrl",
    "MqttIntake",
    "MqttStats",
    "Topics",
    "outcome_payload",
    "parse_broker_url",
    "split_lines",
    "stop_loop",
]

log = logging.getLogger(__name__)


def stop_loop(client: mqtt.Client) -> None:
    """Stop ``client``'s network thread (``loop_start``) and wait for it.

    After a ``disconnect`` the thread ends on its own and clears the client's reference to
    itself (paho-mqtt 2.x, ``_thread_main``), which can happen between ``loop_stop``'s check
    of that reference and its ``join``: an ``AttributeError`` on ``None``. A thread that is
    already gone is a stopped loop, which is what was asked for."""
    with suppress(AttributeError):
        client.loop_stop()


#: the versioned root of the topic scheme (below an optional prefix)
TOPIC_ROOT = "metrocloud/v1"
#: the ``transport`` the intake records for batches that came over MQTT
TRANSPORT = "mqtt"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
_COUNTRY = re.compile(r"[A-Z]{2}")
_LEVEL_FORBIDDEN = re.compile(r"[/+#\x00]")
_URL_HELP = "expected mqtt://HOST[:PORT][/TOPIC-PREFIX] (or mqtts:// for TLS)"


# -- where: the broker and the topics ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL: ``mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC-PREFIX]``."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: topics live under this prefix ("" for none), e.g. to share a broker between deployments
    prefix: str = ""

    def __str__(self) -> str:  # never shows the password
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
        path = f"/{self.prefix}" if self.prefix else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}{path}"

    def topics(self, country: str) -> Topics:
        return Topics.of(country, prefix=self.prefix)

    def configure(self, client: mqtt.Client) -> None:
        """Credentials and TLS (system trust store) on a paho client."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse and check a broker URL; :class:`InvalidInput` says what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"MQTT broker URL is empty; {_URL_HELP}")
    text = url.strip()
    if "://" not in text:
        raise InvalidInput(f"MQTT broker URL {text!r} has no scheme; {_URL_HELP}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidInput(
            f"MQTT broker URL {_redact(text)!r} has scheme {parts.scheme!r}; {_URL_HELP}"
        )
    if parts.query or parts.fragment:
        raise InvalidInput(
            f"MQTT broker URL {_redact(text)!r} has a query or fragment; {_URL_HELP}"
        )
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(
            f"MQTT broker URL {_redact(text)!r} has an invalid port (1-65535); {_URL_HELP}"
        ) from None
    host = parts.hostname
    if not host:
        raise InvalidInput(f"MQTT broker URL {_redact(text)!r} names no host; {_URL_HELP}")
    tls = _SCHEMES[scheme]
    if port == 0:
        raise InvalidInput(f"MQTT broker URL {_redact(text)!r} has port 0; {_URL_HELP}")
    prefix = parts.path.strip("/")
    if prefix and (any(not level for level in prefix.split("/")) or re.search(r"[+#\x00]", prefix)):
        raise InvalidInput(
            f"MQTT broker URL {_redact(text)!r}: topic prefix {prefix!r} must be topic levels "
            "without '+', '#' or empty levels"
        )
    return BrokerUrl(
        host=host,
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=prefix,
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one member state's node (see the module docstring)."""

    #: ``[PREFIX/]metrocloud/v1/<CC>``
    base: str

    @classmethod
    def of(cls, country: str, *, prefix: str = "") -> Topics:
        if not isinstance(country, str) or _COUNTRY.fullmatch(country) is None:
            raise InvalidInput(f"country must be two capital letters (ISO 3166-1), got {country!r}")
        root = f"{TOPIC_ROOT}/{country}"
        return cls(f"{prefix.strip('/')}/{root}" if prefix.strip("/") else root)

    def batches(self, instrument: str) -> str:
        """Where the device of ``instrument`` publishes its batches."""
        return f"{self.base}/batches/{_level(instrument)}"

    def outcomes(self, instrument: str) -> str:
        """Where the node answers the batches published for ``instrument``."""
        return f"{self.base}/outcomes/{_level(instrument)}"

    @property
    def subscription(self) -> str:
        """The node's subscription: every instrument's batches."""
        return f"{self.base}/batches/+"

    @property
    def all_outcomes(self) -> str:
        """Every instrument's outcomes (a head-end system or a test listens here)."""
        return f"{self.base}/outcomes/+"

    def instrument_of(self, topic: str) -> str | None:
        """The ``<instrument_id>`` level of a batches topic; None for any other topic."""
        head = f"{self.base}/batches/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        return rest if rest and "/" not in rest else None


def _level(instrument: str) -> str:
    if not isinstance(instrument, str) or not instrument or _LEVEL_FORBIDDEN.search(instrument):
        raise InvalidInput(
            f"instrument id {instrument!r} cannot be a topic level (empty, or holds / + # NUL)"
        )
    return instrument


def split_lines(payload: bytes) -> list[bytes]:
    """The wire lines of a message: its non-blank lines, or the payload itself when it has
    none (an empty message is still submitted, and quarantined as malformed)."""
    lines = [line for line in payload.split(b"\n") if line.strip()]
    return lines or [payload]


def outcome_payload(outcome: Outcome) -> bytes:
    """The JSON an outcome is published as (the same object as the HTTP API's)."""
    return json.dumps(outcome.as_dict(), separators=(",", ":")).encode()


# -- the subscriber ----------------------------------------------------------------------------


@dataclass
class MqttStats:
    """Counts since :meth:`MqttIntake.start` (for tests and logs)."""

    connections: int = 0
    received: int = 0
    lines: int = 0
    submissions: int = 0
    acknowledged: int = 0
    #: messages submitted but left unacknowledged: received on an earlier connection (the
    #: broker redelivers them) or at stop
    unacknowledged: int = 0
    outcomes_published: int = 0


@dataclass(frozen=True, slots=True)
class _Received:
    generation: int
    mid: int
    qos: int
    topic: str
    lines: list[bytes]


@dataclass(slots=True)
class _Answering:
    """A message whose outcomes are on their way to the broker; acknowledged when none is
    left (``remaining``: outcome publishes the broker has not acknowledged yet)."""

    message: _Received
    remaining: int = 0
    registered: bool = False


Submit = Callable[[Sequence[bytes]], list[Outcome]]


class MqttIntake:
    """Subscribes the node to its devices' batch topics and feeds ``submit``.

    ``submit(lines)`` must return one outcome per line once they are durable (e.g.
    ``lambda lines: intake.submit(lines, "mqtt")``). ``client_id`` must be fixed per node
    (it names the persistent session) and used by one process at a time.
    """

    def __init__(
        self,
        broker: BrokerUrl | str,
        *,
        country: str,
        submit: Submit,
        client_id: str,
        max_lines: int = 1000,
        max_wait_s: float = 0.02,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        reconnect_max_s: int = 30,
    ) -> None:
        self.broker = parse_broker_url(broker) if isinstance(broker, str) else broker
        self.topics = self.broker.topics(country)
        if not client_id or len(client_id) > 128:
            raise InvalidInput(f"MQTT client id must be 1-128 characters, got {client_id!r}")
        if max_lines < 1:
            raise InvalidInput(f"max_lines must be at least 1, got {max_lines}")
        self.client_id = client_id
        self.max_lines = max_lines
        self.max_wait_s = max_wait_s
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.stats = MqttStats()
        self._submit = submit
        self._queue: queue.Queue[_Received] = queue.Queue()
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._subscribed = threading.Event()
        self._stopping = threading.Event()  # take no more messages
        self._abort = threading.Event()  # give up retrying a submission
        self._worker: threading.Thread | None = None
        self._unreachable = False  # warned about it (once per outage)
        #: outcome publish mid -> the message it answers (until the broker acknowledged it)
        self._answering: dict[int, _Answering] = {}
        #: outcome mids the broker acknowledged before they were registered here
        self._published_early: set[int] = set()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.broker.configure(client)
        client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max_s)
        client.max_queued_messages_set(100_000)  # outcomes waiting for a connection
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and subscribe."""
        if self._worker is not None:
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        # let the broker send a whole submission's worth before it waits for our PUBACKs
        props.ReceiveMaximum = max(20, min(self.max_lines, 65535))
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._worker = threading.Thread(target=self._work, name="mqtt-intake", daemon=True)
        self._worker.start()
        self._client.loop_start()
        log.info(
            "MQTT intake: subscribing %s at %s as %s",
            self.topics.subscription,
            self.broker,
            self.client_id,
        )

    def wait_subscribed(self, timeout: float) -> bool:
        """True once connected and subscribed (False after ``timeout`` seconds)."""
        return self._subscribed.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether the client holds a connection to the broker now."""
        with self._lock:
            return self._connected

    @property
    def backlog(self) -> int:
        """Messages received and not yet handed to the intake."""
        return self._queue.qsize()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        """Take no more messages; finish those received (at most ``timeout`` seconds), then
        disconnect. Messages left unacknowledged are redelivered in the next session."""
        self._stopping.set()
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():  # a submission keeps failing: leave it to the next session
                self._abort.set()
                worker.join()
        if self._client.is_connected():
            # flush queued outcomes (QoS 1) as far as the broker takes them right now
            self._client.disconnect()
        stop_loop(self._client)
        self._worker = None

    # -- paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.broker, reason)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
            self.stats.connections += 1
        self._unreachable = False
        log.info(
            "MQTT intake connected to %s (session %s)",
            self.broker,
            "resumed" if flags.session_present else "new",
        )
        # re-subscribing an existing subscription is harmless; a new session needs it
        client.subscribe(self.topics.subscription, options=SubscribeOptions(qos=1))

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        if not self._unreachable and not self._stopping.is_set():
            self._unreachable = True
            log.warning("MQTT broker %s unreachable; retrying with backoff", self.broker)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any = None
    ) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error(
                "MQTT broker %s refused the subscription %s: %s",
                self.broker,
                self.topics.subscription,
                failed[0],
            )
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any = None
    ) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("MQTT intake lost %s (%s); reconnecting", self.broker, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker redelivers it in the next session
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker lets no such topic through; never crash on it
            topic = bytes(message._topic).decode("utf-8", "replace")
        payload = bytes(message.payload)
        with self._lock:
            generation = self._generation
            self.stats.received += 1
        self._queue.put(
            _Received(generation, message.mid, message.qos, topic, split_lines(payload))
        )

    # -- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            group = self._collect()
            if group is None:
                return
            if group:
                try:
                    self._handle(group)
                except Exception:  # never let the worker die; the messages stay unacked
                    log.exception("MQTT intake: handling %d message(s) failed", len(group))

    def _collect(self) -> list[_Received] | None:
        """The next submission's messages; [] when idle, None when stopped and drained."""
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return None if self._stopping.is_set() else []
        group, lines = [first], len(first.lines)
        deadline = time.monotonic() + self.max_wait_s
        while lines < self.max_lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                more = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            group.append(more)
            lines += len(more.lines)
        return group

    def _handle(self, group: list[_Received]) -> None:
        lines = [line for m in group for line in m.lines]
        outcomes: list[Outcome] = []
        for start in range(0, len(lines), self.max_lines):
            done = self._submit_until_durable(lines[start : start + self.max_lines])
            if done is None:  # stopping while the intake fails: nothing is acknowledged
                with self._lock:
                    self.stats.unacknowledged += len(group)
                return
            outcomes += done
        with self._lock:
            self.stats.submissions += 1
            self.stats.lines += len(lines)
        at = 0
        for m in group:
            mine = outcomes[at : at + len(m.lines)]
            at += len(m.lines)
            self._answer(m, mine)

    def _submit_until_durable(self, lines: list[bytes]) -> list[Outcome] | None:
        """``submit(lines)``, retried with backoff while it fails (the database may be
        briefly unavailable); None if told to give up."""
        delay = 0.1
        while True:
            try:
                outcomes = list(self._submit(lines))
                if len(outcomes) != len(lines):
                    raise RuntimeError(
                        f"intake answered {len(outcomes)} outcomes for {len(lines)} lines"
                    )
                return outcomes
            except Exception:
                log.exception("MQTT intake: submitting %d line(s) failed; retrying", len(lines))
                if self._abort.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)

    def _answer(self, m: _Received, outcomes: list[Outcome]) -> None:
        """Publish ``m``'s outcomes; ``m`` is acknowledged once the broker took them all."""
        instrument = self.topics.instrument_of(m.topic)
        if instrument is None:
            log.warning(
                "MQTT intake: a message on %r (not %s) was submitted; no outcome topic to "
                "answer on",
                m.topic,
                self.topics.subscription,
            )
            self._ack(m)
            return
        topic = self.topics.outcomes(instrument)
        answering = _Answering(m)
        mids: list[int] = []
        for outcome in outcomes:
            info = self._client.publish(topic, outcome_payload(outcome), qos=1)
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                mids.append(info.mid)
                with self._lock:
                    self.stats.outcomes_published += 1
            else:  # no answer will come for it: the batch is durable, acknowledge it anyway
                log.warning("MQTT intake: outcome for %s not published (%s)", topic, info.rc)
        with self._lock:
            for mid in mids:
                if mid in self._published_early:
                    self._published_early.discard(mid)
                else:
                    self._answering[mid] = answering
                    answering.remaining += 1
            answering.registered = True
            done = answering.remaining == 0
        if done:
            self._ack(m)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any = None) -> None:
        """The broker took an outcome: acknowledge its message if it was the last one."""
        with self._lock:
            answering = self._answering.pop(mid, None)
            if answering is None:  # acknowledged before _answer registered it
                self._published_early.add(mid)
                return
            answering.remaining -= 1
            done = answering.registered and answering.remaining == 0
        if done:
            self._ack(answering.message)

    def _ack(self, m: _Received) -> None:
        if m.qos == 0:
            return
        # paho runs on_connect / on_disconnect holding its (reentrant) callback mutex: holding
        # it here keeps a reconnect from slipping between the check and the PUBACK, so a
        # packet id is only ever acknowledged on the connection that delivered it
        with self._client._callback_mutex, self._lock:
            current = m.generation == self._generation and self._connected
            if current:
                self._client.ack(m.mid, m.qos)
                self.stats.acknowledged += 1
            else:
                self.stats.unacknowledged += 1
