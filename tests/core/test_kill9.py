"""kill -9 of a running supervisor mid-stream loses nothing, and its checkpoint never runs ahead of Kafka."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.time import normalise
from tests.helpers import consume, read_checkpoint, start_supervisor, supervisor_log, write_config
from tools.servers.fhir import FhirTestServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _covered(resources: list[dict[str, Any]], position: dict[str, Any]) -> set[str]:
    """Ids a checkpoint claims are in Kafka: updated before the watermark, or at it and listed."""
    mark = normalise(position["last_updated"]).utc
    listed = set(position["ids_at_watermark"])
    out = set()
    for r in resources:
        at = normalise(r["meta"]["lastUpdated"]).utc
        if at < mark or (at == mark and r["id"] in listed):
            out.add(r["id"])
    return out


async def test_kill_minus_9_mid_stream_loses_nothing(tmp_path: Path, kafka_bootstrap: str) -> None:
    resources = generate_observations(4000, seed=9)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    prefix = f"kill9-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}clinical.observation.v1"
    rng = random.Random(int(os.environ.get("INLET_TEST_SEED", "0")) or None)
    kills = 0
    with FhirTestServer(resources, page_delay=0.01) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix, page_size=50
        )
        for _ in range(3):
            proc = start_supervisor(root)
            # Kill once it has committed something and is mid-stream, at a random moment.
            deadline = time.monotonic() + 60
            while read_checkpoint(root) is None and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.05, 0.8))
            assert proc.poll() is None, supervisor_log(root)
            position = read_checkpoint(root)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            assert position is not None
            # The checkpoint read *before* the kill must be covered by what Kafka already has.
            got = await consume(kafka_bootstrap, [topic], idle=2.0)
            in_kafka = {orjson.loads(r.value)["observation_id"] for r in got}
            claimed = _covered(resources, position) & wanted
            assert claimed <= in_kafka, f"checkpoint ahead of Kafka by {len(claimed - in_kafka)} records"
            assert len(claimed) < len(wanted), "killed after the end: not mid-stream"
        final = start_supervisor(root, once=True)
        assert final.wait(timeout=120) == 0, supervisor_log(root)

    records = await consume(kafka_bootstrap, [topic], idle=3.0)
    ids_per_obs: dict[str, set[str]] = {}
    for r in records:
        ids_per_obs.setdefault(orjson.loads(r.value)["observation_id"], set()).add(dict(r.headers)["ce_id"].decode())
    assert kills == 3
    assert set(ids_per_obs) == wanted, f"missing: {len(wanted - set(ids_per_obs))}"
    assert all(len(ids) == 1 for ids in ids_per_obs.values()), "a redelivered record got a new event id"
    assert len({i for ids in ids_per_obs.values() for i in ids}) == len(wanted)  # dedup by id gives exactly N
