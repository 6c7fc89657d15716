"""Retry-After read by what it can plausibly mean, pauses bounded and visible, against the real local Bulk Data
server: an epoch in ms is honoured as the moment the block lifts, a number that is neither a delay nor a
near-future epoch is ignored with a warning, a pause never exceeds ``max_pause_seconds``, and a paused upstream
shows in the waiting integration's ``/readyz`` status and in a stopped run's summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from inlet.connectors.fhir.synth import generate_dataset
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import load_config
from inlet.core.http import retry_after_seconds
from inlet.core.ratelimit import paused_for, reset_limiters
from inlet.core.supervisor import Supervisor
from tests.connectors.fhir.test_fhir_bulk import FAST, _connector, _observation_ids, _run
from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer


def test_retry_after_is_read_by_what_it_can_mean() -> None:
    now = 1_796_616_680.0
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("1.5", now) == 1.5
    assert retry_after_seconds("1796616687327", now) == pytest.approx(7.327)  # epoch ms, 7.3 s ahead
    assert retry_after_seconds("1796616690", now) == 10.0  # epoch s
    assert retry_after_seconds("1796616600", now) == 0.0  # just past: the block has lifted
    assert retry_after_seconds(formatdate(now + 10, usegmt=True), now) == 10.0
    with structlog.testing.capture_logs() as logs:
        assert retry_after_seconds("9999999999999", now, where="GET /x") is None  # 2286: no near future
        assert retry_after_seconds("1500000000", now) is None  # 2017
        assert retry_after_seconds("soon", now) is None
        assert retry_after_seconds("-5", now) is None
    assert [e["log_level"] for e in logs] == ["warning"] * 4 and logs[0]["where"] == "GET /x"


async def test_an_epoch_in_milliseconds_is_waited_for_not_a_day(tmp_path: Path) -> None:
    reset_limiters()
    lifted = time.time() + 2.0
    faults = BulkFaults(pending_polls=0, kickoff_status={1: 429}, fault_retry_after=str(int(lifted * 1000)))
    observations = generate_dataset(30, seed=41).observations
    with FhirBulkServer(observations, faults=faults) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            sink, stats, _ = await asyncio.wait_for(_run(_connector(server), store), 60)
        took = time.monotonic() - started
        store.close()
        kicks = [r for r in server.requests if r.path.endswith("$export")]
    assert [k.status for k in kicks] == [429, 202]
    assert kicks[1].at - kicks[0].at >= 1.0 and took < 30, f"waited {kicks[1].at - kicks[0].at:.1f} s"
    assert stats.totals.balanced() and _observation_ids(sink.events)
    pause = next(e for e in logs if e["event"] == "upstream rate limit pause")
    assert pause["until"] and "Retry-After: " in pause["detail"] and "$export" in pause["detail"]


async def test_a_retry_after_that_is_no_delay_is_ignored_with_a_warning(tmp_path: Path) -> None:
    reset_limiters()
    faults = BulkFaults(pending_polls=0, kickoff_status={1: 429}, fault_retry_after="99999999999999")
    with FhirBulkServer(generate_dataset(20, seed=42).observations, faults=faults) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with structlog.testing.capture_logs() as logs:
            _, stats, _ = await asyncio.wait_for(_run(_connector(server), store), 60)
        store.close()
    assert stats.totals.records_in > 0
    assert any(e["event"].startswith("Retry-After ignored") for e in logs)
    assert not any(e["event"] == "upstream rate limit pause" for e in logs), "no pause from a value not believed"


async def test_every_pause_is_bounded_by_max_pause_seconds(tmp_path: Path) -> None:
    reset_limiters()
    faults = BulkFaults(pending_polls=0, kickoff_status={1: 503}, fault_retry_after="86400")
    with FhirBulkServer(generate_dataset(20, seed=43).observations, faults=faults) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        connector = _connector(server, http={"rate_limit": {"max_pause_seconds": 3}})
        with structlog.testing.capture_logs() as logs:
            _, stats, _ = await asyncio.wait_for(_run(connector, store), 60)
        store.close()
        kicks = [r for r in server.requests if r.path.endswith("$export")]
    assert 2.5 <= kicks[1].at - kicks[0].at < 30
    assert stats.totals.records_in > 0
    clipped = next(e for e in logs if e["event"] == "upstream pause clipped to max_pause_seconds")
    assert clipped["asked"] == 86400 and clipped["seconds"] == 3.0


async def test_a_paused_upstream_shows_in_readyz_and_a_stopped_run_is_not_done(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    reset_limiters()
    faults = BulkFaults(pending_polls=0, kickoff_status={1: 429}, fault_retry_after="600")
    with FhirBulkServer(generate_dataset(20, seed=44).observations, faults=faults) as server:
        (tmp_path / "integrations").mkdir()
        (tmp_path / "inlet.yaml").write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
        integration = {
            "customer": "acme",
            "integration": "bulk",
            "plugin": "fhir.bulk_export",
            "zone": "Europe/Vienna",
            "settings": {
                **FAST,
                "http": {
                    "base_url": server.base_url,
                    "deadline_seconds": 3600,
                    "rate_limit": {"max_pause_seconds": 300},
                },
            },
        }
        (tmp_path / "integrations" / "acme.bulk.yaml").write_text(yaml.safe_dump(integration))
        sup_cfg, integrations = load_config(tmp_path)
        supervisor = Supervisor(sup_cfg, integrations, once=True)
        run = run_supervisor(supervisor)
        deadline = time.monotonic() + 30
        while paused_for("acme", "bulk") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        status = supervisor.status()["acme/bulk"]
        assert status is not None and "paused until" in status and "Retry-After: 600" in status, status
        supervisor.stop()
        stats = await asyncio.wait_for(run, 30)
    assert stats["acme/bulk"].interrupted is not None and "paused until" in stats["acme/bulk"].interrupted
    assert stats["acme/bulk"].totals.records_in == 0
