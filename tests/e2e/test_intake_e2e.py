"""Acceptance: signed measurements from real devices reach the lake through a real node, over
HTTP and over MQTT (Mosquitto), exactly once; what fails a check ends in quarantine with its
reason; a node killed with SIGKILL loses no acknowledged batch; software updates are
verified on the device and unapproved software is flagged by the node.

The node is ``metrocloud serve --mqtt`` in its own process; the devices are the reference
device library; the checks read the node's SQLite file and its lake (DuckDB).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metrocloud.device import (
    Device,
    DeviceEventKind,
    RefusalReason,
    StatusFlag,
    UpdateRefused,
    build_package,
    reference_software,
)
from metrocloud.device import SoftwarePackage as Package
from metrocloud.formats.batches import SignedBatch
from metrocloud.trust.keys import PrivateKey, PublicKey
from tests._mqtt import purge_session, require_mqtt, unique_url, wait_until
from tests._pg import PG_URL, fresh_schema

from ._cli import run_cli
from ._devices import (
    PASSPHRASE,
    MqttSide,
    NodeProcess,
    World,
    approval_of,
    day_start,
    device_key,
    identity,
    mqtt_side,
    patched_software,
    provision,
    readings_of,
    run_device,
    tampered,
)

pytestmark = pytest.mark.e2e


def _node_session(node: NodeProcess) -> str:
    """The node's MQTT client id (its persistent session), to remove it after the test."""
    [(node_id,)] = node.query("SELECT value FROM node_meta WHERE key = 'node_id'")
    return f"metrocloud-intake-{node_id}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    require_mqtt()
    url = unique_url()
    n = NodeProcess(tmp_path_factory.mktemp("intake") / "node", url)
    n.start()
    try:
        yield n
    finally:
        n.stop()
        purge_session(_node_session(n))


@pytest.fixture(scope="module")
def world(node: NodeProcess) -> World:
    return World.make(node)


@pytest.fixture
def mqtt(node: NodeProcess) -> Iterator[MqttSide]:
    with mqtt_side(node.mqtt_url) as side:
        side.wait_subscribed()
        yield side


# -- 1. a fleet's day, half over MQTT, half over HTTP, and what must be refused ----------------


def _fleet(
    world: World, root: Path, n: int, cert: dict[str, Any], prefix: str, software: Any = None
) -> list[Device]:
    """``n`` devices: key first, then the manufacturer registers the instruments with the
    keys, then each device is provisioned for its instrument."""
    dirs = [root / f"{prefix}-{i:03d}" for i in range(n)]
    keys = [device_key(d) for d in dirs]
    ids = world.api.register(world.manufacturer, cert, keys, prefix)
    approval = approval_of(cert, software) if software else approval_of(cert)
    man = world.manufacturer_key.public_key
    return [
        provision(d, i, approval, man, software=software, start=day_start(), seed=k)
        for k, (d, i) in enumerate(zip(dirs, ids, strict=True))
    ]


def test_a_fleet_day_reaches_the_lake_exactly_once_and_bad_batches_are_quarantined(
    world: World, node: NodeProcess, mqtt: MqttSide, tmp_path: Path
) -> None:
    cert = world.api.certificate(
        world.nb, world.manufacturer, "DE-0102-FLEET", [reference_software()]
    )
    fleet = _fleet(world, tmp_path, 100, cert, "FL")
    by_mqtt, by_http = fleet[:50], fleet[50:]
    backups = {}
    day: dict[str, list[SignedBatch]] = {}
    for k, dev in enumerate(fleet):
        day[dev.instrument] = [dev.read_batch(24)]
        if k in (0, 50):  # a copy of the device's state after its first batch
            backups[dev.instrument] = shutil.copytree(dev.directory, tmp_path / f"backup-{k}")
        day[dev.instrument] += [dev.read_batch(24) for _ in range(3)]  # 96 readings: a day

    # MQTT: half the devices publish a message per batch, half one message with all four
    for k, dev in enumerate(by_mqtt):
        lines = [b.wire() for b in day[dev.instrument]]
        if k % 2:
            mqtt.publish(dev.instrument, b"\n".join(lines))
        else:
            for line in lines:
                mqtt.publish(dev.instrument, line)
    # HTTP: a head-end forwards ten devices' day per request
    http_outcomes = []
    for start in range(0, 50, 10):
        group = by_http[start : start + 10]
        http_outcomes += world.api.ingest(
            world.operator, [b.wire() for d in group for b in day[d.instrument]]
        )
    assert {o["status"] for o in http_outcomes} == {"accepted"} and len(http_outcomes) == 200
    fleet_ids = {d.instrument for d in fleet}
    answered = mqtt.wait_outcomes(200)
    assert {i for i, _ in answered} == {d.instrument for d in by_mqtt}
    assert sorted((o["instrument"], o["counter"], o["status"]) for _, o in answered) == sorted(
        (d.instrument, c, "accepted") for d in by_mqtt for c in range(1, 5)
    )

    # what must be refused, over both transports
    cheat = patched_software("1.0.0", b"# a forged approval lets this run")
    odd = _fleet(world, tmp_path, 2, cert, "ODD", software=cheat)  # unapproved software
    rogue = [  # a second key claiming to be a fleet device: never registered
        provision(
            tmp_path / f"rogue-{k}",
            fleet[k].instrument,
            approval_of(cert),
            world.manufacturer_key.public_key,
            start=day_start(),
        )
        for k in (1, 51)
    ]
    rolled_back = []
    for k in (0, 50):  # the device restored from its backup re-signs counter 2, differently
        dev = Device.open(backups[fleet[k].instrument], passphrase=PASSPHRASE)
        dev.record_event(DeviceEventKind.CLOCK_SET, {"note": "restored from backup"})
        rolled_back.append(dev.read_batch(24))
    bad = {  # transport -> (instrument, line, expected reason or status)
        "mqtt": [
            (fleet[0].instrument, tampered(day[fleet[0].instrument][1]), "bad-signature"),
            (fleet[0].instrument, rolled_back[0].wire(), "counter-rollback"),
            (fleet[1].instrument, rogue[0].read_batch(24).wire(), "unknown-key"),
            (odd[0].instrument, odd[0].read_batch(24).wire(), "unapproved-software"),
            (fleet[2].instrument, day[fleet[2].instrument][2].wire(), "duplicate"),
            (fleet[3].instrument, b"MCB1.this-is-no-batch", "malformed"),
        ],
        "http": [
            (fleet[50].instrument, tampered(day[fleet[50].instrument][1]), "bad-signature"),
            (fleet[50].instrument, rolled_back[1].wire(), "counter-rollback"),
            (fleet[51].instrument, rogue[1].read_batch(24).wire(), "unknown-key"),
            (odd[1].instrument, odd[1].read_batch(24).wire(), "unapproved-software"),
            (fleet[52].instrument, day[fleet[52].instrument][2].wire(), "duplicate"),
        ],
    }
    before = len(mqtt.outcomes())
    for instrument, line, _ in bad["mqtt"]:
        mqtt.publish(instrument, line)
    answers = world.api.ingest(world.manufacturer, [line for _, line, _ in bad["http"]])
    assert [o.get("reason") or o["status"] for o in answers] == [e for *_, e in bad["http"]]
    late = mqtt.wait_outcomes(before + len(bad["mqtt"]))[before:]
    assert [(i, o.get("reason") or o["status"]) for i, o in late] == [
        (i, e) for i, _, e in bad["mqtt"]
    ]

    # the quarantine holds each refused line with its reason and transport; nothing else
    ours = {line for lines in bad.values() for _, line, _ in lines}
    quarantined = [(r, t, w) for r, t, _, w in node.quarantined() if w in ours]
    expected = [
        (e, transport, line)
        for transport in ("mqtt", "http")
        for _, line, e in bad[transport]
        if e != "duplicate"
    ]
    assert sorted(quarantined) == sorted(expected)
    # the fleet's 400 batches are stored once each (the replays are duplicates)
    batches = [b for d in fleet for b in day[d.instrument]]
    node.wait_flushed(len(batches))
    stored = [s for s in node.stored() if s[2] in {b.digest for b in batches + rolled_back}]
    assert sorted(stored) == sorted(identity(b) for b in batches)
    # and every accepted reading is in the lake exactly once
    lake = [r for r in node.lake_readings() if r[0] in fleet_ids]
    assert len(lake) == 100 * 96
    assert sorted(lake) == sorted(readings_of(batches))

    # the unapproved software flagged the instrument, for its readers
    flags = world.api.call("GET", f"/instruments/{odd[0].instrument}/flags", world.manufacturer)
    assert [f["kind"] for f in flags["items"]] == ["unapproved-software"]
    assert cheat.identification.checksum in flags["items"][0]["detail"]
    clean = world.api.call("GET", f"/instruments/{fleet[0].instrument}/flags", world.manufacturer)
    assert clean["items"] == []


# -- 2. SIGKILL during intake: no acknowledged batch is lost ------------------------------------


class Traffic:
    """Devices sending their batches in order, over HTTP (acknowledged: the answer says
    accepted or duplicate) and over MQTT (acknowledged: the node's outcome message arrived)."""

    def __init__(
        self, world: World, mqtt: MqttSide, http: list[Device], over_mqtt: list[Device]
    ) -> None:
        self.world = world
        self.mqtt = mqtt
        self.http = [[d.read_batch(4) for _ in range(24)] for d in http]
        self.over_mqtt = [[d.read_batch(4) for _ in range(24)] for d in over_mqtt]
        self._by_counter = {
            (b.parse().instrument, b.parse().counter): b for bs in self.over_mqtt for b in bs
        }
        self._acked: dict[str, set[tuple[str, int, str]]] = {"http": set(), "mqtt": set()}
        self._lock = threading.Lock()
        self.node_up = threading.Event()
        self.node_up.set()
        self.errors: list[BaseException] = []

    def all_batches(self) -> list[SignedBatch]:
        return [b for bs in (*self.http, *self.over_mqtt) for b in bs]

    def done(self) -> bool:
        """Every batch acknowledged; a sender that failed fails the test at once."""
        if self.errors:
            raise AssertionError(f"a sender failed: {self.errors[0]!r}") from self.errors[0]
        return sum(len(a) for a in self.acknowledged().values()) >= len(self.all_batches())

    def missing(self) -> str:
        """Which batches are not acknowledged yet, per transport (for a failure message)."""
        acked = self.acknowledged()
        lines = []
        for via, devices in (("http", self.http), ("mqtt", self.over_mqtt)):
            todo = sorted(
                (b.parse().instrument, b.parse().counter)
                for bs in devices
                for b in bs
                if identity(b) not in acked[via]
            )
            lines.append(f"{via}: {len(todo)} not acknowledged, first {todo[:5]}")
        heard = self.mqtt.outcomes()
        statuses = sorted({o["status"] for _, o in heard})
        lines.append(f"MQTT outcomes heard: {len(heard)} ({', '.join(statuses)})")
        waiting = {
            (b.parse().instrument, b.parse().counter)
            for bs in self.over_mqtt
            for b in bs
            if identity(b) not in acked["mqtt"]
        }
        about = [(i, o) for i, o in heard if (i, o.get("counter")) in waiting]
        lines.append(f"MQTT outcomes about those: {about[:10]}")
        return "\n".join(lines)

    def stored_of_missing(self, stored: list[tuple[str, int, str]]) -> int:
        """How many of the batches not acknowledged yet the node holds (failure messages)."""
        acked = self.acknowledged()
        held = set(stored)
        return sum(
            identity(b) in held
            for via, devices in (("http", self.http), ("mqtt", self.over_mqtt))
            for bs in devices
            for b in bs
            if identity(b) not in acked[via]
        )

    def acknowledged(self) -> dict[str, set[tuple[str, int, str]]]:
        """(key_id, counter, digest) of the batches acknowledged so far, per transport."""
        for instrument, o in self.mqtt.outcomes():
            b = self._by_counter.get((instrument, o.get("counter", 0)))
            if b is not None and o["status"] in ("accepted", "duplicate"):
                with self._lock:
                    self._acked["mqtt"].add(identity(b))
        with self._lock:
            return {k: set(v) for k, v in self._acked.items()}

    def send_http(self) -> None:
        try:
            for batches in zip(*self.http, strict=True):  # one batch of each device a request
                while True:  # the same request again until it is answered
                    self.node_up.wait()
                    try:
                        outcomes = self.world.api.ingest(
                            self.world.operator, [b.wire() for b in batches]
                        )
                        break
                    except Exception:  # the node died under the request: not acknowledged
                        self.node_up.wait()
                for b, o in zip(batches, outcomes, strict=True):
                    assert o["status"] in ("accepted", "duplicate"), o
                    with self._lock:
                        self._acked["http"].add(identity(b))
        except BaseException as exc:
            self.errors.append(exc)

    def send_mqtt(self) -> None:
        try:
            sent = 0
            for batches in zip(*self.over_mqtt, strict=True):
                for b in batches:
                    self.mqtt.publish(b.parse().instrument, b.wire())
                    sent += 1
                # some in flight, not everything at once (while the node is down: everything)
                while self.node_up.is_set() and sent - len(self.acknowledged()["mqtt"]) > 20:
                    time.sleep(0.02)
        except BaseException as exc:
            self.errors.append(exc)


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_node_killed_during_intake_loses_no_acknowledged_batch(
    tmp_path: Path, database: str
) -> None:
    require_mqtt()
    with contextlib.ExitStack() as stack:
        db = schema = None
        if database == "postgresql":
            db, schema = PG_URL, stack.enter_context(fresh_schema())
        _killed_during_intake(tmp_path, db, schema)


def _killed_during_intake(tmp_path: Path, db: str | None, schema: str | None) -> None:
    node = NodeProcess(tmp_path / "node", unique_url(), db=db, schema=schema)
    node.start()
    try:
        world = World.make(node)
        cert = world.api.certificate(
            world.nb, world.manufacturer, "DE-0102-KILL", [reference_software()]
        )
        fleet = _fleet(world, tmp_path, 20, cert, "KL")
        with mqtt_side(node.mqtt_url) as mqtt:
            mqtt.wait_subscribed()
            traffic = Traffic(world, mqtt, fleet[:10], fleet[10:])
            senders = [
                threading.Thread(target=traffic.send_http, daemon=True),
                threading.Thread(target=traffic.send_mqtt, daemon=True),
            ]
            for s in senders:
                s.start()
            wait_until(
                lambda: min(len(a) for a in traffic.acknowledged().values()) >= 40,
                60,
                "traffic under way on both transports",
            )
            traffic.node_up.clear()
            node.kill()  # with requests and messages in flight
            before_kill = traffic.acknowledged()
            node.start()
            # the restarted node holds every batch acknowledged before the kill
            held = set(node.stored())
            for via, acked in before_kill.items():
                lost = acked - held
                assert not lost, f"{len(lost)} batches acknowledged over {via} lost: {lost}"

            traffic.node_up.set()  # HTTP resends what was not answered; MQTT was redelivered
            everything = traffic.all_batches()
            wait_until(
                traffic.done,
                120,
                "every batch acknowledged after the restart",
                lambda: (
                    traffic.missing()
                    + f"\nof those, stored by the node: {traffic.stored_of_missing(node.stored())}"
                    + "\nnode log (tail):\n"
                    + node.log()[-3000:]
                ),
            )
            for s in senders:
                s.join(timeout=30)
            assert traffic.errors == []
            node.wait_flushed(len(everything))
            # each batch stored once, each reading in the lake once
            assert sorted(node.stored()) == sorted(identity(b) for b in everything)
            assert sorted(node.lake_readings()) == sorted(readings_of(everything))
    finally:
        node.stop()
        purge_session(_node_session(node))


# -- 3. software update: verified on the device, unapproved software flagged by the node ----------


def _package(key: PrivateKey, image: Any) -> Package:
    return build_package(
        key,
        name=image.name,
        version=image.version,
        legally_relevant=image.legally_relevant,
        other=image.other,
    )


def test_software_updates_are_verified_on_the_device_and_unapproved_software_is_flagged(
    world: World, node: NodeProcess, tmp_path: Path
) -> None:
    v1 = reference_software()
    v2 = patched_software("1.1.0", b"# 1.1.0: faster register")
    v3 = patched_software("1.2.0", b"# 1.2.0: calibration defect")
    v4 = patched_software("2.0.0", b"# 2.0.0: never examined")
    cert = world.api.certificate(world.nb, world.manufacturer, "DE-0102-SW", [v1, v2, v3])
    [dev] = _fleet(world, tmp_path, 1, cert, "SW")
    # the notified body withdraws 1.2.0 from the approval; the device is not told
    world.api.call(
        "POST",
        f"/certificates/{cert['id']}/revise",
        world.nb,
        json={
            "reason": "1.2.0: calibration defect",
            "software": [v1.identification.as_dict(), v2.identification.as_dict()],
        },
    )
    send = lambda: world.api.ingest(world.operator, [dev.read_batch(8).wire()])[0]  # noqa: E731
    assert send()["status"] == "accepted"

    forged = _package(PrivateKey.generate(), v2)  # not signed by the manufacturer
    with pytest.raises(UpdateRefused) as refused:
        dev.apply_update(forged)
    assert refused.value.reason is RefusalReason.SIGNATURE_INVALID
    with pytest.raises(UpdateRefused) as refused:
        dev.apply_update(_package(world.manufacturer_key, v4))  # signed, never approved
    assert refused.value.reason is RefusalReason.NOT_APPROVED
    assert dev.software == v1.identification

    assert dev.apply_update(_package(world.manufacturer_key, v2)) == v2.identification
    first_after = world.api.ingest(world.operator, [(b := dev.read_batch(8)).wire()])[0]
    assert first_after["status"] == "accepted"
    assert b.parse().software == v2.identification.checksum
    assert b.parse().status[0] & StatusFlag.SOFTWARE_UPDATED

    # the device still believes 1.2.0 approved; the node does not
    assert dev.apply_update(_package(world.manufacturer_key, v3)) == v3.identification
    answer = send()
    assert (answer["status"], answer["reason"]) == ("rejected", "unapproved-software")

    records = dev.events
    assert [r.kind for r in records] == [
        DeviceEventKind.PROVISIONED,
        DeviceEventKind.SOFTWARE_UPDATE_REFUSED,
        DeviceEventKind.SOFTWARE_UPDATE_REFUSED,
        DeviceEventKind.SOFTWARE_UPDATED,
        DeviceEventKind.SOFTWARE_UPDATED,
    ]
    assert [r.data["reason"] for r in records[1:3]] == ["signature-invalid", "not-approved"]
    assert records[3].data["new"]["checksum"] == v2.identification.checksum
    assert dev.verify_events().ok
    reopened = Device.open(dev.directory, passphrase=PASSPHRASE)  # the log is the truth
    assert reopened.software == v3.identification

    flags = world.api.call("GET", f"/instruments/{dev.instrument}/flags", world.manufacturer)
    assert [f["kind"] for f in flags["items"]] == ["unapproved-software"]
    assert v3.identification.checksum in flags["items"][0]["detail"]
    # an authority reads them too; the owner sees that read in its access log
    authority = world.api.party("Eichamt", "authority")
    world.api.call("GET", f"/instruments/{dev.instrument}/flags", authority)
    log = world.api.call("GET", "/access-log", world.manufacturer)["items"]
    assert ("flags.read", dev.instrument) in {(e["action"], e["resource_id"]) for e in log}


# -- 4. the command line: metrocloud device init | run ------------------------------------------


def test_metrocloud_device_init_and_run_over_http_and_mqtt(
    world: World, node: NodeProcess, tmp_path: Path
) -> None:
    d = tmp_path / "meter"
    cert = world.api.certificate(
        world.nb, world.manufacturer, "DE-0102-CLI", [reference_software()]
    )
    # 1. the device's key; 2. the manufacturer registers the instrument with it
    made = run_device("init", "--dir", str(d), "--algorithm", "p256")
    assert made.returncode == 0, made.stderr
    spki = made.stdout.split("to register with the instrument:\n")[1].splitlines()[0]
    [instrument] = world.api.register(world.manufacturer, cert, [PublicKey.from_any(spki)], "CLI")
    # 3. provisioning: instrument, certificate and manufacturer key come from the node
    common = ("--node", node.base_url, "--token", world.manufacturer.token)
    start = day_start(0.5).isoformat()
    ready = run_device(
        "init", "--dir", str(d), "--instrument", instrument, "--start", start, *common
    )
    assert ready.returncode == 0, ready.stderr
    assert f"device for {instrument} provisioned" in ready.stdout and spki in ready.stdout
    again = run_device("init", "--dir", str(d), "--instrument", instrument, *common)
    assert again.returncode == 2 and again.stderr.startswith("error: ")
    assert "provisioned device already" in again.stderr
    other = tmp_path / "other"
    assert run_device("init", "--dir", str(other)).returncode == 0
    stranger = run_device("init", "--dir", str(other), "--instrument", instrument, *common)
    assert stranger.returncode == 2, stranger.stderr
    assert f"instrument {instrument} does not list this device's key" in stranger.stderr
    assert not (other / "device.json").exists()

    sent = run_device("run", "--dir", str(d), *common, "--batch", "4", "--count", "3")
    assert sent.returncode == 0, sent.stderr
    assert "sent 3 batch(es) (12 readings): 3 accepted, 0 duplicate, 0 rejected" in sent.stdout
    over_mqtt = run_device(
        "run", "--dir", str(d), "--mqtt", node.mqtt_url, "--batch", "4", "--count", "2"
    )
    assert over_mqtt.returncode == 0, over_mqtt.stderr
    assert "sent 2 batch(es) (8 readings): 2 accepted" in over_mqtt.stdout

    # what a run could not deliver is sent again by the next; this one was damaged at rest
    (d / "outbox" / f"{1:016d}.mcb").write_bytes(b"MCB1.damaged-at-rest")
    damaged = run_device("run", "--dir", str(d), *common, "--batch", "4", "--count", "1")
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert re.search(rf"rejected: batch 1 of {instrument}: malformed", damaged.stderr)
    assert "sent 2 batch(es) (4 readings): 1 accepted, 0 duplicate, 1 rejected" in damaged.stdout
    assert list((d / "outbox").iterdir()) == []
    rows = node.query(
        "SELECT counter, transport FROM intake_batches WHERE instrument_id = ? ORDER BY counter",
        instrument,
    )
    assert rows == [(1, "http"), (2, "http"), (3, "http"), (4, "mqtt"), (5, "mqtt"), (6, "http")]

    refused = run_device(
        "run", "--dir", str(d), "--node", node.base_url, "--token", "nope", "--batch", "4"
    )
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused the batches: 401" in errors[0], refused.stderr
    # the device key stays in the device directory, encrypted; no output shows it
    outputs = "".join(r.stdout + r.stderr for r in (made, ready, sent, over_mqtt, damaged))
    assert "PRIVATE KEY" not in outputs
    assert b"ENCRYPTED PRIVATE KEY" in (d / "keys" / "device.key.pem").read_bytes()


# -- 5. several workers: one owns the subscription, another takes it over -----------------------


def test_with_several_workers_the_lake_writer_owns_the_subscription(tmp_path: Path) -> None:
    """``serve --workers 2 --mqtt``: only the worker holding the lake's writer lock
    subscribes (one client id, one session: no two workers take it from each other). When
    it is killed, another worker takes the lock and resumes the session; what was published
    meanwhile waited at the broker."""
    require_mqtt()
    node = NodeProcess(tmp_path / "node", unique_url(), workers=2)
    node.start()
    try:
        world = World.make(node)
        cert = world.api.certificate(
            world.nb, world.manufacturer, "DE-0102-WORKERS", [reference_software()]
        )
        fleet = _fleet(world, tmp_path, 4, cert, "WK")
        batches = {d.instrument: [d.read_batch(4) for _ in range(12)] for d in fleet}
        with mqtt_side(node.mqtt_url) as mqtt:
            mqtt.wait_subscribed()
            for d in fleet:
                for b in batches[d.instrument][:6]:
                    mqtt.publish(d.instrument, b.wire())
            mqtt.wait_outcomes(24)
            writer = node.lake_writer()
            os.kill(writer, signal.SIGKILL)
            for d in fleet:
                for b in batches[d.instrument][6:]:
                    mqtt.publish(d.instrument, b.wire())
            answers = mqtt.wait_outcomes(48)
            assert {(i, o["counter"]) for i, o in answers if o["status"] == "accepted"} == {
                (d.instrument, c) for d in fleet for c in range(1, 13)
            }
            assert {o["status"] for _, o in answers} <= {"accepted", "duplicate"}
            assert node.lake_writer() != writer
        everything = [b for bs in batches.values() for b in bs]
        node.wait_flushed(len(everything))
        assert sorted(node.stored()) == sorted(identity(b) for b in everything)
        assert sorted(node.lake_readings()) == sorted(readings_of(everything))
        # no worker ever took the session from another (that would log a lost connection)
        assert "MQTT intake lost" not in node.log()
    finally:
        node.stop()
        purge_session(_node_session(node))


def test_serve_refuses_a_bad_mqtt_url_with_the_reason(tmp_path: Path) -> None:
    bad = run_cli("serve", "--mqtt", "http://127.0.0.1:1883", data_dir=tmp_path / "node")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: MQTT broker URL 'http://127.0.0.1:1883' has scheme 'http'; expected "
        "mqtt://HOST[:PORT][/TOPIC-PREFIX] (or mqtts:// for TLS)"
    )


def test_the_node_logs_its_background_work(node: NodeProcess) -> None:
    """``serve`` shows the node's own INFO lines (the lake writer, the MQTT intake), and no
    bearer token among them."""
    wait_until(lambda: "lake writer: flushing the intake into" in node.log(), 30, "the lake log")
    wait_until(lambda: "MQTT intake connected to" in node.log(), 30, "the MQTT log")
    assert "mct_" not in node.log()
