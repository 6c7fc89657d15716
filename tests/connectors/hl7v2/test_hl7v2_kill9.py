"""HL7 v2 over MLLP survives kill -9 of the supervisor: a real sender process resends what was never ACKed.

The supervisor writes to a real Kafka and answers each message only after Kafka holds its events; it is killed
(SIGKILL) several times while 8 senders stream a generated ADT/ORU feed. A message stored but not yet
acknowledged at a kill is resent by its sender and stored again under the same event ids. At the end: every
message acknowledged ``AA``, every event of every message in Kafka, each event id always with the same value,
and no ACK for anything that is not stored.

Random kills rarely land between the sink and the ACK; the failpoint test puts one there
(``INLET_FAILPOINT=mllp.after_sink:3``, ``core.failpoints``) and checks the resent message keeps its ids.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
from inlet.connectors.hl7v2.synth import hospital_feed
from inlet.core.config import load_config
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.fixtures import replay
from inlet.core.mllp import MllpMessage
from inlet.core.pipeline import process_batch
from tests.helpers import consume, start_supervisor, supervisor_log, write_kafka_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, port: int, kafka: str, prefix: str) -> Path:
    mllp = {"host": "127.0.0.1", "port": port, "batch_max": 50, "batch_linger_seconds": 0.005}
    integration = {
        "customer": "acme",
        "integration": "hl7",
        "plugin": "hl7v2",
        "zone": "Europe/Berlin",
        "settings": {"mllp": mllp},
    }
    return write_kafka_config(root, kafka=kafka, prefix=prefix, integration=integration)


def _start_sender(port: int, messages: list[bytes], log: Any, senders: int = 8) -> subprocess.Popen[bytes]:
    """tools.mllp_send as its own process: ``senders`` connections, each resending a message until it is
    acknowledged."""
    sender = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.mllp_send",
            "--port",
            str(port),
            "--senders",
            str(senders),
            "--ack-timeout",
            "20",
            "--timeout",
            "300",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
    )
    assert sender.stdin is not None
    sender.stdin.write(b"\n\n".join(messages))
    sender.stdin.close()
    return sender


def _expected(root: Path, messages: list[bytes], tmp: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every event the messages must produce (event id → topic, value), by an offline replay of the same bytes."""
    fixtures = tmp / "expected"
    fixtures.mkdir()
    lines = [
        orjson.dumps(
            {
                "message": i + 1,
                "connection": 1,
                "received_at": "2026-03-29T06:00:00+00:00",
                "hl7": m.decode(),
                "charset": "utf-8",
            }
        )
        for i, m in enumerate(messages)
    ]
    (fixtures / "mllp.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _, [item] = load_config(root, only=["acme/hl7"], offline=True)
    with pytest.MonkeyPatch.context() as env:  # update writes the replay's ACKs, pseudonymised under a key
        env.setenv("INLET_PSEUDONYM_KEY", "kill9-test-key-not-a-secret")
        docs = replay(item, fixtures, update=True)
    return {d["headers"]["ce_id"]: (d["topic"], d["value"]) for d in docs}


async def test_kill_minus_9_between_sink_and_ack_resends_and_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    prefix = f"hl7k9-{uuid.uuid4().hex[:8]}."
    port = _free_port()
    root = _config(tmp_path / "cfg", port, kafka_bootstrap, prefix)
    # Only messages that map (the AR / AE ones are covered elsewhere): each must end with AA.
    messages = [m for s in range(12) for m in hospital_feed(40, seed=s, facility=f"HOSP{s}", id_prefix=f"K{s}")[:-2]]
    expected = await asyncio.to_thread(_expected, root, messages, tmp_path)  # replay runs its own loop
    assert expected and all(not t.endswith("dlq") for t, _ in expected.values())

    proc = start_supervisor(root, log_level="info")
    deadline = time.monotonic() + 90
    while "mllp listening" not in (root / "supervisor.log").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, supervisor_log(root)
        time.sleep(0.1)
    sender_log = (tmp_path / "sender.log").open("wb")
    sender = _start_sender(port, messages, sender_log)
    rng = random.Random(int(os.environ.get("INLET_TEST_SEED", "0")) or None)
    kills = 0
    try:
        while sender.poll() is None and kills < 4:
            time.sleep(rng.uniform(0.3, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            proc = start_supervisor(root, log_level="info")
        assert sender.stdout is not None
        with sender.stdout:
            out = sender.stdout.read()  # the sender ends by itself (every message answered, or its --timeout)
        sender_log.close()
        assert sender.wait(timeout=60) == 0, (tmp_path / "sender.log").read_text()[-2000:]
        acks = [orjson.loads(line) for line in out.splitlines()]
        topics = sorted({prefix + t for t, _ in expected.values()})

        def complete(records: list[Any]) -> bool:
            return {dict(r.headers)["ce_id"].decode() for r in records} >= set(expected)

        records = await consume(kafka_bootstrap, topics, timeout=180, until=complete)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, supervisor_log(root)
    assert kills >= 1, "the feed finished before the first kill"
    assert len(acks) == len(messages) and {a["ack"] for a in acks} == {"AA"}, acks
    assert any(int(a["attempts"]) > 1 for a in acks), "no message was in flight at any kill"
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        seen[dict(r.headers)["ce_id"].decode()].append(orjson.loads(r.value))
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} events of acknowledged messages are not in Kafka"
    assert set(seen) <= set(expected), "an event id that the messages do not produce (a resend changed ids?)"
    for ce_id, values in seen.items():
        assert all(v == expected[ce_id][1] for v in values), f"{ce_id}: a resend changed the event"
    resent = sum(len(v) - 1 for v in seen.values())
    print(
        f"{kills} kills, {sum(int(a['attempts']) > 1 for a in acks)} messages resent, "
        f"{resent} events stored twice under the same id"
    )


def _events_of(messages: list[bytes], prefix: str) -> list[dict[str, Any]]:
    """Per message, its events (event id → value), computed offline by the family's own hooks."""
    connector = Hl7v2Connector(IntegrationContext("acme", "hl7", zone="Europe/Berlin"), Hl7v2Settings())
    connector._outcome = {}
    env = Enveloper("acme", "hl7", topic_template=prefix + "{name}.v{major}", dlq_topic_template=prefix + "dlq")
    out = []
    for serial, message in enumerate(messages, 1):
        record = MllpMessage(message, serial, "test", datetime.now(UTC))
        events, counts = process_batch(connector, env, Batch([record], {}))
        assert counts.records_mapped == 1, message[:80]
        out.append({e.id: (e.topic, orjson.loads(e.value)) for e in events})
    return out


def _ids(records: list[Any]) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records]


async def test_failpoint_kills_between_the_sink_and_the_ack_and_the_resend_keeps_the_ids(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``INLET_FAILPOINT=mllp.after_sink:3``: the supervisor dies with message 3's events in Kafka and its ACK
    unsent; restarted without the failpoint, the sender's resend is stored again under the same ids."""
    prefix = f"hl7fp-{uuid.uuid4().hex[:8]}."
    port = _free_port()
    root = _config(tmp_path / "cfg", port, kafka_bootstrap, prefix)
    messages = hospital_feed(4, seed=7, facility="FAILPOINT", id_prefix="FP")[:6]
    per_message = _events_of(messages, prefix)
    every = set().union(*per_message)
    topics = sorted({topic for events in per_message for topic, _ in events.values()})

    monkeypatch.setenv("INLET_FAILPOINT", "mllp.after_sink:3")
    proc = start_supervisor(root, log_level="info")
    monkeypatch.delenv("INLET_FAILPOINT")
    deadline = time.monotonic() + 90
    while "mllp listening" not in (root / "supervisor.log").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, supervisor_log(root)
        time.sleep(0.1)
    sender_log = (tmp_path / "sender.log").open("wb")
    sender = _start_sender(port, messages, sender_log, senders=1)  # one connection: messages in order
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL, supervisor_log(root)
        assert "mllp.after_sink reached (3)" in supervisor_log(root)
        stored = set().union(*per_message[:3])
        at_kill = await consume(kafka_bootstrap, topics, timeout=60, until=lambda rs: set(_ids(rs)) >= stored)
        assert set(_ids(at_kill)) == stored, "message 3 stored at the kill, nothing after it"
        assert sender.poll() is None, "the sender still waits for message 3's ACK"
        proc = start_supervisor(root, log_level="info")  # without the failpoint
        assert sender.stdout is not None
        with sender.stdout:
            out = sender.stdout.read()
        sender_log.close()
        assert sender.wait(timeout=60) == 0, (tmp_path / "sender.log").read_text()[-2000:]
        records = await consume(kafka_bootstrap, topics, timeout=120, until=lambda rs: set(_ids(rs)) >= every)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, supervisor_log(root)
    acks = [orjson.loads(line) for line in out.splitlines()]
    assert [a["ack"] for a in acks] == ["AA"] * len(messages), acks
    attempts = [int(a["attempts"]) for a in acks]
    assert attempts[2] > 1 and attempts[:2] + attempts[3:] == [1] * (len(messages) - 1), attempts
    times = Counter(_ids(records))
    assert set(times) == every, "an event id that the messages do not produce (the resend changed ids?)"
    for n, events in enumerate(per_message, 1):
        assert [times[i] for i in events] == [2 if n == 3 else 1] * len(events), f"message {n}"
    expected = {ce_id: event for events in per_message for ce_id, event in events.items()}
    for ce_id, r in zip(_ids(records), records, strict=True):
        assert (r.topic, orjson.loads(r.value)) == expected[ce_id], "the resend changed an event"
