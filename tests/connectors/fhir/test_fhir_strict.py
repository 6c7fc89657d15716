"""Strict mode: the full FHIR R4B model check, opt-in, with errors naming the element path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from inlet.connectors.fhir.strict import validate_strict
from inlet.core.errors import DecodeError

BASE = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "Body weight"}}


def test_valid_resources_from_the_hl7_examples_pass(sample_data: Path) -> None:
    checked = 0
    for path in sorted(sample_data.glob("fhir/**/*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("resourceType") in ("Observation", "Patient", "Encounter"):
            validate_strict(doc)
            checked += 1
    assert checked > 10


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"valueQuantity": {"value": "heavy"}}, "valueQuantity.value"),
        ({"effectiveDateTime": "2024-13-40"}, "effectiveDateTime"),
        ({"bogusElement": 1}, "bogusElement"),
        ({"subject": "Patient/1"}, "subject"),
    ],
)
def test_structural_errors_name_the_element(change: dict[str, object], path: str) -> None:
    with pytest.raises(DecodeError, match=rf"Observation/o1: not valid FHIR R4: {path}"):
        validate_strict({**BASE, **change})


def test_unknown_resource_type() -> None:
    with pytest.raises(DecodeError, match="'Nonsense' is not a FHIR R4 resource type"):
        validate_strict({"resourceType": "Nonsense", "id": "1"})


async def test_strict_search_sends_structurally_broken_resources_to_the_dlq() -> None:
    import copy

    from inlet.connectors.fhir.search import FhirSearchConnector, FhirSearchSettings
    from inlet.connectors.fhir.synth import generate_observations
    from inlet.core.connector import Batch, IntegrationContext
    from inlet.core.envelope import Enveloper
    from inlet.core.pipeline import process_batch

    resources = generate_observations(20, seed=3)
    broken = copy.deepcopy(resources[4])
    broken["note"] = [{"text": 5}]  # elements the mapper does not read: the default lets them through,
    broken["unknownElement"] = True  # the full R4 model refuses them
    records = [*resources, broken]
    for strict, dlq in ((False, 0), (True, 1)):
        settings = FhirSearchSettings.model_validate(
            {"http": {"base_url": "http://127.0.0.1:9/fhir"}, "strict": strict}
        )
        connector = FhirSearchConnector(IntegrationContext("acme", "obs"), settings)
        events, counts = process_batch(connector, Enveloper("acme", "obs"), Batch(records, {}))
        assert counts.dlq.total() == dlq
        assert counts.dlq.get("decode", 0) == dlq  # strict refuses it before mapping, naming the element path
    # The DLQ record names its source although the record failed before its identity was taken.
    [dlq_record] = [e for e in events if e.topic.startswith("inlet.dlq.")]
    assert dict(dlq_record.headers)["dlq_source_key"] == f"Observation/{broken['id']}".encode()


def test_strict_bulk_refuses_a_structurally_broken_line() -> None:
    import orjson

    from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
    from inlet.connectors.fhir.ndjson import NdjsonFile, NdjsonLine
    from inlet.core.connector import IntegrationContext

    def line(doc: Mapping[str, object]) -> NdjsonLine:
        out = NdjsonLine(orjson.dumps(doc))
        out.file, out.line, out.problem, out.unterminated = (
            NdjsonFile(0, "http://x/f.ndjson", "Observation", "output"),
            1,
            None,
            False,
        )
        return out

    broken = {**BASE, "bogusElement": 1}
    for strict in (False, True):
        settings = FhirBulkSettings.model_validate({"http": {"base_url": "http://127.0.0.1:9/fhir"}, "strict": strict})
        connector = FhirBulkExportConnector(IntegrationContext("acme", "bulk"), settings)
        assert connector.decode(line(BASE))["id"] == "o1"
        if strict:
            with pytest.raises(DecodeError, match="bogusElement") as info:
                connector.decode(line(broken))
            assert info.value.source_key == "Observation/o1"  # what the pipeline puts in dlq_source_key
        else:
            assert connector.decode(line(broken))["bogusElement"] == 1
