"""The operations API on the metrics port (core.api, core.status, core.control) against real upstreams and Kafka."""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from typer.testing import CliRunner

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.api import OPENAPI, ROUTES, openapi_routes
from inlet.core.cli import app
from inlet.core.config import load_config
from inlet.core.sinks.outbox import read_outbox
from inlet.core.supervisor import Supervisor
from tests.helpers import write_config
from tools.servers.fhir import FhirTestServer
from tools.services import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
Resource = dict[str, Any]


def bad_observation(template: Resource, rid: str) -> Resource:
    """An Observation without ``code``: it breaks the contract (stage validate) and carries script markup."""
    bad = copy.deepcopy(template)
    bad["id"] = rid
    bad.pop("code", None)
    bad.pop("valueQuantity", None)
    bad["valueString"] = SCRIPT
    return bad


def coded_observation(template: Resource, rid: str, code: str, value: float = 7.5) -> Resource:
    """A final Observation of ``code`` (any text an upstream may send) with a number: the data-quality monitors
    name a numeric series and count a code after it."""
    odd = copy.deepcopy(template)
    for name in [k for k in odd if k.startswith("value") or k == "component"]:
        del odd[name]
    odd.update(
        id=rid,
        status="final",
        code={"coding": [{"system": "urn:test:local-codes", "code": code}], "text": "local test"},
        valueQuantity={"value": value, "unit": "mg"},
    )
    return odd


def api_config(
    tmp_path: Path,
    *,
    base_url: str,
    customer: str,
    kafka: str | None = None,
    topic_prefix: str = "",
    page_size: int = 50,
    poll_interval_seconds: float = 3600.0,
    http: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
) -> Path:
    """A config (one FHIR search integration ``<customer>/observations``) serving the metrics port on a free
    port. A customer of its own per test: the Prometheus counters are process-wide."""
    root = write_config(
        tmp_path,
        base_url=base_url,
        kafka=kafka,
        topic_prefix=topic_prefix,
        page_size=page_size,
        poll_interval_seconds=poll_interval_seconds,
        http=http,
    )
    sup = yaml.safe_load((root / "inlet.yaml").read_text())
    sup["metrics_port"] = 0
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    path = root / "integrations" / "acme.yaml"
    integration = yaml.safe_load(path.read_text())
    integration["customer"] = customer
    if auth is not None:
        integration["settings"]["http"]["auth"] = auth
    path.write_text(yaml.safe_dump(integration))
    return root


async def settled(count: Callable[[], int], quiet: float = 1.0, deadline: float = 60.0) -> int:
    """``count()`` once it has stayed the same for ``quiet`` seconds (or at ``deadline``: the caller's next check
    then fails if it still moves)."""
    end = asyncio.get_running_loop().time() + deadline
    last = count()
    while True:
        await asyncio.sleep(quiet)
        now = count()
        if now == last or asyncio.get_running_loop().time() > end:
            return now
        last = now


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def base(supervisor: Supervisor) -> str:
    assert supervisor.health is not None
    return f"http://127.0.0.1:{supervisor.health.port}"


async def get_json(client: httpx.AsyncClient, url: str, status: int = 200) -> Any:
    response = await client.get(url)
    assert response.status_code == status, response.text
    return orjson.loads(response.content)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample's values over the series matching ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def test_counts_dlq_reasons_and_metrics_agree_after_a_known_run(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
) -> None:
    resources = generate_observations(230, seed=11)
    resources.append(bad_observation(resources[3], "bad-1"))
    wanted = [r for r in resources if r["status"] != "entered-in-error" and r["id"] != "bad-1"]
    customer = f"counts{uuid.uuid4().hex[:6]}"
    with FhirTestServer(resources) as server:
        root = api_config(tmp_path, base_url=server.base_url, customer=customer, page_size=40)
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        key = f"{customer}/observations"
        stats = supervisor.stats[key]
        await wait_for(lambda: stats.state == "caught_up", 60, "the first pass")
        client = aclosing(httpx.AsyncClient(timeout=30))
        doc = await get_json(client, f"{base(supervisor)}/api/integrations/{key}")
        listed = await get_json(client, f"{base(supervisor)}/api/integrations")
        metrics = (await client.get(f"{base(supervisor)}/metrics")).text
        topics = await get_json(client, f"{base(supervisor)}/api/topics")
        contracts = await get_json(client, f"{base(supervisor)}/api/contracts")

    filtered = len(resources) - len(wanted) - 1
    assert doc["state"] == "caught_up" and doc["healthy"] and listed["ready"] is True
    assert doc["replica"] == supervisor.replica == listed["replica"] and listed["fleet"] is None  # runs here
    assert doc["counts"] == {
        "records_in": len(resources),
        "events_out": 2 * len(wanted),  # clinical.observation v2 and, dual-published, v1
        "dlq": 1,
        "filtered": filtered,
    }
    assert doc["dlq_by_stage"] == {"validate": 1}
    [reason] = doc["dlq_reasons"]
    assert (reason["stage"], reason["error_type"], reason["count"]) == ("validate", "ValidationError", 1)
    assert "code" in reason["message"]
    [recent] = doc["recent_dlq"]
    assert recent["stage"] == "validate" and SCRIPT in recent["payload_preview"]
    assert doc["last_success"] is not None and doc["restarts"] == 0 and doc["last_error"] is None
    assert doc["lag_seconds"] is not None and doc["lag_seconds"] > 0  # the synthetic data is from 2024
    assert doc["watermark_age_seconds"] is not None and doc["watermark_age_seconds"] > 0
    [entry] = listed["integrations"]
    assert entry["counts"] == doc["counts"] and entry["recent_dlq"] == []  # the list leaves the previews out
    labels = {"customer": customer, "integration": "observations"}
    assert metric(metrics, "inlet_records_in_total", **labels) == doc["counts"]["records_in"]
    assert metric(metrics, "inlet_events_out_total", **labels) == doc["counts"]["events_out"]
    assert metric(metrics, "inlet_dlq_records_total", **labels, stage="validate") == 1
    assert metric(metrics, "inlet_filtered_records_total", **labels) == filtered
    names = {t["name"]: t for t in topics["topics"]}
    assert set(names) == {
        "clinical.observation.v1",
        "clinical.observation.v2",
        "inlet.data_alert.v1",  # its data-quality monitors are on (the default)
        f"inlet.dlq.{customer}.observations",
    }
    assert names[f"inlet.dlq.{customer}.observations"]["kind"] == "dlq"
    assert {(c["name"], c["version"], c["topic"]) for c in contracts["contracts"]} == {
        ("clinical.observation", "1.0", "clinical.observation.v1"),
        ("clinical.observation", "2.0", "clinical.observation.v2"),
    }


def _concrete(template: str, key: str) -> str:
    customer, integration = key.split("/")
    return template.replace("{customer}", customer).replace("{integration}", integration)


async def test_the_openapi_document_covers_exactly_the_routes_served(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INLET_API_TOKEN", raising=False)
    assert OPENAPI["openapi"].startswith("3.1")
    assert openapi_routes() == set(ROUTES)
    # The docs page includes the document from a file: the same one.
    assert orjson.loads((ROOT / "docs" / "reference" / "openapi.json").read_bytes()) == orjson.loads(
        orjson.dumps(OPENAPI)
    )
    with FhirTestServer(generate_observations(20, seed=1)) as server:
        root = api_config(tmp_path, base_url=server.base_url, customer=f"routes{uuid.uuid4().hex[:6]}")
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        await wait_for(lambda: supervisor.health is not None, 30, "the metrics port")
        key = next(iter(supervisor.stats))
        await wait_for(lambda: key in supervisor.monitors, 30, "its monitors (/api/monitors/{customer}/...)")
        client = aclosing(httpx.AsyncClient(timeout=30))
        served = await get_json(client, f"{base(supervisor)}/api/openapi.json")
        assert served == orjson.loads(orjson.dumps(OPENAPI))
        for method, template in sorted(ROUTES):
            response = await client.request(method, base(supervisor) + _concrete(template, key))
            documented = served["paths"][template][method.lower()]["responses"]
            assert str(response.status_code) in documented, (method, template, response.status_code)
            assert response.status_code != 404
        for path in ("/api/nothing", "/api/integrations/no/such", "/console/no/such", "/nothing"):
            assert (await client.get(base(supervisor) + path)).status_code == 404, path
        assert (await client.post(f"{base(supervisor)}/api/integrations")).status_code == 405
        # Actions are disabled without a token, saying how to enable them.
        refused = await client.post(f"{base(supervisor)}/api/integrations/{key}/pause")
        assert refused.status_code == 403 and "INLET_API_TOKEN" in refused.json()["error"]


@pytest.mark.kafka
@pytest.mark.slow
async def test_ready_and_state_follow_kafka_going_away_and_coming_back(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
    kafka_broker_factory: Callable[..., KafkaBroker],
) -> None:
    broker = kafka_broker_factory()
    prefix = f"api-{uuid.uuid4().hex[:8]}."
    customer = f"outage{uuid.uuid4().hex[:6]}"
    start = datetime(2024, 3, 1, tzinfo=UTC)
    with FhirTestServer(generate_observations(50, seed=5, start=start)) as server:
        root = api_config(
            tmp_path,
            base_url=server.base_url,
            customer=customer,
            kafka=broker.bootstrap,
            topic_prefix=prefix,
            poll_interval_seconds=0.3,
        )
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        key = f"{customer}/observations"
        stats = supervisor.stats[key]
        client = aclosing(httpx.AsyncClient(timeout=30))

        async def feed() -> None:  # new data on every poll, so the integration keeps writing to Kafka
            for n in range(1, 10_000):
                server.add(generate_observations(3, seed=100 + n, start=start + timedelta(days=n)))
                await asyncio.sleep(0.3)

        feeder = asyncio.create_task(feed())
        try:
            await wait_for(lambda: stats.totals.events_out > 100, 90, "events on Kafka")
            ready = await client.get(f"{base(supervisor)}/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True

            await asyncio.to_thread(broker.stop)
            await wait_for(lambda: stats.state == "backing_off", 90, "backing off without Kafka")
            ready = await client.get(f"{base(supervisor)}/readyz")
            assert ready.status_code == 503 and key in ready.json()["unhealthy"]
            doc = await get_json(client, f"{base(supervisor)}/api/integrations")
            assert doc["ready"] is False
            [entry] = doc["integrations"]
            assert entry["healthy"] is False and entry["restarts"] >= 1 and entry["last_error"]
            assert entry["state"] in ("backing_off", "running")  # running: between two attempts

            await asyncio.to_thread(broker.start)
            await wait_for(lambda: stats.healthy and stats.state in ("running", "caught_up"), 120, "Kafka back")
            ready = await client.get(f"{base(supervisor)}/readyz")
            assert ready.status_code == 200, ready.text
            doc = await get_json(client, f"{base(supervisor)}/api/integrations/{key}")
            assert doc["healthy"] is True and doc["state"] in ("running", "caught_up")
        finally:
            feeder.cancel()


async def test_pause_stops_reading_resume_continues_restart_restarts_and_tokens_are_checked(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("INLET_API_TOKEN", token)
    monkeypatch.delenv("INLET_API_URL", raising=False)
    resources = generate_observations(2000, seed=8)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    customer = f"pause{uuid.uuid4().hex[:6]}"
    key = f"{customer}/observations"
    with FhirTestServer(resources, page_delay=0.05) as server:
        root = api_config(tmp_path, base_url=server.base_url, customer=customer, page_size=25)
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        stats = supervisor.stats[key]
        client = aclosing(httpx.AsyncClient(timeout=30))
        await wait_for(lambda: stats.totals.records_in >= 200, 60, "reading")
        url = f"{base(supervisor)}/api/integrations/{key}"

        # Refused: no token, a wrong one, a GET of an action.
        assert (await client.post(f"{url}/pause")).status_code == 401
        wrong = await client.post(f"{url}/pause", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert (await client.get(f"{url}/pause")).status_code == 405
        assert stats.state == "running"

        # Pause (through the CLI, the token from INLET_API_TOKEN): no request reaches the upstream while paused.
        runner = CliRunner()
        result = await asyncio.to_thread(runner.invoke, app, ["pause", key, "--url", base(supervisor)])
        assert result.exit_code == 0, result.output
        await wait_for(lambda: stats.state == "paused", 60, "paused")
        # The server logs a request once answered: one sent before the pause (its read abandoned) may land late.
        requests = await settled(lambda: len(server.requests))
        records_in = stats.totals.records_in
        assert records_in < len(resources), "finished before the pause: not paused mid-run"
        await asyncio.sleep(2.0)
        assert len(server.requests) == requests, "an upstream request while paused"
        assert stats.totals.records_in == records_in
        doc = await get_json(client, url)
        assert doc["state"] == "paused" and doc["healthy"] is True

        status = await asyncio.to_thread(runner.invoke, app, ["status", "--url", base(supervisor), "--json"])
        assert status.exit_code == 0 and orjson.loads(status.stdout)["integrations"][0]["state"] == "paused"
        table = await asyncio.to_thread(runner.invoke, app, ["status", "--url", base(supervisor)])
        assert table.exit_code == 0 and "paused" in table.stdout

        # Resume: on from the checkpoint to the end.
        resumed = await client.post(f"{url}/resume", headers={"Authorization": f"Bearer {token}"})
        assert resumed.status_code == 202 and resumed.json()["state_before"] == "paused"
        await wait_for(lambda: stats.state == "caught_up", 120, "caught up after the resume")

        # Restart: the connector is built again and reads now (the poll interval is an hour).
        requests = len(server.requests)
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        monkeypatch.delenv("INLET_API_TOKEN")
        bad = await asyncio.to_thread(runner.invoke, app, ["restart", key, "--url", base(supervisor)])
        assert bad.exit_code == 1 and "401" in bad.output
        result = await asyncio.to_thread(
            runner.invoke, app, ["restart", key, "--url", base(supervisor), "--token-file", str(token_file)]
        )
        assert result.exit_code == 0, result.output
        await wait_for(lambda: len(server.requests) > requests, 60, "a request after the restart")
        await wait_for(lambda: stats.state == "caught_up", 60, "caught up after the restart")

    rows = read_outbox(root / "state" / "outbox.sqlite", limit=1_000_000, topic="clinical.observation.v1")
    ids = [orjson.loads(r.value)["observation_id"] for r in rows]
    assert set(ids) == wanted, "a gap after the resume"
    assert len(ids) == len(set(ids)), "a duplicate after the resume"


async def test_a_planted_secret_never_appears_in_the_api_the_console_the_metrics_or_the_logs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("API_TEST_UPSTREAM_KEY", secret)
    resources = generate_observations(40, seed=9)
    leaky = bad_observation(resources[0], "leaky-1")
    leaky["valueString"] = f"key={secret} and {secret}"  # the upstream echoes the key into a bad record
    resources.append(leaky)
    # ... and into a good one's code, which the data-quality monitors name a series after.
    resources.append(coded_observation(resources[1], "leaky-2", f"key={secret}"))
    customer = f"secret{uuid.uuid4().hex[:6]}"
    with FhirTestServer(resources) as server:
        root = api_config(
            tmp_path,
            base_url=server.base_url,
            customer=customer,
            auth={"kind": "bearer", "token": {"env": "API_TEST_UPSTREAM_KEY"}},
        )
        # A second integration with the same secret whose upstream is away: it fails and shows its error.
        broken = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
        broken["integration"] = "away"
        broken["settings"]["http"].update(base_url="http://127.0.0.1:9/fhir", max_attempts=1)
        (root / "integrations" / "away.yaml").write_text(yaml.safe_dump(broken))
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        good, away = supervisor.stats[f"{customer}/observations"], supervisor.stats[f"{customer}/away"]
        await wait_for(lambda: good.state == "caught_up" and away.restarts >= 1, 60, "a pass and a failure")
        client = aclosing(httpx.AsyncClient(timeout=30))
        bodies = {}
        for method, template in ROUTES:
            if method == "GET":
                for key in supervisor.stats:
                    path = _concrete(template, key)
                    bodies[path] = (await client.get(base(supervisor) + path)).text
        bodies["/metrics"] = (await client.get(base(supervisor) + "/metrics")).text
    logs = capsys.readouterr()
    bodies["logs"] = logs.out + logs.err
    assert customer in bodies["/metrics"] and "away" in bodies["logs"]  # both were scanned with content in them
    assert len(bodies) > 10
    assert "api_test_upstream_key" not in bodies["/api/status"].lower()
    assert [p for p, body in bodies.items() if secret in body] == []
    doc = orjson.loads(bodies[f"/api/integrations/{customer}/observations"])
    assert doc["recent_dlq"] and "***" in doc["recent_dlq"][0]["payload_preview"]
    watched = orjson.loads(bodies[f"/api/monitors/{customer}/observations"])
    assert "key=***" in [n["series"] for n in watched["numeric"]]
