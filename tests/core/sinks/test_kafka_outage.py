"""Kafka unavailable at start and going away mid-run: back off, read nothing more, lose nothing, resume."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.supervisor import Supervisor
from tests.helpers import consume, write_config
from tools.servers.fhir import FhirTestServer
from tools.services import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_kafka_down_at_start_and_mid_run(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    resources = generate_observations(6000, seed=3)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    prefix = f"outage-{uuid.uuid4().hex[:8]}."
    broker = KafkaBroker(fast_jit=True)  # ports chosen now, started later
    try:
        with FhirTestServer(resources, page_delay=0.03) as server:
            root = write_config(
                tmp_path, base_url=server.base_url, kafka=broker.bootstrap, topic_prefix=prefix, page_size=50
            )
            sup_cfg, integrations = load_config(root)
            supervisor = Supervisor(sup_cfg, integrations)
            stats = supervisor.stats["acme/observations"]
            run = run_supervisor(supervisor)  # stopped in step 4; by the fixture if an assertion fails first

            # 1. No Kafka: the integration fails, backs off and retries; it does not run ahead reading pages.
            await _wait_for(lambda: stats.restarts >= 3, 30, "three restarts with Kafka down")
            assert stats.totals.records_in == 0
            pages_while_down = len(server.requests)
            assert pages_while_down <= stats.restarts + 1, "read on while the sink could not accept"
            assert not run.done()

            # 2. Kafka comes up: the stream starts.
            await asyncio.to_thread(broker.start)
            await _wait_for(lambda: stats.totals.records_in >= 1000, 60, "progress once Kafka is up")

            # 3. Kafka goes away mid-run: reading stops (bounded in flight), nothing is committed past Kafka.
            await asyncio.to_thread(broker.stop)
            committed_at_stop = stats.totals.records_in
            assert committed_at_stop < len(resources), "finished before Kafka went away: not mid-run"
            await asyncio.sleep(1.0)
            requests_then = len(server.requests)
            await asyncio.sleep(6.0)
            # With Kafka gone, at most one page per restart attempt is read (never the remaining ~60).
            assert len(server.requests) - requests_then <= stats.restarts + 2
            assert not run.done(), "the supervisor must keep running while Kafka is down"

            # 4. Kafka is back on the same port with the same data: the stream resumes and completes.
            await asyncio.to_thread(broker.start)
            records = await consume(
                broker.bootstrap,
                [f"{prefix}clinical.observation.v1"],
                timeout=120,
                until=lambda got: {orjson.loads(r.value)["observation_id"] for r in got} >= wanted,
            )
            supervisor.stop()
            await asyncio.wait_for(run, 30)
    finally:
        await asyncio.to_thread(broker.close)

    ids: dict[str, set[str]] = {}
    for r in records:
        ids.setdefault(orjson.loads(r.value)["observation_id"], set()).add(dict(r.headers)["ce_id"].decode())
    assert set(ids) == wanted
    assert all(len(v) == 1 for v in ids.values())
    assert stats.restarts >= 4 and stats.totals.balanced()
