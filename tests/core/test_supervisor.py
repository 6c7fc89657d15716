"""The supervisor: one failing integration never takes the others down; SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.sinks.outbox import read_outbox
from inlet.core.supervisor import Supervisor
from tests.helpers import write_config
from tools.servers.fhir import FhirTestServer

ROOT = Path(__file__).resolve().parents[2]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failing_integration_is_restarted_with_backoff_and_the_others_run_on(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    resources = generate_observations(300, seed=2)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, page_size=40, poll_interval_seconds=0.2)
        broken = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
        broken["customer"] = "broken"
        broken["settings"]["http"].update(base_url=f"http://127.0.0.1:{_dead_port()}/fhir", max_attempts=1)
        (root / "integrations" / "broken.yaml").write_text(yaml.safe_dump(broken))
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations)
        run = run_supervisor(supervisor)
        good, bad = supervisor.stats["acme/observations"], supervisor.stats["broken/observations"]
        deadline = time.monotonic() + 30
        while (good.totals.records_mapped < len(wanted) or bad.restarts < 3) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not run.done()
        supervisor.stop()
        await asyncio.wait_for(run, 10)
    # Each Observation as clinical.observation v2.0 and v1.0 (dual publishing).
    assert good.totals.records_mapped == len(wanted) and good.totals.events_out == 2 * len(wanted)
    assert good.restarts == 0
    assert bad.restarts >= 3 and "ConnectError" in (bad.last_error or "")
    assert bad.totals.records_in == 0


def test_sigterm_drains_commits_and_exits_zero_then_resumes_without_duplicates(tmp_path: Path) -> None:
    resources = generate_observations(3000, seed=4)
    wanted = sorted(r["id"] for r in resources if r["status"] != "entered-in-error")
    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}  # the outbox sink, on purpose
    with FhirTestServer(resources, page_delay=0.02) as server:
        root = write_config(tmp_path, base_url=server.base_url, page_size=50)
        outbox = root / "state" / "outbox.sqlite"
        cmd = [sys.executable, "-m", "inlet", "run", "--config", str(root)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(read_outbox(outbox, limit=10)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        after_drain = [
            orjson.loads(r.value)["observation_id"]
            for r in read_outbox(outbox, limit=100_000)
            if r.topic == "clinical.observation.v1"
        ]
        assert 0 < len(after_drain) < len(wanted), "SIGTERM was not mid-stream"
        resumed = subprocess.run([*cmd, "--once"], cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
        assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    rows = read_outbox(outbox, limit=100_000)
    # The drain committed every position whose events were in the outbox: the restart re-emits nothing, in
    # either major (clinical.observation v2.0 and v1.0 are dual-published).
    for topic in ("clinical.observation.v1", "clinical.observation.v2"):
        everything = sorted(orjson.loads(r.value)["observation_id"] for r in rows if r.topic == topic)
        assert everything == wanted, topic


async def test_health_endpoints_report_liveness_readiness_and_metrics(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    import httpx

    resources = generate_observations(50, seed=6)
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, poll_interval_seconds=0.2)
        broken = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
        broken["customer"] = "broken"
        broken["settings"]["http"].update(base_url=f"http://127.0.0.1:{_dead_port()}/fhir", max_attempts=1)
        (root / "integrations" / "broken.yaml").write_text(yaml.safe_dump(broken))
        (root / "inlet.yaml").write_text((root / "inlet.yaml").read_text() + "metrics_port: 0\n")
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations)
        run = run_supervisor(supervisor)
        while supervisor.health is None or supervisor.stats["broken/observations"].restarts < 1:
            await asyncio.sleep(0.05)
        while supervisor.stats["acme/observations"].totals.events_out < 40:
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{supervisor.health.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            live = await client.get("/healthz")
            ready = await client.get("/readyz")
            metrics = await client.get("/metrics")
        supervisor.stop()
        await asyncio.wait_for(run, 10)
    assert live.status_code == 200 and live.json()["ok"] is True
    assert ready.status_code == 503
    assert set(ready.json()["unhealthy"]) == {"broken/observations"}
    assert "ConnectError" in ready.json()["unhealthy"]["broken/observations"]
    assert 'inlet_events_out_total{customer="acme",integration="observations"}' in metrics.text
    assert 'inlet_restarts_total{customer="broken",error="UpstreamError",integration="observations"}' in metrics.text


async def test_once_gives_up_on_a_failing_integration_and_says_so_last(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    root = write_config(
        tmp_path, base_url=f"http://127.0.0.1:{_dead_port()}/fhir", page_size=40, poll_interval_seconds=0.2
    )
    doc = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
    doc["settings"]["http"]["max_attempts"] = 1
    (root / "integrations" / "acme.yaml").write_text(yaml.safe_dump(doc))
    sup_cfg, integrations = load_config(root)
    supervisor = Supervisor(sup_cfg, integrations, once=True)
    with capture_logs() as logs:
        await asyncio.wait_for(supervisor.run(), 60)
    assert "acme/observations" in supervisor.failed
    events = [e["event"] for e in logs if e.get("integration") == "observations"]
    assert events[-1] == "integration given up after repeated failures"  # no "restarting ... retry_in" after it
    assert events.count("integration failed; restarting from its last checkpoint") == 2  # 3 failures: 2 retries


def test_sink_kafka_without_a_bootstrap_is_a_config_error_naming_what_to_set(tmp_path: Path) -> None:
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir")
    sup = yaml.safe_load((root / "inlet.yaml").read_text())
    (root / "inlet.yaml").write_text(yaml.safe_dump({**sup, "sink": "kafka"}))
    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}
    env["COLUMNS"] = "200"
    run = subprocess.run(
        [sys.executable, "-m", "inlet", "run", "--once", "--config", str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "file inlet.yaml, key kafka.bootstrap: sink: kafka needs a Kafka to write to" in run.stderr
    assert "INLET_KAFKA_BOOTSTRAP" in run.stderr
