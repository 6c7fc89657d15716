"""Topic provisioning: which topics a configuration writes, ``inlet topics plan/apply``, the start-up check."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import check_config, load_config
from inlet.core.supervisor import Supervisor
from inlet.core.topics import TopicsMissing, required_topics
from tests.helpers import consume, write_config
from tools.servers.fhir import FhirTestServer
from tools.services import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 24 * 3600 * 1000


def _set(root: Path, **inlet_yaml: Any) -> None:
    doc = yaml.safe_load((root / "inlet.yaml").read_text())
    doc.update(inlet_yaml)
    (root / "inlet.yaml").write_text(yaml.safe_dump(doc))


def _two_integrations(tmp_path: Path, prefix: str = "") -> Path:
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir", kafka="127.0.0.1:9", topic_prefix=prefix)
    doc = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
    doc.update(customer="beta", drift={"shape": "shape.json"})
    (root / "integrations" / "beta.yaml").write_text(yaml.safe_dump(doc))
    (root / "shape.json").write_text("{}")
    return root


# --- which topics, with which settings (no broker) ---------------------------------------------------------


def test_every_topic_the_configuration_writes_with_its_settings(tmp_path: Path) -> None:
    root = _two_integrations(tmp_path, prefix="p.")
    _set(
        root,
        drift_topic_template="p.inlet.drift.{customer}.{integration}",
        topics={
            "replication_factor": 2,
            "contracts": {"retention_ms": 3 * DAY_MS},
            "dlq": {"configs": {"max.message.bytes": "2097152"}},
            "overrides": {
                "clinical.observation": {"partitions": 12, "retention_ms": -1},  # every major
                "p.clinical.observation.v1": {"partitions": 2},  # one topic
                "p.inlet.dlq.beta.observations": {"replication_factor": 3, "configs": {"min.insync.replicas": "1"}},
            },
        },
    )
    sup, loaded, errors = check_config(root, offline=True)
    assert not errors
    specs = {s.name: s for s in required_topics(sup, loaded)}
    # FHIR observations are published as v2 and, dual-published, as v1: both majors' topics are written.
    assert list(specs) == [
        "p.clinical.observation.v1",
        "p.clinical.observation.v2",
        "p.inlet.data_alert.v1",  # the data-quality monitors' alerts (on by default)
        "p.inlet.dlq.acme.observations",
        "p.inlet.dlq.beta.observations",
        "p.inlet.drift.beta.observations",
    ]
    v1, v2 = specs["p.clinical.observation.v1"], specs["p.clinical.observation.v2"]
    assert v1.writers == v2.writers == ("acme/observations", "beta/observations")
    assert v1.contracts == ("clinical.observation 1.0",) and v2.contracts == ("clinical.observation 2.0",)
    assert (v2.kind, v2.partitions, v2.replication_factor) == ("contract", 12, 2)
    assert v2.configs == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert v1.partitions == 2 and v1.configs["retention.ms"] == "-1"  # the topic's override over the contract's
    assert v2.configs_on(brokers=5)["min.insync.replicas"] == "1"  # one less than the replication
    acme, beta = specs["p.inlet.dlq.acme.observations"], specs["p.inlet.dlq.beta.observations"]
    assert (acme.kind, acme.partitions, acme.replication_factor) == ("dlq", 1, 2)
    assert acme.configs == {
        "cleanup.policy": "delete",
        "max.message.bytes": "2097152",
        "retention.ms": str(30 * DAY_MS),
    }
    assert beta.replication_factor == 3 and beta.configs_on(brokers=5)["min.insync.replicas"] == "1"
    assert specs["p.inlet.drift.beta.observations"].writers == ("beta/observations",)  # only it checks drift
    assert specs["p.inlet.data_alert.v1"].contracts == ("inlet.data_alert 1.0",)

    sup, acme_only, _ = check_config(root, only=["acme/observations"], offline=True)
    assert "p.inlet.dlq.beta.observations" not in {s.name for s in required_topics(sup, acme_only)}


def test_built_in_defaults_and_replication_on_small_clusters(tmp_path: Path) -> None:
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir", kafka="127.0.0.1:9")
    sup, loaded = load_config(root, offline=True)
    assert sup.topics.create == "auto"
    specs = {s.kind: s for s in required_topics(sup, loaded)}
    contract, dlq = specs["contract"], specs["dlq"]
    assert "drift" not in specs  # no drift checks configured: no alerts are written
    assert (contract.partitions, contract.configs) == (6, {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)})
    assert (dlq.partitions, dlq.configs) == (1, {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)})
    assert [contract.replication_on(n) for n in (1, 2, 3, 7)] == [1, 2, 3, 3]
    assert [contract.configs_on(n)["min.insync.replicas"] for n in (1, 2, 3, 7)] == ["1", "1", "2", "2"]


@pytest.mark.parametrize(
    ("topics", "problem"),
    [
        ({"contracts": {"configs": {"retention.ms": "1"}}}, "retention.ms (use retention_ms)"),
        ({"dlq": {"partitions": 0}}, "greater than or equal to 1"),
        ({"create": "sometimes"}, "create"),
        ({"partitions": 3}, "partitions"),
    ],
)
def test_wrong_topic_settings_are_config_errors(tmp_path: Path, topics: dict[str, Any], problem: str) -> None:
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir", kafka="127.0.0.1:9")
    _set(root, topics=topics)
    _, _, errors = check_config(root, offline=True)
    assert errors and problem in " ".join(str(e) for e in errors)


# --- against a broker that creates no topic by itself ------------------------------------------------------


def _inlet(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INLET_KAFKA_BOOTSTRAP", "INLET_CONFIG")}
    env.update(COLUMNS="250", INLET_LOG_FORMAT="json")
    return subprocess.run(
        [sys.executable, "-m", "inlet", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def _described(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Partitions and configs of each topic, as the cluster says."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()  # inside the try: a start that fails half-way is closed too
        existing = set(await admin.list_topics())
        present = [n for n in names if n in existing]
        if not present:
            return {}
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(present)}
        configs: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in present]):
            for r in response.to_object()["resources"]:
                configs[r["resource_name"]] = {e["config_names"]: e["config_value"] for e in r["config_entries"]}
        return {n: (partitions[n], configs[n]) for n in present}
    finally:
        await admin.close()


def _run_once(root: Path) -> tuple[Supervisor, Any]:
    sup_cfg, integrations = load_config(root)
    supervisor = Supervisor(sup_cfg, integrations, once=True)
    return supervisor, asyncio.run(asyncio.wait_for(supervisor.run(), 180))


@pytest.mark.kafka
@pytest.mark.slow
def test_missing_topics_refuse_the_run_until_apply_creates_them_as_configured(
    tmp_path: Path, kafka_broker_factory: Callable[..., KafkaBroker]
) -> None:
    started = time.monotonic()
    broker = kafka_broker_factory(overrides={"auto.create.topics.enable": "false"})
    resources = generate_observations(120, seed=8)
    wanted = [r for r in resources if r["status"] != "entered-in-error"]
    prefix = f"prov-{uuid.uuid4().hex[:8]}."
    names = [
        f"{prefix}clinical.observation.v1",
        f"{prefix}clinical.observation.v2",
        f"{prefix}inlet.dlq.acme.observations",
    ]
    with FhirTestServer(resources) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, kafka=broker.bootstrap, topic_prefix=prefix, page_size=40
        )
        _set(
            root,
            topics={
                "contracts": {"partitions": 3, "retention_ms": DAY_MS},
                "overrides": {f"{prefix}clinical.observation.v1": {"retention_ms": 2 * DAY_MS}},
            },
        )

        # 1. The start-up check refuses the run, naming every missing topic and the command, before reading.
        refused = _inlet("run", "--config", str(root), "--once")
        assert refused.returncode == 2, refused.stderr[-3000:]
        message = " ".join(refused.stderr.split())  # rich wraps long lines
        for name in names:
            assert name in message
        assert f"inlet topics apply --config {root}" in message
        assert "auto.create.topics.enable is false" in message
        sup_cfg, integrations = load_config(root)
        with pytest.raises(TopicsMissing):
            asyncio.run(Supervisor(sup_cfg, integrations, once=True).run())
        assert server.requests == [], "read the upstream although the run was refused"

        # 2. plan says what is missing (exit 1); apply creates it with the configured settings.
        plan = _inlet("topics", "plan", "--config", str(root))
        assert plan.returncode == 1 and "4 missing" in plan.stdout, plan.stdout + plan.stderr  # and the alerts topic
        apply = _inlet("topics", "apply", "--config", str(root))
        assert apply.returncode == 0, apply.stdout + apply.stderr
        assert all(f"created {name}" in apply.stdout for name in names)
        got = asyncio.run(_described(broker.bootstrap, names))
        v1, v2, dlq = (got[n] for n in names)
        assert v1[0] == v2[0] == 3 and dlq[0] == 1
        assert (v1[1]["retention.ms"], v2[1]["retention.ms"], dlq[1]["retention.ms"]) == (
            str(2 * DAY_MS),
            str(DAY_MS),
            str(30 * DAY_MS),
        )
        assert {c["cleanup.policy"] for _, c in got.values()} == {"delete"}
        assert {c["min.insync.replicas"] for _, c in got.values()} == {"1"}  # one broker: replication 1
        assert _inlet("topics", "plan", "--config", str(root)).returncode == 0

        # 3. Now the run succeeds.
        supervisor, stats = _run_once(root)
        s = stats["acme/observations"]
        assert not supervisor.failed and s.restarts == 0
        assert s.totals.records_in == len(resources) and s.totals.events_out == 2 * len(wanted)
        records = asyncio.run(consume(broker.bootstrap, [names[1]], expect=len(wanted), timeout=60))
        assert len(records) == len(wanted)

        # 4. A setting changed in the configuration: plan and apply report it, apply alters nothing.
        _set(
            root,
            topics={
                "contracts": {"partitions": 4, "retention_ms": DAY_MS},
                "overrides": {f"{prefix}clinical.observation.v1": {"retention_ms": 2 * DAY_MS}},
            },
        )
        plan = _inlet("topics", "plan", "--config", str(root), "--only", "acme/observations")
        assert plan.returncode == 1 and "3 differ" in plan.stdout, plan.stdout  # v1, v2 and the alerts topic
        assert f"{names[0]}: partitions: 3 (configured 4)" in plan.stdout
        apply = _inlet("topics", "apply", "--config", str(root))
        assert apply.returncode == 1 and "not altered" in apply.stdout
        assert asyncio.run(_described(broker.bootstrap, names))[names[0]][0] == 3

        # 5. topics.create: true creates missing topics at start-up (here: a new prefix's).
        other = f"prov-{uuid.uuid4().hex[:8]}."
        root2 = write_config(
            tmp_path / "created", base_url=server.base_url, kafka=broker.bootstrap, topic_prefix=other, page_size=40
        )
        _set(root2, topics={"create": True, "dlq": {"retention_ms": 5 * DAY_MS}})
        supervisor, stats = _run_once(root2)
        assert not supervisor.failed and stats["acme/observations"].totals.records_in == len(resources)
        created = asyncio.run(
            _described(broker.bootstrap, [f"{other}clinical.observation.v2", f"{other}inlet.dlq.acme.observations"])
        )
        assert created[f"{other}clinical.observation.v2"][0] == 6
        assert created[f"{other}inlet.dlq.acme.observations"][1]["retention.ms"] == str(5 * DAY_MS)
    print(f"provisioning test: {time.monotonic() - started:.1f} s")


@pytest.mark.kafka
async def test_a_broker_that_creates_topics_itself_gets_them_created_as_configured(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """``create: auto`` on a development broker: inlet creates its topics with the configured settings instead of
    letting the first event create them with the broker's defaults (1 partition)."""
    prefix = f"auto-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(generate_observations(20, seed=9)) as server:
        root = write_config(tmp_path, base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix)
        sup_cfg, integrations = load_config(root)
        await Supervisor(sup_cfg, integrations, once=True).run()
    got = await _described(
        kafka_bootstrap, [f"{prefix}clinical.observation.v2", f"{prefix}inlet.dlq.acme.observations"]
    )
    assert got[f"{prefix}clinical.observation.v2"][0] == 6
    assert got[f"{prefix}inlet.dlq.acme.observations"][1]["retention.ms"] == str(30 * DAY_MS)


def test_topics_commands_need_kafka_configured(tmp_path: Path) -> None:
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir")
    result = _inlet("topics", "plan", "--config", str(root))
    assert result.returncode == 2 and "no Kafka configured" in result.stderr


# --- the fleet's positions topic ----------------------------------------------------------------------------


def test_a_fleet_adds_its_compacted_positions_topic(tmp_path: Path) -> None:
    root = _two_integrations(tmp_path)
    _set(root, topics={"replication_factor": 2}, fleet={"group": "g", "positions_topic": "p.positions"})
    sup, loaded, errors = check_config(root, offline=True)
    assert not errors
    specs = required_topics(sup, loaded)
    positions = specs[-1]  # after contract, DLQ and drift topics
    assert (positions.name, positions.kind, positions.partitions, positions.replication_factor) == (
        "p.positions",
        "positions",
        1,
        2,
    )
    assert positions.configs == {"cleanup.policy": "compact"}  # no retention.ms: a quiet integration's stays
    assert positions.writers == ("acme/observations", "beta/observations")
    assert [s.kind for s in specs].count("positions") == 1

    _set(root, topics={"overrides": {"p.positions": {"partitions": 3, "configs": {"segment.ms": "3600000"}}}})
    sup, loaded, _ = check_config(root, offline=True)
    positions = next(s for s in required_topics(sup, loaded) if s.kind == "positions")
    assert positions.partitions == 3 and positions.configs == {"cleanup.policy": "compact", "segment.ms": "3600000"}

    _set(root, fleet=None)
    sup, loaded, _ = check_config(root, offline=True)
    assert "positions" not in {s.kind for s in required_topics(sup, loaded)}


@pytest.mark.kafka
async def test_apply_creates_the_positions_topic_compacted(tmp_path: Path, kafka_bootstrap: str) -> None:
    from inlet.core.config import KafkaSettings
    from inlet.core.topics import create_missing, plan_topics

    topic = f"pos-{uuid.uuid4().hex[:8]}.positions"
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir", kafka=kafka_bootstrap)
    _set(root, fleet={"group": "g", "positions_topic": topic})
    sup, loaded, errors = check_config(root, offline=True)
    assert not errors
    specs = [s for s in required_topics(sup, loaded) if s.kind == "positions"]
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    plan = await plan_topics(kafka, specs)
    assert [s.spec.name for s in plan.missing] == [topic]
    assert await create_missing(kafka, plan) == {topic: None}
    partitions, configs = (await _described(kafka_bootstrap, [topic]))[topic]
    assert partitions == 1 and configs["cleanup.policy"] == "compact"
    assert (await plan_topics(kafka, specs)).states[0].status == "ok"
