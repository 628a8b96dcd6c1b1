"""The MQTT subscriber against the real broker (Mosquitto) and a real intake."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import select

from metrocloud.domain.errors import InvalidInput
from metrocloud.ingest import Intake, IntakeLimits, Outcome
from metrocloud.ingest.mqtt import (
    BrokerUrl,
    MqttIntake,
    Topics,
    parse_broker_url,
    split_lines,
)
from metrocloud.services import instruments as inst
from metrocloud.store.schema import intake_batches, quarantine
from metrocloud.trust.keys import PrivateKey
from tests._mqtt import (
    Listener,
    client,
    proxy,
    publish,
    purge_session,
    require_mqtt,
    unique_url,
    wait_until,
)
from tests.conftest import World, software
from tests.ingest.test_intake import Meter

# -- the broker URL and the topic scheme (no broker needed) ------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerUrl("127.0.0.1", 1883)),
        ("mqtt://broker.example", BrokerUrl("broker.example", 1883)),
        ("mqtts://broker.example", BrokerUrl("broker.example", 8883, tls=True)),
        (
            "mqtt://node:s%40cret@10.0.0.1:1884/site/a",
            BrokerUrl("10.0.0.1", 1884, username="node", password="s@cret", prefix="site/a"),
        ),
        ("mqtt://[::1]:1883/", BrokerUrl("::1", 1883)),
    ],
)
def test_broker_urls_are_parsed(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("127.0.0.1:1883", "no scheme"),
        ("http://127.0.0.1:1883", "scheme 'http'"),
        ("mqtt://127.0.0.1:99999", "invalid port"),
        ("mqtt://127.0.0.1:0", "port 0"),
        ("mqtt://:1883", "names no host"),
        ("mqtt://h/a/+/b", "topic prefix"),
        ("mqtt://h/a//b", "topic prefix"),
        ("mqtt://h?x=1", "query"),
    ],
)
def test_a_bad_broker_url_is_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match="MQTT broker URL") as caught:
        parse_broker_url(url)
    assert says in str(caught.value)


def test_a_broker_url_prints_as_it_parses() -> None:
    for url in ("mqtt://h:1883", "mqtts://u@h:8883/a/b", "mqtt://[::1]:1883"):
        assert str(parse_broker_url(url)) == url
        assert parse_broker_url(str(parse_broker_url(url))) == parse_broker_url(url)


def test_a_password_is_never_shown() -> None:
    b = parse_broker_url("mqtt://node:topsecret@h:1883")
    assert "topsecret" not in str(b) and "topsecret" not in repr(b)
    with pytest.raises(InvalidInput) as caught:
        parse_broker_url("ftp://node:topsecret@h")
    assert "topsecret" not in str(caught.value)


def test_the_topic_scheme() -> None:
    t = Topics.of("DE", prefix="site")
    assert t.batches("ins-DE-1") == "site/metrocloud/v1/DE/batches/ins-DE-1"
    assert t.outcomes("ins-DE-1") == "site/metrocloud/v1/DE/outcomes/ins-DE-1"
    assert t.subscription == "site/metrocloud/v1/DE/batches/+"
    assert t.all_outcomes == "site/metrocloud/v1/DE/outcomes/+"
    assert t.instrument_of("site/metrocloud/v1/DE/batches/ins-DE-1") == "ins-DE-1"
    assert t.instrument_of("site/metrocloud/v1/DE/batches/") is None
    assert t.instrument_of("metrocloud/v1/DE/batches/ins-DE-1") is None
    assert Topics.of("FR").subscription == "metrocloud/v1/FR/batches/+"
    for bad in ("a/b", "+", "#", ""):
        with pytest.raises(InvalidInput, match="topic level"):
            t.batches(bad)
    with pytest.raises(InvalidInput, match="country"):
        Topics.of("de")


def test_a_message_is_split_into_its_lines_and_never_into_nothing() -> None:
    assert split_lines(b"a\nb\r\n\n  \nc") == [b"a", b"b\r", b"c"]
    assert split_lines(b"") == [b""]
    assert split_lines(b"\n \n") == [b"\n \n"]


# -- the subscriber against the broker ----------------------------------------------------------


class Fixture:
    def __init__(self, world: World) -> None:
        require_mqtt()
        self.world = world
        self.url = unique_url()
        self.topics = parse_broker_url(self.url).topics("DE")
        self.client_id = f"test-node-{uuid.uuid4().hex[:12]}"
        self.intake = Intake(world.node.db, limits=IntakeLimits(cache_seconds=0))
        self.subscribers: list[MqttIntake] = []
        self.closers: list[Callable[[], None]] = []
        cert = world.certificate(world.nb1, world.man1)
        key = PrivateKey.generate()
        refs, _ = inst.register_instruments(
            world.node,
            world.man1.actor,
            [
                inst.InstrumentDraft(
                    serial="Q-1",
                    certificate_id=cert["id"],
                    device_keys=(key.public_key.to_spki_b64(),),
                )
            ],
        )
        self.meter = Meter(refs[0]["id"], key, software("1.0.0").checksum)
        self.device = client(url=self.url)
        self.closers.append(self.device.loop_stop)
        self.outcomes = Listener(self.topics.all_outcomes, url=self.url)
        self.closers.append(self.outcomes.close)

    def submit(self, lines: Sequence[bytes]) -> list[Outcome]:
        return self.intake.submit(lines, "mqtt")

    def subscriber(
        self, submit: Callable[[Sequence[bytes]], list[Outcome]] | None = None, **kw: Any
    ) -> MqttIntake:
        kw.setdefault("client_id", self.client_id)
        sub = MqttIntake(kw.pop("url", self.url), country="DE", submit=submit or self.submit, **kw)
        self.subscribers.append(sub)
        sub.start()
        assert sub.wait_subscribed(15), "the subscriber did not subscribe"
        return sub

    def publish(self, payload: bytes, instrument: str | None = None) -> None:
        publish(self.device, self.topics.batches(instrument or self.meter.instrument), payload)

    def stored(self) -> list[Any]:
        with self.world.node.db.read() as conn:
            return conn.execute(select(intake_batches).order_by(intake_batches.c.id)).all()

    def quarantined(self) -> list[Any]:
        with self.world.node.db.read() as conn:
            return conn.execute(select(quarantine).order_by(quarantine.c.id)).all()

    def close(self) -> None:
        for sub in self.subscribers:
            sub.stop(timeout=5)
        for close in self.closers:
            close()
        purge_session(self.client_id)


@pytest.fixture
def fx(world: World) -> Iterator[Fixture]:
    f = Fixture(world)
    try:
        yield f
    finally:
        f.close()


def test_published_batches_are_stored_and_answered_on_the_outcomes_topic(fx: Fixture) -> None:
    sub = fx.subscriber()
    b1, b2, b3 = fx.meter.batch(), fx.meter.batch(), fx.meter.batch()
    fx.publish(b1.wire())
    fx.publish(b2.wire() + b"\n" + b3.wire() + b"\n")  # two lines in one message
    fx.publish(b1.wire())  # an exact replay
    fx.publish(b"not a batch")  # unparseable: still submitted, quarantined
    fx.publish(b"")
    answers = fx.outcomes.wait_count(6)
    assert {t for t, _ in answers} == {fx.topics.outcomes(fx.meter.instrument)}
    assert [(o["status"], o.get("counter"), o.get("reason")) for _, o in answers] == [
        ("accepted", 1, None),
        ("accepted", 2, None),
        ("accepted", 3, None),
        ("duplicate", 1, None),
        ("rejected", None, "malformed"),
        ("rejected", None, "malformed"),
    ]
    assert answers[0][1] == {
        "status": "accepted",
        "instrument": fx.meter.instrument,
        "counter": 1,
        "readings": 4,
    }
    assert [(r.counter, r.digest, r.transport) for r in fx.stored()] == [
        (1, b1.digest, "mqtt"),
        (2, b2.digest, "mqtt"),
        (3, b3.digest, "mqtt"),
    ]
    assert [(q.reason, q.transport, bytes(q.wire)) for q in fx.quarantined()] == [
        ("malformed", "mqtt", b"not a batch"),
        ("malformed", "mqtt", b""),
    ]
    wait_until(lambda: sub.stats.acknowledged == 5, 10, "5 acknowledgements")
    assert (sub.stats.received, sub.stats.lines, sub.stats.unacknowledged) == (5, 6, 0)


def test_the_topic_only_routes_the_answer(fx: Fixture) -> None:
    """A batch is proven by its signature, not by its topic: under a foreign topic level it
    is decided on its own, and the answer goes where it was published."""
    fx.subscriber()
    batch = fx.meter.batch()
    fx.publish(batch.wire(), instrument="some-gateway")
    [(topic, outcome)] = fx.outcomes.wait_count(1)
    assert topic == fx.topics.outcomes("some-gateway")
    assert (outcome["status"], outcome["instrument"]) == ("accepted", fx.meter.instrument)


def test_a_message_is_acknowledged_only_after_its_submission_returned(fx: Fixture) -> None:
    """While the intake fails, nothing is acknowledged; the broker redelivers the message to
    the node's next session, which stores it (once)."""
    called = threading.Event()

    def failing(lines: Sequence[bytes]) -> list[Outcome]:
        called.set()
        raise RuntimeError("database unavailable")

    first = fx.subscriber(failing)
    batch = fx.meter.batch()
    fx.publish(batch.wire())
    assert called.wait(15)
    first.stop(timeout=0.5)  # gives up retrying: the message stays unacknowledged
    assert (first.stats.acknowledged, first.stats.unacknowledged) == (0, 1)
    assert fx.stored() == [] and fx.outcomes.json() == []

    second = fx.subscriber()
    [(_, outcome)] = fx.outcomes.wait_count(1)
    assert (outcome["status"], outcome["counter"]) == ("accepted", 1)
    assert [r.digest for r in fx.stored()] == [batch.digest]
    wait_until(lambda: second.stats.acknowledged == 1, 10, "the acknowledgement")


def test_messages_published_while_the_node_is_down_arrive_after_restart(fx: Fixture) -> None:
    fx.subscriber().stop()
    sent = [fx.meter.batch(), fx.meter.batch()]
    for b in sent:
        fx.publish(b.wire())  # the broker queues them in the node's session
    fx.subscriber()
    answers = fx.outcomes.wait_count(2)
    assert [o["status"] for _, o in answers] == ["accepted", "accepted"]
    assert [r.digest for r in fx.stored()] == [b.digest for b in sent]


def test_a_large_message_is_submitted_in_chunks_and_acknowledged_once(fx: Fixture) -> None:
    sizes: list[int] = []

    def recording(lines: Sequence[bytes]) -> list[Outcome]:
        sizes.append(len(lines))
        return fx.submit(lines)

    sub = fx.subscriber(recording, max_lines=3)
    batches = [fx.meter.batch() for _ in range(7)]
    fx.publish(b"\n".join(b.wire() for b in batches))
    answers = fx.outcomes.wait_count(7)
    assert [o["counter"] for _, o in answers] == list(range(1, 8))
    assert sum(sizes) == 7 and max(sizes) <= 3
    wait_until(lambda: sub.stats.acknowledged == 1, 10, "the acknowledgement")


def test_the_subscriber_reconnects_after_a_network_failure(fx: Fixture) -> None:
    with proxy() as p:
        b = parse_broker_url(fx.url)
        via = str(BrokerUrl("127.0.0.1", p.port, prefix=b.prefix))
        sub = fx.subscriber(url=via)
        fx.publish(fx.meter.batch().wire())
        fx.outcomes.wait_count(1)
        p.cut()
        wait_until(lambda: sub.stats.connections >= 2 and sub.subscribed, 30, "a reconnect")
        fx.publish(fx.meter.batch().wire())
        assert fx.outcomes.wait_for(lambda ms: any(b'"counter":2' in m for _, m in ms), 30)
        answers = {(o["status"], o["counter"]) for _, o in fx.outcomes.json()}
        # at least once, both ways: the batch again if the node's PUBACK was lost with the
        # connection (a duplicate), an outcome again if the broker's PUBACK was
        assert answers - {("duplicate", 1)} == {("accepted", 1), ("accepted", 2)}
        sub.stop()
    assert [r.counter for r in fx.stored()] == [1, 2]


def _client_packets(stream: bytes) -> list[tuple[str, int | None, str | None]]:
    """(type, packet id, topic) of the MQTT 5 packets in a client's byte stream."""
    out: list[tuple[str, int | None, str | None]] = []
    at = 0
    while at < len(stream):
        kind, flags = stream[at] >> 4, stream[at] & 0x0F
        length, shift, at = 0, 0, at + 1
        while at < len(stream):  # the remaining length: a variable byte integer
            length |= (stream[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
            if not stream[at - 1] & 0x80:
                break
        if at + length > len(stream):  # a packet still on its way
            break
        body, at = stream[at : at + length], at + length
        if kind == 3:  # PUBLISH: topic, then a packet id when QoS > 0
            n = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + n].decode()
            pid = int.from_bytes(body[2 + n : 4 + n], "big") if (flags >> 1) & 3 else None
            out.append(("PUBLISH", pid, topic))
        elif kind == 4:  # PUBACK
            out.append(("PUBACK", int.from_bytes(body[:2], "big"), None))
    return out


def test_a_message_is_acknowledged_after_the_broker_took_its_outcomes(fx: Fixture) -> None:
    """paho holds QoS 1 publishes back while its in-flight window is full; had the node's
    PUBACK for a batch gone out ahead of the batch's outcomes, a node killed in between
    would leave a stored batch that is never answered (the broker would not redeliver it).
    So every outcome of a message is on the wire before the message's acknowledgement."""
    with proxy() as p:
        b = parse_broker_url(fx.url)
        sub = MqttIntake(
            str(BrokerUrl("127.0.0.1", p.port, prefix=b.prefix)),
            country="DE",
            submit=fx.submit,
            client_id=fx.client_id,
        )
        sub._client.max_inflight_messages_set(1)  # one outcome in flight at a time
        fx.subscribers.append(sub)
        sub.start()
        assert sub.wait_subscribed(15)
        batches = [fx.meter.batch() for _ in range(6)]
        fx.publish(b"\n".join(x.wire() for x in batches[:4]))
        fx.publish(b"\n".join(x.wire() for x in batches[4:]))
        answers = fx.outcomes.wait_count(6)
        assert [o["counter"] for _, o in answers] == [1, 2, 3, 4, 5, 6]
        wait_until(lambda: sub.stats.acknowledged == 2, 10, "both acknowledgements")

        def sent() -> list[tuple[str, int | None, str | None]]:
            with p._lock:
                return _client_packets(bytes(p.sent))

        # acknowledged by the client means queued: wait until both PUBACKs passed the proxy
        wait_until(
            lambda: sum(kind == "PUBACK" for kind, _, _ in sent()) >= 2, 10, "both PUBACKs sent"
        )
        packets = sent()
    outcomes = fx.topics.outcomes(fx.meter.instrument)
    # through the proxy only the node speaks: its PUBACKs answer the broker's batch messages,
    # its PUBLISHes are outcomes; the first message's four outcomes come before its PUBACK,
    # the second's two before the second PUBACK
    assert {topic for kind, _, topic in packets if kind == "PUBLISH"} == {outcomes}
    order = [
        "outcome" if kind == "PUBLISH" else "ack"
        for kind, _, _ in packets
        if kind in ("PUBLISH", "PUBACK")
    ]
    acks = [i for i, what in enumerate(order) if what == "ack"]
    assert order.count("outcome") == 6 and len(acks) == 2, order
    assert order[: acks[0]].count("outcome") == 4, order
    assert order[: acks[1]].count("outcome") == 6, order


def _metric(text: str, name: str) -> float:
    """The value of ``name`` (any labels) in Prometheus text; 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_node_subscriber_is_counted_in_metrics(fx: Fixture) -> None:
    """The node's own MQTT service (serve --mqtt) reports its state in GET /metrics."""
    from fastapi.testclient import TestClient

    from metrocloud.api.app import create_app
    from metrocloud.services import measurements as svc

    node = fx.world.node
    node.settings = node.settings.model_copy(update={"mqtt": fx.url})
    fx.closers.append(lambda: purge_session(svc.mqtt_client_id(node)))
    with TestClient(create_app(node, background=True)) as http:
        wait_until(
            lambda: _metric(http.get("/metrics").text, "metrocloud_mqtt_connected") == 1,
            30,
            "the node's subscriber to connect",
        )
        fx.publish(fx.meter.batch().wire())
        fx.outcomes.wait_count(1)
        wait_until(
            lambda: (
                _metric(http.get("/metrics").text, "metrocloud_mqtt_messages_acknowledged_total")
                == 1
            ),
            15,
            "the acknowledgement in the metrics",
        )
        text = http.get("/metrics").text
        assert _metric(text, "metrocloud_mqtt_messages_received_total") == 1
        assert _metric(text, "metrocloud_mqtt_connections_total") >= 1
        assert _metric(text, "metrocloud_mqtt_backlog") == 0
    assert [r.counter for r in fx.stored()] == [1]
