"""Slots of an MQTT integration: one persistent session per slot, the load split by a ``$share`` subscription.

The broker tests run consumers in processes of their own (``slot_worker``) and SIGKILL them, and document what
Mosquitto does with a shared subscription's QoS 1 messages (the behaviour inlet relies on; they fail if the
broker behaves differently):

- a member's share of what is published while it is offline waits in its persistent session;
- a killed member's unacknowledged messages are not handed to the other members: they stay in its session
  and are redelivered (DUP) when its client id reconnects, from whichever process.

So a slot's messages are never stranded as long as the slot comes back, which the fleet does (it moves a dead
replica's slot, same client id, to a surviving one). The last test drains a 50k backlog with three slot
processes, one killed and restarted mid-drain, and finds every message sinked.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from inlet.connectors.mqtt_meter.connector import MqttMeterConnector, MqttMeterSettings
from inlet.core.connector import IntegrationContext
from inlet.core.mqtt import MqttSettings, create_session
from tests.connectors.mqtt_meter.slot_worker import digest, read_lines

ROOT = Path(__file__).resolve().parents[3]


# --- client ids and subscriptions ----------------------------------------------------------------------


def _meter_settings(**mqtt: Any) -> MqttMeterSettings:
    return MqttMeterSettings.model_validate(
        {
            "mqtt": {"topics": ["tele/+/SENSOR", "shellies/#"], **mqtt},
            "routes": [{"topic": "tele/+/SENSOR", "decoder": "json"}],
        }
    )


async def _opened_as(slot: int | None, **mqtt: Any) -> tuple[list[str], str]:
    """The subscriptions and client id the connector of ``slot`` opens its source with."""
    seen: list[tuple[MqttSettings, str]] = []

    class _Source:
        def __init__(self, settings: MqttSettings, client_id: str) -> None:
            seen.append((settings, client_id))

        async def start(self) -> None: ...
        async def stop(self) -> None: ...

    ctx = IntegrationContext("acme", "meters", slot=slot, message_source=_Source)
    connector = MqttMeterConnector(ctx, _meter_settings(**mqtt))
    await connector.open()
    await connector.close()
    [(settings, client_id)] = seen
    return settings.topics, client_id


async def test_a_single_slot_subscribes_as_before() -> None:
    assert await _opened_as(None) == (["tele/+/SENSOR", "shellies/#"], "inlet-acme-meters")


async def test_each_slot_has_its_own_session_and_shares_the_subscriptions() -> None:
    topics, client_id = await _opened_as(2)
    assert client_id == "inlet-acme-meters-s2"
    assert topics == ["$share/inlet-acme-meters/tele/+/SENSOR", "$share/inlet-acme-meters/shellies/#"]
    topics, client_id = await _opened_as(0, client_id="hub-reader", share_group="hub")
    assert (topics, client_id) == (["$share/hub/tele/+/SENSOR", "$share/hub/shellies/#"], "hub-reader-s0")


@pytest.mark.parametrize("group", ["a/b", "a+", "#", ""])
def test_a_share_group_is_one_topic_level_without_wildcards(group: str) -> None:
    with pytest.raises(ValidationError, match="share_group"):
        MqttSettings(topics=["t"], share_group=group)


def test_the_sessions_of_several_slots_need_their_group() -> None:
    with pytest.raises(ValueError, match="share group"):
        create_session(MqttSettings(topics=["t"]), "c", slots=2)


# --- the broker -----------------------------------------------------------------------------------------


class Workers:
    """``slot_worker`` processes: started, waited for, and killed when the test ends."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder = url, folder
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self, client_id: str, topic_filter: str, name: str, *, hold: bool = False
    ) -> tuple[subprocess.Popen[str], Path]:
        """A consumer of session ``client_id`` writing to ``<name>.txt``, once it is connected."""
        out = self.folder / f"{name}.txt"
        args = [sys.executable, "-m", "tests.connectors.mqtt_meter.slot_worker", self.url, client_id, topic_filter]
        proc = subprocess.Popen(
            [*args, str(out), *(["--hold"] if hold else [])], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "connected", f"{name} did not connect"
        return proc, out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def workers(tmp_path: Path, mosquitto_factory: Any) -> Iterator[Workers]:
    """Consumer processes on a Mosquitto of this test's own (no other client in its share groups)."""
    made = Workers(mosquitto_factory(persistence=False).url, tmp_path)
    try:
        yield made
    finally:
        made.close()


def _publish(connect: Callable[..., mqtt.Client], url: str, topic: str, payloads: list[bytes]) -> None:
    """QoS 1, at most 100 unacknowledged; returns once the broker acknowledged every one (routing is done)."""
    window = threading.Semaphore(100)
    client = connect(url, on_publish=lambda *args: window.release())
    for payload in payloads:
        assert window.acquire(timeout=30), "the broker stopped acknowledging publishes"
        client.publish(topic, payload, qos=1)
    for _ in range(100):
        assert window.acquire(timeout=30), "the broker stopped acknowledging publishes"
    client.disconnect()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(interval)


def _quiet(path: Path, seconds: float = 1.5, timeout: float = 30.0) -> list[tuple[str, bool]]:
    """The lines of ``path`` once it has at least one and none came for ``seconds`` (delivery has settled)."""
    deadline = time.monotonic() + timeout
    lines, since = read_lines(path), time.monotonic()
    while not lines or time.monotonic() - since < seconds:
        assert time.monotonic() < deadline, f"{path.name} did not settle"
        time.sleep(0.1)
        now = read_lines(path)
        if len(now) != len(lines):
            lines, since = now, time.monotonic()
    return lines


def _digests(lines: list[tuple[str, bool]]) -> set[str]:
    return {d for d, _ in lines}


def _sessions(url: str, slots: int) -> tuple[list[str], str, str]:
    """Fresh persistent sessions of ``slots`` slots sharing ``<name>/#``: their client ids, their shared filter
    and a topic to publish to."""
    name = uuid.uuid4().hex[:8]
    settings = MqttSettings(url=url, topics=[f"{name}/#"])
    client_ids = create_session(settings, f"c-{name}", slots=slots, group=f"g-{name}")
    return client_ids, f"$share/g-{name}/{name}/#", f"{name}/tele"


@pytest.mark.mqtt
def test_an_offline_member_gets_its_share_queued_in_its_session(
    workers: Workers, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    """(c) Mosquitto hands a shared message to a member even while it is offline (persistent session):
    the message waits for it rather than going to the member that is connected."""
    [s0, s1], shared, topic = _sessions(workers.url, 2)
    _, out1 = workers.start(s1, shared, "s1")
    payloads = [b"c%d" % i for i in range(100)]
    _publish(mqtt_clients, workers.url, topic, payloads)
    online = _quiet(out1)
    _, out0 = workers.start(s0, shared, "s0")
    everything = {digest(p) for p in payloads}
    _wait(lambda: _digests(read_lines(out0)) | _digests(online) >= everything, "every message delivered")
    offline = read_lines(out0)
    assert 0 < len(offline) < len(payloads), "the offline member's share waited for it"
    assert not any(dup for _, dup in offline), "first deliveries"
    assert not _digests(offline) & _digests(read_lines(out1)), "each message went to one member only"


@pytest.mark.mqtt
def test_a_killed_members_unacknowledged_messages_wait_for_its_client_id(
    workers: Workers, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    """(a) A member SIGKILLed with messages received but not acknowledged: they are redelivered (DUP) when its
    client id reconnects, from another process. (b) Until then they are not given to the other member, nor is
    its share of what is published meanwhile."""
    [s0, s1], shared, topic = _sessions(workers.url, 2)
    held_proc, held_out = workers.start(s0, shared, "s0-held", hold=True)
    _, out1 = workers.start(s1, shared, "s1")
    first = [b"a%d" % i for i in range(100)]
    _publish(mqtt_clients, workers.url, topic, first)
    held = _digests(_quiet(held_out))  # in flight: up to the broker's max_inflight_messages (20)
    held_proc.send_signal(signal.SIGKILL)
    held_proc.wait(timeout=30)
    second = [b"b%d" % i for i in range(100)]
    _publish(mqtt_clients, workers.url, topic, second)
    _wait(lambda: len(read_lines(out1)) >= 100, "the live member's share of both rounds")
    away = _digests(_quiet(out1))
    assert held, "the member received messages before it was killed"
    assert not held & away, "a dead member's unacknowledged messages are not redistributed"

    _, back_out = workers.start(s0, shared, "s0-back")  # the same client id, another process
    everything = {digest(p) for p in first + second}
    _wait(lambda: _digests(read_lines(back_out)) | away >= everything, "every message delivered")
    back = read_lines(back_out)
    assert {d for d, dup in back if dup} == held, "exactly the unacknowledged messages come back, flagged DUP"
    assert not _digests(back) & _digests(read_lines(out1)), "nothing went to both members"
    assert len(back) > len(held), "the dead member's share of the second round waited for it too"


@pytest.mark.mqtt
@pytest.mark.slow
def test_three_slot_processes_drain_a_backlog_despite_a_kill(
    workers: Workers, mqtt_clients: Callable[..., mqtt.Client]
) -> None:
    """50k QoS 1 messages queued for three slots; slot 1 is SIGKILLed mid-drain and restarted in a new process:
    every message is in some slot's file, and a message is in two files only if it was redelivered to slot 1."""
    client_ids, shared, topic = _sessions(workers.url, 3)
    n = 50_000
    payloads = [b"%d" % i for i in range(n)]
    _publish(mqtt_clients, workers.url, topic, payloads)
    # Slot 1 last: a slot drains its share within seconds, so it is watched from the moment it connects.
    outs = {k: workers.start(client_ids[k], shared, f"slot{k}")[1] for k in (0, 2)}
    victim, outs[1] = workers.start(client_ids[1], shared, "slot1")
    _wait(lambda: len(read_lines(outs[1])) >= 1000, "slot 1 draining", interval=0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    before_kill = read_lines(outs[1])
    _, restarted = workers.start(client_ids[1], shared, "slot1-restarted")
    files = [*outs.values(), restarted]
    everything = {digest(p) for p in payloads}
    _wait(lambda: set().union(*(_digests(read_lines(f)) for f in files)) >= everything, "the backlog drained", 45, 0.5)

    lines = {f.name: read_lines(f) for f in files}
    assert before_kill, "slot 1 had drained part of its share"
    assert not all(dup for _, dup in lines["slot1-restarted.txt"]), "killed mid-drain: the rest of its share waited"
    copies = Counter(d for name in lines for d in _digests(lines[name]))
    assert all(len(lines[name]) == len(_digests(lines[name])) for name in lines), "no file has a message twice"
    twice = {d for d, count in copies.items() if count > 1}
    redelivered = {d for d, dup in lines["slot1-restarted.txt"] if dup}
    assert twice <= redelivered & _digests(lines["slot1.txt"]), "duplicates only by redelivery to slot 1"
    assert max(copies.values()) <= 2
    assert set(copies) == everything
