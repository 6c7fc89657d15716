"""Upstream drift end to end: each kind of drift is an alert event on Kafka and a metric; the policy decides."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import REGISTRY

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.drift import learn
from inlet.core.supervisor import Supervisor
from tests.helpers import consume, write_config
from tools.servers.fhir import FhirTestServer

pytestmark = pytest.mark.kafka


def _drifted(template: dict[str, Any]) -> list[dict[str, Any]]:
    renamed = copy.deepcopy(template)
    renamed["id"] = "drift-renamed"
    renamed["issuedAt"] = renamed.pop("issued")  # the EHR renamed a field we depend on
    as_text = copy.deepcopy(template)
    as_text["id"] = "drift-string"
    as_text["valueQuantity"]["value"] = str(as_text["valueQuantity"]["value"])  # a number became a string
    new_enum = copy.deepcopy(template)
    new_enum["id"] = "drift-enum"
    new_enum["category"][0]["coding"][0]["code"] = "imaging"  # a category value never seen before
    return [renamed, as_text, new_enum]


def _alerts(kind: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "inlet_drift_alerts_total", {"customer": "acme", "integration": "observations", "kind": kind}
        )
        or 0.0
    )


@pytest.mark.parametrize("policy", ["map", "dlq"])
async def test_drift_alerts_reach_kafka_and_the_policy_decides_the_records_fate(
    tmp_path: Path, kafka_bootstrap: str, policy: str
) -> None:
    sample = generate_observations(200, seed=1)
    quantity = next(
        r for r in sample if "valueQuantity" in r and r["category"][0]["coding"][0]["code"] == "vital-signs"
    )
    records = [*generate_observations(40, seed=1), *_drifted(quantity)]
    for r in records[-3:]:
        r["meta"] = dict(records[39]["meta"])
    (tmp_path / "shape.json").write_text(learn(sample).to_json())
    prefix = f"drift-{uuid.uuid4().hex[:8]}."
    before = {k: _alerts(k) for k in ("field_missing", "type_changed", "enum_value")}
    with FhirTestServer(records) as server:
        root = write_config(tmp_path / "cfg", base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix)
        doc = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
        doc["drift"] = {"shape": str(tmp_path / "shape.json"), "policy": policy}
        (root / "integrations" / "acme.yaml").write_text(yaml.safe_dump(doc))
        inlet_yaml = yaml.safe_load((root / "inlet.yaml").read_text())
        inlet_yaml["drift_topic_template"] = prefix + "inlet.drift.{customer}.{integration}"
        (root / "inlet.yaml").write_text(yaml.safe_dump(inlet_yaml))
        sup_cfg, integrations = load_config(root)
        stats = (await Supervisor(sup_cfg, integrations, once=True).run())["acme/observations"]

    alerts = await consume(kafka_bootstrap, [f"{prefix}inlet.drift.acme.observations"], expect=3)
    by_record = {orjson.loads(r.value)["source_key"]: orjson.loads(r.value)["changes"] for r in alerts}
    assert by_record.keys() == {"Observation/drift-renamed", "Observation/drift-string", "Observation/drift-enum"}
    assert {(c["kind"], c["path"]) for c in by_record["Observation/drift-renamed"]} >= {("field_missing", "issued")}
    assert [c["kind"] for c in by_record["Observation/drift-string"]] == ["type_changed"]
    assert by_record["Observation/drift-string"][0]["path"] == "valueQuantity.value"
    assert [c["kind"] for c in by_record["Observation/drift-enum"]] == ["enum_value"]
    assert dict(alerts[0].headers)["ce_type"] == b"inlet.drift"
    for kind, count in before.items():
        assert _alerts(kind) > count, f"no {kind} metric"

    # Observations are dual-published (clinical.observation v2.0 and v1.0): events_out counts both topics.
    events = await consume(
        kafka_bootstrap,
        [f"{prefix}clinical.observation.v1", f"{prefix}clinical.observation.v2"],
        expect=stats.totals.events_out,
    )
    mapped = {orjson.loads(r.value)["observation_id"] for r in events}
    drifted = {"drift-renamed", "drift-string", "drift-enum"}
    t = stats.totals
    assert t.balanced() and t.drift >= 3
    if policy == "map":
        assert drifted <= mapped and t.dlq.total() == 0  # mapped anyway, but never silently
    else:
        assert not drifted & mapped and t.dlq["decode"] == 3
        dlq = await consume(kafka_bootstrap, [f"{prefix}inlet.dlq.acme.observations"], expect=3)
        assert {dict(r.headers)["dlq_error_type"] for r in dlq} == {b"UpstreamDrift"}
        assert all(b"upstream drift" in dict(r.headers)["dlq_error_message"] for r in dlq)
