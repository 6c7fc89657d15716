"""The FHIR slice end to end onto the real Kafka broker, read back and compared header by header."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from inlet.connectors.fhir.search import FhirObservationSearchConnector
from inlet.core import exact_json
from inlet.core.config import load_config
from inlet.core.connector import Batch
from inlet.core.envelope import Enveloper, event_id, integration_namespace
from inlet.core.pipeline import process_batch
from inlet.core.supervisor import Supervisor
from inlet.core.time import normalise
from tests.helpers import consume, header_map, write_config
from tools.servers.fhir import FhirTestServer, synthea_observations

pytestmark = pytest.mark.kafka


async def test_synthea_observations_reach_kafka_as_the_expected_cloudevents(
    tmp_path: Path, kafka_bootstrap: str, sample_data: Path
) -> None:
    resources = synthea_observations(sample_data)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, kafka=kafka_bootstrap, topic_prefix=prefix, page_size=200
        )
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations, once=True)
        stats = (await supervisor.run())["acme/observations"]
    assert supervisor.failed == {}
    totals = stats.totals
    assert totals.records_in == len(resources) and totals.balanced()
    assert totals.dlq.total() == 0, "every Synthea Observation maps to clinical.observation v1"

    # Dual publishing: every Observation as clinical.observation v2.0 and, converted from it, v1.0.
    topic, topic_v2 = f"{prefix}clinical.observation.v1", f"{prefix}clinical.observation.v2"
    assert totals.events_out == 2 * totals.records_mapped
    records = await consume(kafka_bootstrap, [topic, topic_v2], expect=totals.events_out)
    assert len(records) == totals.events_out

    # Expected events, computed offline by the same connector's pure hooks from the same resources.
    connector = FhirObservationSearchConnector(integrations[0].context, integrations[0].settings)  # type: ignore[arg-type]
    env = Enveloper("acme", "observations", topic_template=prefix + "{name}.v{major}")
    # The records as the connector reads them off a page (core.exact_json: decimals exact), not as orjson would.
    as_read = [exact_json.loads(orjson.dumps(r)) for r in resources]
    expected, _ = process_batch(connector, env, Batch(as_read, {}))
    got = {dict(r.headers)["ce_id"].decode(): r for r in records}
    assert len(got) == len(expected), "no duplicates on a clean run"
    for event in expected:
        rec = got[event.id]
        assert rec.topic == event.topic
        assert rec.key == event.key
        assert rec.value == event.value
        assert list(rec.headers) == event.headers

    # And independently of the pipeline's code: what the CloudEvents headers must say for one resource.
    source = resources[0]
    rec = next(r for r in records if r.topic == topic and orjson.loads(r.value)["observation_id"] == source["id"])
    rec_v2 = next(r for r in records if r.topic == topic_v2 and orjson.loads(r.value)["observation_id"] == source["id"])
    h = header_map(rec)
    version = source["meta"]["versionId"]
    name = f"Observation/{source['id']}\x1f{version}\x1fclinical.observation\x1f0"
    assert h["ce_id"].decode() == str(uuid.uuid5(integration_namespace("acme", "observations"), name))
    assert h["ce_id"].decode() == event_id(
        integration_namespace("acme", "observations"), f"Observation/{source['id']}", version, "clinical.observation", 0
    )
    assert header_map(rec_v2)["ce_id"].decode() == event_id(
        integration_namespace("acme", "observations"),
        f"Observation/{source['id']}",
        version,
        "clinical.observation.v2",
        0,
    )
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_source"] == b"/customers/acme/integrations/observations"
    assert h["ce_type"] == b"clinical.observation"
    assert h["ce_subject"] == f"Observation/{source['id']}".encode()
    assert h["ce_dataschema"] == b"urn:inlet:contract:clinical.observation:1.0"
    assert h["content-type"] == b"application/json"
    assert h["ce_customer"] == b"acme" and h["ce_integration"] == b"observations"
    assert h["ce_contractversion"] == b"1.0"
    effective = normalise(source["effectiveDateTime"]).utc
    assert h["ce_time"] == effective.isoformat().replace("+00:00", "Z").encode()
    payload = orjson.loads(rec.value)
    # The key is the patient id, whether the reference reads Patient/<id> or urn:uuid:<id>.
    assert rec.key == source["subject"]["reference"].split("/")[-1].split(":")[-1].encode()
    assert payload["code"][0]["code"] == source["code"]["coding"][0]["code"]
    if "valueQuantity" in source:
        assert payload["value"]["value"] == source["valueQuantity"]["value"]
        # v2.0 carries the decimal the server wrote (the test server writes what orjson read: repr)
        assert orjson.loads(rec_v2.value)["value"]["value"] == exact_json.number_text(source["valueQuantity"]["value"])
        assert payload["value"]["unit"] == source["valueQuantity"]["unit"]
